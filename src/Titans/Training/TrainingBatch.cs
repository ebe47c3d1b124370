using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>
/// A batch of sequences: input tokens [B, T], next-token targets [B, T], and which positions the loss counts
/// (<see cref="Scored"/>, [B, T] bool; null for all of them, as in language modelling). <see cref="Prefix"/> ([B, P],
/// or null) is what comes before the inputs in each stream: the trainer runs it through the model without gradient
/// and starts the inputs from the state it leaves.
/// </summary>
public sealed record TrainingBatch(Tensor Tokens, Tensor Targets, Tensor? Scored = null, Tensor? Prefix = null) : IDisposable
{
    /// <summary>Mean cross-entropy (nats) over the scored positions of <paramref name="logits"/> [B, T, V].</summary>
    public Tensor Loss(Tensor logits)
    {
        var reduction = Scored is null ? nn.Reduction.Mean : nn.Reduction.None;
        Tensor loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), Targets.reshape(-1), reduction: reduction);
        return Scored is null ? loss : loss.masked_select(Scored.reshape(-1)).mean();
    }

    /// <summary>This batch on <paramref name="device"/>: itself when it is there already, else a copy (and this one is disposed).</summary>
    public TrainingBatch To(Device device)
    {
        if (Tokens.device.type == device.type && Tokens.device.index == device.index) return this;
        var moved = new TrainingBatch(Tokens.to(device), Targets.to(device), Scored?.to(device), Prefix?.to(device));
        Dispose();
        return moved;
    }

    public void Dispose()
    {
        Tokens.Dispose();
        Targets.Dispose();
        Scored?.Dispose();
        Prefix?.Dispose();
    }
}

/// <summary>
/// Where a trainer's batches come from. A batch must be a function of (seed, step, micro) alone, so that a resumed run
/// draws exactly the batches the uninterrupted run would have.
/// </summary>
public interface IBatchSource
{
    /// <summary>
    /// <paramref name="batchSize"/> sequences of <paramref name="sequenceLength"/> inputs, each after
    /// <paramref name="prefixLength"/> tokens of the same stream (0: none, and <see cref="TrainingBatch.Prefix"/> is null).
    /// </summary>
    TrainingBatch Batch(long seed, int step, int micro, int batchSize, int sequenceLength, int prefixLength = 0);
}

/// <summary>Stable 32-bit seeds for batches (System.HashCode is randomized per process, so not that).</summary>
public static class BatchSeed
{
    public static int Of(long seed, int step, int micro)
    {
        ulong x = (ulong)seed * 0x9E3779B97F4A7C15UL ^ (ulong)step * 0xBF58476D1CE4E5B9UL ^ (ulong)micro * 0x94D049BB133111EBUL;
        x ^= x >> 31; x *= 0xD6E8FEB86659FD39UL; x ^= x >> 28;
        return (int)(x & 0x7FFFFFFF);
    }

    /// <summary>
    /// The prefix length of a micro-batch, uniform in [<paramref name="minimum"/>, <paramref name="maximum"/>], drawn
    /// apart from its content (with minimum 0, the same draw as before the minimum existed).
    /// </summary>
    public static int PrefixLength(long seed, int step, int micro, int maximum, int minimum = 0) =>
        maximum == 0 ? 0 : minimum + new Random(Of(seed, step, micro) ^ 0x2545F491).Next(maximum - minimum + 1);
}
