using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Titans.Memory.Scans;

/// <summary>
/// The kernel's float32 GELU, z Φ(z), and its first and second derivatives, Φ(z) + z φ(z) and φ(z)(2 − z²), each in one pass over the span with every step in
/// Vector256 registers. Φ(z) = ½ erfc(−z/√2) from the Chebyshev fit of Numerical Recipes (erfcc: erfc(|u|) = t·exp(−u² +
/// a polynomial in t), t = 1/(1 + |u|/2), fractional error below 1.2·10⁻⁷ everywhere, float32's own precision) and
/// erfc(u) = 2 − erfc(|u|) for u &lt; 0; exp is Cephes' expf (range reduction by ln 2, a degree-5 polynomial, about one
/// unit in the last place). Written as passes of separate element-wise loops (TensorPrimitives' exp among them) the
/// same function cost about a quarter of a `tiny` LMM's streaming time: ten passes over memory and an exp computed
/// through float64. The last partial vector is computed as a whole vector padded with zeros, so every element takes the
/// same arithmetic wherever it sits.
/// </summary>
internal static class Float32Gelu
{
    /// <summary>a = z Φ(z).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Apply(ReadOnlySpan<float> z, Span<float> a) => Map<Value>(z, a);

    /// <summary>g ⊙= Φ(z) + z φ(z), the GELU's derivative at z.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplyByDerivative(ReadOnlySpan<float> z, Span<float> g) => Map<Derivative>(z, g);

    /// <summary>g ⊙= φ(z)(2 − z²), the GELU's second derivative at z.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplySecondDerivative(ReadOnlySpan<float> z, Span<float> g) => Map<SecondDerivative>(z, g);

    interface IPass
    {
        /// <summary>The pass's result at z, given the target's current values.</summary>
        static abstract Vector256<float> Apply(Vector256<float> z, Vector256<float> target);
    }

    readonly struct Value : IPass
    {
        public static Vector256<float> Apply(Vector256<float> z, Vector256<float> target) => z * Cdf(z);
    }

    readonly struct Derivative : IPass
    {
        public static Vector256<float> Apply(Vector256<float> z, Vector256<float> target) => target * (Cdf(z) + z * Pdf(z));
    }

    readonly struct SecondDerivative : IPass
    {
        public static Vector256<float> Apply(Vector256<float> z, Vector256<float> target) => target * (Pdf(z) * (Vector256.Create(2f) - z * z));
    }

    /// <summary>φ(z) = exp(−z²/2 − ln √(2π)).</summary>
    static Vector256<float> Pdf(Vector256<float> z) => Exp(z * z * Vector256.Create(-0.5f) - Vector256.Create(0.918938533204672742f));

    static void Map<TPass>(ReadOnlySpan<float> z, Span<float> target) where TPass : IPass
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

    /// <summary>The fit's coefficients after the leading 0.17087277, innermost first (Horner); the last is the exponent's constant.</summary>
    static readonly float[] ErfcFit = { -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f };

    /// <summary>Φ(z) = ½ erfc(−z/√2).</summary>
    static Vector256<float> Cdf(Vector256<float> z)
    {
        Vector256<float> u = z * Vector256.Create(-0.70710678118654752f), magnitude = Vector256.Abs(u);
        Vector256<float> t = Vector256<float>.One / (Vector256<float>.One + magnitude * Vector256.Create(0.5f));
        Vector256<float> poly = Vector256.Create(0.17087277f);
        foreach (float c in ErfcFit) poly = poly * t + Vector256.Create(c);
        Vector256<float> tail = t * Exp(poly - magnitude * magnitude);                          // erfc(|u|)
        Vector256<float> erfc = Vector256.ConditionalSelect(Vector256.LessThan(u, Vector256<float>.Zero), Vector256.Create(2f) - tail, tail);
        return erfc * Vector256.Create(0.5f);
    }

    /// <summary>
    /// e^x for x ≤ 88 (Cephes expf): x = n ln 2 + r with |r| ≤ ½ ln 2, e^r = 1 + r + r² P(r), scaled by 2ⁿ through the
    /// exponent bits. Arguments below −87 give e^−87 (≈ 1.6·10⁻³⁸) instead of values closer to 0: the fit's and φ's tails
    /// are far below float32's resolution of the sums they enter there.
    /// </summary>
    internal static Vector256<float> Exp(Vector256<float> x)
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
