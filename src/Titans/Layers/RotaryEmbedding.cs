using static TorchSharp.torch;

namespace Titans.Layers;

/// <summary>
/// Rotary position embedding (RoFormer; Llama's rotate-half layout) for [B, H, T, d_h] tensors at absolute positions
/// offset..offset+T−1. Angles are computed in float64, so positions in the millions (long streams) stay exact.
/// </summary>
public static class RotaryEmbedding
{
    /// <summary>The base of the angles' frequencies (RoFormer's).</summary>
    public const double DefaultTheta = 10000;

    public static Tensor Apply(Tensor x, long offset, double theta = DefaultTheta)
    {
        long length = x.shape[^2], dim = x.shape[^1];
        if (dim % 2 != 0) throw new ArgumentException($"Rotary embedding needs an even head width, got {dim}.", nameof(x));
        using var scope = NewDisposeScope();
        var (cos, sin) = Tables(offset, length, dim, x.dtype, x.device, theta);
        return Apply(x, cos, sin).MoveToOuterDisposeScope();
    }

    /// <summary>x rotated by given tables (<see cref="Tables"/>, [T, d_h], one row per position of x).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        Tensor rotated = cat(new[] { -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
        return x * cos + rotated * sin;
    }

    /// <summary>cos and sin of the angles at positions offset..offset+length−1, [length, dim] in the input's dtype.</summary>
    internal static (Tensor Cos, Tensor Sin) Tables(long offset, long length, long dim, ScalarType dtype, Device device, double theta)
    {
        long half = dim / 2;
        Tensor inverseFrequency = pow(theta, -arange(0, half, dtype: ScalarType.Float64, device: device) * (2.0 / dim));
        Tensor positions = arange(offset, offset + length, dtype: ScalarType.Float64, device: device);
        Tensor angles = outer(positions, inverseFrequency);                     // [T, d_h/2]
        Tensor cos = cat(new[] { angles.cos(), angles.cos() }, -1).to(dtype);   // [T, d_h]
        Tensor sin = cat(new[] { angles.sin(), angles.sin() }, -1).to(dtype);
        return (cos, sin);
    }
}

/// <summary>
/// An attention layer's last rotary tables, kept while its calls ask for the same positions (MAC attends over the same
/// positions every segment): the same tensors the computation would give, computed once. Not a module buffer, so never
/// in a checkpoint.
/// </summary>
public sealed class RotaryTables : IDisposable
{
    (long Offset, long Length, long Dim, ScalarType Type, string Device, double Theta)? key;
    Tensor? cos, sin;

    public (Tensor Cos, Tensor Sin) For(long offset, long length, long dim, ScalarType dtype, Device device, double theta)
    {
        var wanted = (offset, length, dim, dtype, device.ToString(), theta);
        if (key != wanted || cos is null || sin is null)
        {
            Dispose();
            using var scope = NewDisposeScope();
            var (c, s) = RotaryEmbedding.Tables(offset, length, dim, dtype, device, theta);
            (cos, sin) = (c.DetachFromDisposeScope(), s.DetachFromDisposeScope());
            key = wanted;
        }
        return (cos, sin);
    }

    /// <summary>Frees the tables (autograd keeps its own reference to what a graph saved).</summary>
    public void Dispose()
    {
        cos?.Dispose();
        sin?.Dispose();
        (cos, sin, key) = (null, null, null);
    }
}
