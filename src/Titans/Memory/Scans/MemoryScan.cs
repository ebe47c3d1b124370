using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>The ways a memory call can be computed; all compute the same function (tests pin them together).</summary>
public enum ScanKind
{
    /// <summary><see cref="SequentialMemoryScan"/>: token by token, the obviously-correct reference.</summary>
    Sequential,
    /// <summary><see cref="ChunkedMemoryScan"/>: the dual form per chunk, plain autograd when training.</summary>
    Chunked,
    /// <summary><see cref="RecomputedMemoryScan"/>: the chunked scan in groups of chunks, each recomputed in backward.</summary>
    Recomputed,
    /// <summary><see cref="HandWrittenScan"/>: the chunked scan as one autograd node with a hand-written backward.</summary>
    HandWritten,
    /// <summary><see cref="FusedMemoryScan"/>: the chunk chain as one C# kernel call on the CPU, without autograd.</summary>
    Fused,
    /// <summary><see cref="HandWrittenScan"/>'s node computed by the fused C# kernel, forward and backward: training on the CPU.</summary>
    FusedTraining,
}

/// <summary>Which scan computes a memory call, and why (one sentence, for diagnostics and tests).</summary>
/// <param name="GroupChunks">Chunks per group where the scan has groups (recomputed, hand-written); 0 otherwise.</param>
public sealed record ScanChoice(ScanKind Kind, string Reason, int GroupChunks = 0);

/// <summary>
/// The one place that decides which scan runs a memory call (as fla's kernels take one <c>mode</c>): from the
/// configuration, whether the call needs a graph for gradients, and its length. <see cref="Run"/> then runs it.
/// </summary>
public static class MemoryScan
{
    /// <summary>
    /// <list type="number">
    /// <item>Algorithm = Sequential: the token-by-token reference.</item>
    /// <item>No gradient needed (inference, or nothing the call reads requires one): the fused C# kernel where FusedKernel is on
    /// and it covers the call (CPU, float32/float64, scalar forgetting, no fixed norm); else the chunked scan without autograd.</item>
    /// <item>Training with HandWrittenBackward, where it covers the form (scalar forgetting, no fixed norm): the hand-written backward,
    /// computed by the fused C# kernel where FusedKernel is on and the kernel covers the call, else by libtorch calls.</item>
    /// <item>Training with RecomputeGroup G &gt; 0 and more than one group of G chunks: recomputed groups.</item>
    /// <item>Otherwise plain autograd through the chunked scan (one group would keep every chunk's graph anyway).</item>
    /// </list>
    /// </summary>
    public static ScanChoice Choose(NeuralMemoryConfig config, bool needsGraph, long length, DeviceType device = DeviceType.CPU,
        ScalarType dtype = ScalarType.Float32)
    {
        if (config.Algorithm == MemoryAlgorithm.Sequential) return new(ScanKind.Sequential, "Algorithm = Sequential: the token-by-token reference");
        // Why the fused kernel cannot run this call (null: it can), in inference and in training alike.
        string? notFused = !config.FusedKernel ? "FusedKernel is off" : FusedMemoryScan.Unsupported(config, device, dtype);
        if (!needsGraph)
            return notFused is null
                ? new(ScanKind.Fused, "no gradient is needed: the fused C# kernel")
                : new(ScanKind.Chunked, $"no gradient is needed ({notFused}): the chunked scan, without autograd");
        int group = config.RecomputeGroup > 0 ? config.RecomputeGroup : int.MaxValue;
        string? uncovered = config.ChannelwiseForgetting ? "channel-wise forgetting" : config.FixedNorm != FastWeightNorm.None ? "the fixed-norm stabilizer" : null;
        if (config.HandWrittenBackward && uncovered is null)
            return notFused is null
                ? new(ScanKind.FusedTraining, "training: the hand-written backward covers this form, computed by the fused C# kernel", group)
                : new(ScanKind.HandWritten, $"training: the hand-written backward covers this form ({notFused}: libtorch calls)", group);
        string why = uncovered is not null ? $"the hand-written backward does not cover {uncovered}" : "HandWrittenBackward is off";
        if (config.RecomputeGroup > 0 && length > (long)config.RecomputeGroup * config.ChunkSize)
            return new(ScanKind.Recomputed, $"training ({why}): autograd over recomputed groups of {config.RecomputeGroup} chunks", config.RecomputeGroup);
        return new(ScanKind.Chunked, $"training ({why}): plain autograd through the chunked scan (" +
                                     (config.RecomputeGroup == 0 ? "RecomputeGroup = 0)" : "the call fits one recomputed group)"));
    }

    /// <summary>Runs the chosen scan over one memory call.</summary>
    public static MemoryScanResult Run(ScanChoice choice, MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights memory, int chunkSize, MemoryStabilizers stabilizers) => choice.Kind switch
    {
        ScanKind.Sequential => SequentialMemoryScan.Scan(mlp, queries, keys, values, gates, memory, chunkSize, stabilizers),
        ScanKind.Chunked => ChunkedMemoryScan.Scan(mlp, queries, keys, values, gates, memory, chunkSize, stabilizers),
        ScanKind.Recomputed => RecomputedMemoryScan.Scan(mlp, queries, keys, values, gates, memory, chunkSize, choice.GroupChunks, stabilizers),
        ScanKind.HandWritten => HandWrittenScan.Scan(mlp, queries, keys, values, gates, memory, chunkSize, choice.GroupChunks, stabilizers),
        ScanKind.FusedTraining => HandWrittenScan.Scan(mlp, queries, keys, values, gates, memory, chunkSize, choice.GroupChunks, stabilizers, fused: true),
        ScanKind.Fused => FusedMemoryScan.Scan(mlp, queries, keys, values, gates, memory, chunkSize, stabilizers),
        _ => throw new ArgumentOutOfRangeException(nameof(choice), $"unknown scan {choice.Kind}"),
    };

    /// <summary>Whether autograd is on and any tensor a scan reads requires a gradient.</summary>
    public static bool NeedsGraph(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates, MemoryWeights state,
        MemoryStabilizers stabilizers) =>
        is_grad_enabled() && new[] { queries, keys, values }.Concat(gates.Tensors).Concat(state.Tensors)
            .Concat(RecomputedMemoryScan.SharedTensors(mlp, stabilizers)).Any(t => t.requires_grad);
}
