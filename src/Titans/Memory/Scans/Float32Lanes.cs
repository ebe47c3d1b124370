using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Titans.Memory.Scans;

/// <summary>
/// One pass over a float32 span with every step in Vector256 registers, for the kernel's activations (<see
/// cref="Float32Gelu"/>, the memory's SiLU in <see cref="FusedProjection"/>), and the exp they share. The last partial
/// vector is computed as a whole vector padded with zeros, so every element takes the same arithmetic wherever it sits.
/// </summary>
internal static class Float32Lanes
{
    /// <summary>An element-wise pass (a struct, so each compiles to its own loop).</summary>
    internal interface IPass
    {
        /// <summary>The pass's result at z, given the target's current values.</summary>
        static abstract Vector256<float> Apply(Vector256<float> z, Vector256<float> target);
    }

    /// <summary>target_i = pass(z_i, target_i); <paramref name="z"/> may be <paramref name="target"/> itself.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Map<TPass>(ReadOnlySpan<float> z, Span<float> target) where TPass : IPass
    {
        int n = z.Length, i = 0, w = Vector256<float>.Count;
        ref float zr = ref MemoryMarshal.GetReference(z);
        ref float tr = ref MemoryMarshal.GetReference(target[..n]);
        for (; i + w <= n; i += w)
            TPass.Apply(Vector256.LoadUnsafe(ref zr, (nuint)i), Vector256.LoadUnsafe(ref tr, (nuint)i)).StoreUnsafe(ref tr, (nuint)i);
        if (i == n) return;
        Span<float> lastZ = stackalloc float[w], lastT = stackalloc float[w];
        lastZ.Clear();
        lastT.Clear();
        z[i..].CopyTo(lastZ);
        target[i..n].CopyTo(lastT);
        TPass.Apply(Vector256.Create<float>(lastZ), Vector256.Create<float>(lastT)).CopyTo(lastT);
        lastT[..(n - i)].CopyTo(target[i..n]);
    }

    /// <summary>
    /// e^x for x ≤ 88 (Cephes expf): x = n ln 2 + r with |r| ≤ ½ ln 2, e^r = 1 + r + r² P(r), scaled by 2ⁿ through the
    /// exponent bits. Arguments below −87 give e^−87 (≈ 1.6·10⁻³⁸) instead of values closer to 0, far below float32's
    /// resolution of the sums its callers form there (the GELU's tails, SiLU's 1 + e^−z).
    /// </summary>
    public static Vector256<float> Exp(Vector256<float> x)
    {
        x = Vector256.Max(x, Vector256.Create(-87f));
        Vector256<float> n = Vector256.Round(x * Vector256.Create(1.44269504088896341f));
        Vector256<float> r = x - n * Vector256.Create(0.693359375f) - n * Vector256.Create(-2.12194440e-4f);
        Vector256<float> p = Vector256.Create(1.9875691500e-4f);
        p = p * r + Vector256.Create(1.3981999507e-3f);
        p = p * r + Vector256.Create(8.3334519073e-3f);
        p = p * r + Vector256.Create(4.1665795894e-2f);
        p = p * r + Vector256.Create(1.6666665459e-1f);
        p = p * r + Vector256.Create(5.0000001201e-1f);
        Vector256<float> er = p * (r * r) + r + Vector256<float>.One;
        Vector256<int> scale = (Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23;
        return er * scale.AsSingle();
    }
}
