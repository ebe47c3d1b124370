using static TorchSharp.torch;

namespace Titans.Tasks;

/// <summary>A batch of a sequence task: input tokens [B, T], next-token targets [B, T], and which positions are scored.</summary>
public sealed record TaskBatch(Tensor Tokens, Tensor Targets, Tensor Scored) : IDisposable
{
    public void Dispose()
    {
        Tokens.Dispose();
        Targets.Dispose();
        Scored.Dispose();
    }
}
