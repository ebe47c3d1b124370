using Titans.Memory.Scans;

namespace Titans.Tests.Memory;

/// <summary>The kernel's one-pass float32 GELU and its two derivatives against float64 values of the same functions (Math.NET's exact erfc).</summary>
public class Float32GeluTests
{
    static double Cdf(double z) => 0.5 * MathNet.Numerics.SpecialFunctions.Erfc(-z / Math.Sqrt(2));
    static double Pdf(double z) => Math.Exp(-0.5 * z * z) / Math.Sqrt(2 * Math.PI);

    /// <summary>−12 to 12 in steps that are not a multiple of anything, the tails, zero, and a length that leaves a partial vector.</summary>
    static float[] Points() =>
        Enumerable.Range(0, 2411).Select(i => (float)(-12 + i * 0.00995))
            .Concat(new[] { 0f, -0f, 1e-30f, -1e-30f, 20f, -20f, 40f, -40f, 1e4f, -1e4f }).ToArray();

    static void AssertClose(double expected, float actual, double scale, string what, float z)
    {
        // float32's resolution of the value (relative), or of the sum it enters (absolute, at the function's scale).
        double tolerance = 4e-7 * Math.Abs(expected) + 1e-7 * scale;
        Assert.True(Math.Abs(actual - expected) <= tolerance, $"{what} at z = {z}: {actual} against {expected}");
    }

    [Fact]
    public void TheGeluIsZTimesTheNormalCdf()
    {
        float[] z = Points(), a = new float[z.Length];
        Float32Gelu.Apply(z, a);
        for (int i = 0; i < z.Length; i++) AssertClose(z[i] * Cdf(z[i]), a[i], Math.Max(1, Math.Abs((double)z[i])), "GELU", z[i]);
    }

    [Fact]
    public void TheDerivativesMultiplyTheTarget()
    {
        float[] z = Points();
        float[] first = z.Select((_, i) => 1f + i % 3).ToArray(), second = (float[])first.Clone();
        Float32Gelu.MultiplyByDerivative(z, first);
        Float32Gelu.MultiplySecondDerivative(z, second);
        for (int i = 0; i < z.Length; i++)
        {
            double g = 1 + i % 3, x = z[i];
            AssertClose(g * (Cdf(x) + x * Pdf(x)), first[i], g, "GELU'", z[i]);
            AssertClose(g * Pdf(x) * (2 - x * x), second[i], g, "GELU''", z[i]);
        }
    }

    [Fact]
    public void NonFiniteInputsStayNonFinite()
    {
        float[] z = { float.NaN, float.PositiveInfinity - float.PositiveInfinity, 1f }, a = new float[3];
        Float32Gelu.Apply(z, a);
        Assert.True(float.IsNaN(a[0]) && float.IsNaN(a[1]));
        float[] g = { 1f, 1f, 1f };
        Float32Gelu.MultiplyByDerivative(z, g);
        Assert.True(float.IsNaN(g[0]) && float.IsNaN(g[1]));
    }
}
