namespace Titans.Tasks.LongContext;

/// <summary>A generator of long-context examples of one kind, seeded by the <see cref="Random"/> it is given.</summary>
public interface ILongContextTask
{
    /// <summary>The name the command line and checkpoints use: passkey, number, uuid, qa1 … qa5, mqar.</summary>
    string Name { get; }
    string Description { get; }
    /// <summary>Whether the needle depth is a parameter (S-NIAH, MQAR); BABILong-style tasks scatter their facts instead.</summary>
    bool HasDepth { get; }
    /// <summary>Tokens the needles, question and answers take: the shortest example this task can make.</summary>
    int MinimumLength { get; }
    /// <summary>
    /// An example of exactly <paramref name="length"/> tokens with its needle (or first fact) at
    /// <paramref name="depth"/> ∈ [0, 1] of the filler, drawn from the training or the evaluation part of the haystack.
    /// </summary>
    TaskExample Generate(int length, double depth, Random random, bool evaluation);
}
