using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Titans.Memory.Scans;

/// <summary>
/// The kernel's float32 GELU, z Φ(z), and its first and second derivatives, Φ(z) + z φ(z) and φ(z)(2 − z²), each in one pass over the span with every step in
/// Vector256 registers. Φ(z) = ½ erfc(−z/√2) from the Chebyshev fit of Numerical Recipes (erfcc: erfc(|u|) = t·exp(−u² +
/// a polynomial in t), t = 1/(1 + |u|/2), fractional error below 1.2·10⁻⁷ everywhere, float32's own precision) and
/// erfc(u) = 2 − erfc(|u|) for u &lt; 0; exp is Cephes' expf (range reduction by ln 2, a degree-5 polynomial, about one
/// unit in the last place). Written as passes of separate element-wise loops (TensorPrimitives' exp among them) the
/// same function cost about a quarter of a `tiny` LMM's streaming time: ten passes over memory and an exp computed
/// through float64 (<see cref="Float32Lanes"/> holds the pass and the exp).
/// </summary>
internal static class Float32Gelu
{
    /// <summary>a = z Φ(z).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Apply(ReadOnlySpan<float> z, Span<float> a) => Float32Lanes.Map<Value>(z, a);

    /// <summary>g ⊙= Φ(z) + z φ(z), the GELU's derivative at z.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplyByDerivative(ReadOnlySpan<float> z, Span<float> g) => Float32Lanes.Map<Derivative>(z, g);

    /// <summary>g ⊙= φ(z)(2 − z²), the GELU's second derivative at z.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplySecondDerivative(ReadOnlySpan<float> z, Span<float> g) => Float32Lanes.Map<SecondDerivative>(z, g);

    readonly struct Value : Float32Lanes.IPass
    {
        public static Vector256<float> Apply(Vector256<float> z, Vector256<float> target) => z * Cdf(z);
    }

    readonly struct Derivative : Float32Lanes.IPass
    {
        public static Vector256<float> Apply(Vector256<float> z, Vector256<float> target) => target * (Cdf(z) + z * Pdf(z));
    }

    readonly struct SecondDerivative : Float32Lanes.IPass
    {
        public static Vector256<float> Apply(Vector256<float> z, Vector256<float> target) => target * (Pdf(z) * (Vector256.Create(2f) - z * z));
    }

    /// <summary>φ(z) = exp(−z²/2 − ln √(2π)).</summary>
    static Vector256<float> Pdf(Vector256<float> z) => Float32Lanes.Exp(z * z * Vector256.Create(-0.5f) - Vector256.Create(0.918938533204672742f));

    /// <summary>The fit's coefficients after the leading 0.17087277, innermost first (Horner); the last is the exponent's constant.</summary>
    static readonly float[] ErfcFit = { -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f };

    /// <summary>Φ(z) = ½ erfc(−z/√2).</summary>
    static Vector256<float> Cdf(Vector256<float> z)
    {
        Vector256<float> u = z * Vector256.Create(-0.70710678118654752f), magnitude = Vector256.Abs(u);
        Vector256<float> t = Vector256<float>.One / (Vector256<float>.One + magnitude * Vector256.Create(0.5f));
        Vector256<float> poly = Vector256.Create(0.17087277f);
        foreach (float c in ErfcFit) poly = poly * t + Vector256.Create(c);
        Vector256<float> tail = t * Float32Lanes.Exp(poly - magnitude * magnitude);                          // erfc(|u|)
        Vector256<float> erfc = Vector256.ConditionalSelect(Vector256.LessThan(u, Vector256<float>.Zero), Vector256.Create(2f) - tail, tail);
        return erfc * Vector256.Create(0.5f);
    }
}
