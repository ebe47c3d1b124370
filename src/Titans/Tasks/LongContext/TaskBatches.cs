using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tasks.LongContext;

/// <summary>
/// Training batches of a long-context task: fresh examples from the haystack's training part at random depths, a
/// function of (seed, step, micro) so runs resume bit for bit. Only the answer tokens are scored. With a prefix, each
/// example is that much longer and its first tokens (haystack, and the needle when its depth falls there) become the
/// prefix the trainer streams without gradient, so the model learns to answer from a memory that wrote them.
/// </summary>
public sealed class TaskBatches(ILongContextTask task) : IBatchSource
{
    public ILongContextTask Task => task;

    public TrainingBatch Batch(long seed, int step, int micro, int batchSize, int sequenceLength, int prefixLength = 0)
    {
        var random = new Random(BatchSeed.Of(seed, step, micro));
        var examples = Enumerable.Range(0, batchSize).Select(_ => task.Generate(prefixLength + sequenceLength + 1, random.NextDouble(), random, evaluation: false)).ToList();
        return Tensors(examples, prefixLength);
    }

    /// <summary>
    /// Examples of one length as a batch: their first <paramref name="prefixLength"/> tokens as the prefix, then inputs
    /// [B, L-1-P], targets [B, L-1-P], and the positions that predict an answer token (which must lie after the prefix).
    /// </summary>
    public static TrainingBatch Tensors(IReadOnlyList<TaskExample> examples, int prefixLength = 0)
    {
        int length = examples[0].Length, inputs = length - 1 - prefixLength;
        if (examples.Any(e => e.Length != length)) throw new ArgumentException("The examples of a batch must all have the same length.");
        var tokens = new long[examples.Count * length];
        var scored = new bool[examples.Count * inputs];
        for (int b = 0; b < examples.Count; b++)
        {
            examples[b].Tokens.CopyTo(tokens, b * length);
            foreach (int position in examples[b].AnswerInputs)
            {
                if (position < prefixLength)
                    throw new ArgumentException($"An answer starts inside the {prefixLength}-token prefix; the examples are too short after it.");
                scored[b * inputs + position - prefixLength] = true;
            }
        }
        using var all = tensor(tokens, new long[] { examples.Count, length });
        return new TrainingBatch(all.narrow(1, prefixLength, inputs).contiguous(), all.narrow(1, prefixLength + 1, inputs).contiguous(),
            tensor(scored, new long[] { examples.Count, inputs }),
            prefixLength > 0 ? all.narrow(1, 0, prefixLength).contiguous() : null);
    }
}
