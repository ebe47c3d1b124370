using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>
/// What a scan of the memory over T tokens returns: the retrieved outputs y_t = M_t(q_t), [B, H, T, d_h];
/// the state after the last complete chunk (<see cref="BoundaryTokens"/> tokens in), from which a stream resumes;
/// and the state after all T tokens, where a trailing partial chunk is closed as a shorter mini-batch.
/// </summary>
public sealed record MemoryScanResult(Tensor Outputs, MemoryWeights Boundary, long BoundaryTokens, MemoryWeights Final)
{
    /// <summary>True where the scan itself saw every output and final state finite (the fused kernel, at no cost); null: unknown.</summary>
    public bool? KnownFinite { get; init; }
}
