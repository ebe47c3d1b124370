using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>A tokenized corpus split into a training part and a held-out validation tail.</summary>
public sealed class TokenData : IBatchSource
{
    public long[] Train { get; }
    public long[] Validation { get; }

    public TokenData(long[] tokens, double validationFraction, int sequenceLength)
    {
        long validation = (long)Math.Ceiling(tokens.Length * validationFraction);
        long train = tokens.Length - validation;
        // Both parts need at least one window of sequenceLength inputs plus the target after it.
        if (train < sequenceLength + 1 || validation < sequenceLength + 1)
            throw new ArgumentException(
                $"The corpus has {tokens.Length:N0} tokens: {train:N0} for training and {validation:N0} for validation, but a " +
                $"sequence length of {sequenceLength:N0} needs at least {sequenceLength + 1:N0} in each. Use a shorter sequence length or a larger corpus.");
        Train = tokens[..(int)train];
        Validation = tokens[(int)train..];
    }

    /// <summary>
    /// Micro-batch <paramref name="micro"/> of optimizer step <paramref name="step"/>: random windows of the training
    /// part, [B, T] inputs and the [B, T] next tokens. The windows are a function of (seed, step, micro) alone, so a
    /// resumed run draws exactly the batches the uninterrupted run would have.
    /// </summary>
    public TrainingBatch Batch(long seed, int step, int micro, int batchSize, int sequenceLength)
    {
        var random = new Random(BatchSeed.Of(seed, step, micro));
        long span = Train.Length - sequenceLength;                  // window starts in [0, span)
        var windows = new long[batchSize * (sequenceLength + 1)];
        for (int b = 0; b < batchSize; b++)
            Array.Copy(Train, random.NextInt64(span), windows, b * (sequenceLength + 1), sequenceLength + 1);
        using var all = tensor(windows, new long[] { batchSize, sequenceLength + 1 });
        return new TrainingBatch(all.narrow(1, 0, sequenceLength).contiguous(), all.narrow(1, 1, sequenceLength).contiguous());
    }
}
