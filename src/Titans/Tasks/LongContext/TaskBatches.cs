using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tasks.LongContext;

/// <summary>
/// Training batches of a long-context task: fresh examples from the haystack's training part at random depths, a
/// function of (seed, step, micro) so runs resume bit for bit. Only the answer tokens are scored.
/// </summary>
public sealed class TaskBatches(ILongContextTask task) : IBatchSource
{
    public ILongContextTask Task => task;

    public TrainingBatch Batch(long seed, int step, int micro, int batchSize, int sequenceLength)
    {
        var random = new Random(BatchSeed.Of(seed, step, micro));
        var examples = Enumerable.Range(0, batchSize).Select(_ => task.Generate(sequenceLength + 1, random.NextDouble(), random, evaluation: false)).ToList();
        return Tensors(examples);
    }

    /// <summary>
    /// Examples of one length as a batch: inputs [B, L-1], targets [B, L-1], and the positions that predict an answer token.
    /// </summary>
    public static TrainingBatch Tensors(IReadOnlyList<TaskExample> examples)
    {
        int length = examples[0].Length;
        if (examples.Any(e => e.Length != length)) throw new ArgumentException("The examples of a batch must all have the same length.");
        var tokens = new long[examples.Count * length];
        var scored = new bool[examples.Count * (length - 1)];
        for (int b = 0; b < examples.Count; b++)
        {
            examples[b].Tokens.CopyTo(tokens, b * length);
            foreach (int position in examples[b].AnswerInputs) scored[b * (length - 1) + position] = true;
        }
        using var all = tensor(tokens, new long[] { examples.Count, length });
        return new TrainingBatch(all.narrow(1, 0, length - 1).contiguous(), all.narrow(1, 1, length - 1).contiguous(),
            tensor(scored, new long[] { examples.Count, length - 1 }));
    }
}
