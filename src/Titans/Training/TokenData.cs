using System.Runtime.InteropServices;
using System.Security.Cryptography;
using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>A tokenized corpus split into a training part and a held-out validation tail.</summary>
public sealed class TokenData : IBatchSource
{
    public long[] Train { get; }
    public long[] Validation { get; }

    /// <param name="streamPrefix">the longest prefix training will ask for (<see cref="TrainingConfig.StreamPrefix"/>); the training part must hold it.</param>
    public TokenData(long[] tokens, double validationFraction, int sequenceLength, int streamPrefix = 0)
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
        RequireRoom(streamPrefix, sequenceLength);
    }

    /// <summary>A corpus whose validation part is given apart (a held-out genome), not cut from its tail.</summary>
    public TokenData(long[] train, long[] validation, int sequenceLength, int streamPrefix = 0)
    {
        if (train.Length < sequenceLength + 1 || validation.Length < sequenceLength + 1)
            throw new ArgumentException(
                $"{train.Length:N0} training and {validation.Length:N0} validation tokens, but a sequence length of {sequenceLength:N0} " +
                $"needs at least {sequenceLength + 1:N0} in each. Use a shorter sequence length or more data.");
        Train = train;
        Validation = validation;
        RequireRoom(streamPrefix, sequenceLength);
    }

    /// <summary>The SHA-256 (hex) of the training then the validation tokens: a resumed run checks it gets the data it trained on.</summary>
    public string Checksum()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(MemoryMarshal.AsBytes(Train.AsSpan()));
        hash.AppendData(MemoryMarshal.AsBytes(Validation.AsSpan()));
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    void RequireRoom(int prefixLength, int sequenceLength)
    {
        long window = (long)prefixLength + sequenceLength + 1;
        if (window > Train.Length)
            throw new ArgumentException($"A {prefixLength:N0}-token stream prefix and a {sequenceLength:N0}-token sequence need {window:N0} " +
                                        $"training tokens, but the corpus has {Train.Length:N0}. Use a shorter prefix or a larger corpus.");
    }

    /// <summary>
    /// Micro-batch <paramref name="micro"/> of optimizer step <paramref name="step"/>: random windows of the training
    /// part, [B, T] inputs and the [B, T] next tokens, with the <paramref name="prefixLength"/> tokens before each window
    /// as the prefix. The windows are a function of (seed, step, micro) alone, so a resumed run draws exactly the
    /// batches the uninterrupted run would have.
    /// </summary>
    public TrainingBatch Batch(long seed, int step, int micro, int batchSize, int sequenceLength, int prefixLength = 0)
    {
        RequireRoom(prefixLength, sequenceLength);
        int window = prefixLength + sequenceLength + 1;
        var random = new Random(BatchSeed.Of(seed, step, micro));
        long span = Train.Length - window + 1;                      // window starts in [0, span)
        var windows = new long[batchSize * window];
        for (int b = 0; b < batchSize; b++)
            Array.Copy(Train, random.NextInt64(span), windows, b * window, window);
        using var all = tensor(windows, new long[] { batchSize, window });
        return new TrainingBatch(all.narrow(1, prefixLength, sequenceLength).contiguous(), all.narrow(1, prefixLength + 1, sequenceLength).contiguous(),
            Prefix: prefixLength > 0 ? all.narrow(1, 0, prefixLength).contiguous() : null);
    }
}
