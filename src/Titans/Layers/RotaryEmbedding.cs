using static TorchSharp.torch;

namespace Titans.Layers;

/// <summary>
/// Rotary position embedding (RoFormer; Llama's rotate-half layout) for [B, H, T, d_h] tensors at absolute positions
/// offset..offset+T−1. Angles are computed in float64, so positions in the millions (long streams) stay exact.
/// </summary>
public static class RotaryEmbedding
{
    public static Tensor Apply(Tensor x, long offset, double theta = 10000)
    {
        long length = x.shape[^2], dim = x.shape[^1];
        if (dim % 2 != 0) throw new ArgumentException($"Rotary embedding needs an even head width, got {dim}.", nameof(x));
        long half = dim / 2;
        using var scope = NewDisposeScope();
        Tensor inverseFrequency = pow(theta, -arange(0, half, dtype: ScalarType.Float64, device: x.device) * (2.0 / dim));
        Tensor positions = arange(offset, offset + length, dtype: ScalarType.Float64, device: x.device);
        Tensor angles = outer(positions, inverseFrequency);                     // [T, d_h/2]
        Tensor cos = cat(new[] { angles.cos(), angles.cos() }, -1).to(x.dtype); // [T, d_h]
        Tensor sin = cat(new[] { angles.sin(), angles.sin() }, -1).to(x.dtype);
        Tensor rotated = cat(new[] { -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }
}
