using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>A tokenized corpus split into a training part and a held-out validation tail.</summary>
public sealed class TokenData
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
    public (Tensor Inputs, Tensor Targets) Batch(long seed, int step, int micro, int batchSize, int sequenceLength)
    {
        var random = new Random(HashCode(seed, step, micro));
        long span = Train.Length - sequenceLength;                  // window starts in [0, span)
        var windows = new long[batchSize * (sequenceLength + 1)];
        for (int b = 0; b < batchSize; b++)
            Array.Copy(Train, random.NextInt64(span), windows, b * (sequenceLength + 1), sequenceLength + 1);
        using var all = tensor(windows, new long[] { batchSize, sequenceLength + 1 });
        return (all.narrow(1, 0, sequenceLength).contiguous(), all.narrow(1, 1, sequenceLength).contiguous());
    }

    /// <summary>A stable 32-bit seed (System.HashCode is randomized per process, so not that).</summary>
    static int HashCode(long seed, int step, int micro)
    {
        ulong x = (ulong)seed * 0x9E3779B97F4A7C15UL ^ (ulong)step * 0xBF58476D1CE4E5B9UL ^ (ulong)micro * 0x94D049BB133111EBUL;
        x ^= x >> 31; x *= 0xD6E8FEB86659FD39UL; x ^= x >> 28;
        return (int)(x & 0x7FFFFFFF);
    }
}
