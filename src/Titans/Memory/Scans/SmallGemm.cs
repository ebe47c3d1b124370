using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Titans.Memory.Scans;

/// <summary>
/// C (+)= A·B for the small row-major matrices of one chunk (a few to a few hundred rows and columns), in registers:
/// four rows of C by two vectors of columns accumulate over k, each step one broadcast of A and one fused multiply-add
/// per accumulator. Vector256 where the machine accelerates it (FMA where present), else plain loops; the order of
/// every sum is fixed by the shapes alone.
/// </summary>
internal static class SmallGemm<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Forces the plain loops (the portable path), for tests that pin it to the vector one.</summary>
    internal static bool Portable { get; set; }

    /// <param name="a">[m, k]</param><param name="b">[k, n]</param><param name="c">[m, n]</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]   // optimized from the first call: a short stream never runs tier-0 code
    public static void Multiply(ReadOnlySpan<T> a, int m, int k, ReadOnlySpan<T> b, int n, Span<T> c, bool accumulate)
    {
        if (!accumulate) c[..(m * n)].Clear();
        if (Portable || !Vector256.IsHardwareAccelerated || n < Vector256<T>.Count) { Plain(a, m, k, b, n, c); return; }
        int w = Vector256<T>.Count;
        ref T ar = ref MemoryMarshal.GetReference(a);
        ref T br = ref MemoryMarshal.GetReference(b);
        ref T cr = ref MemoryMarshal.GetReference(c);
        int row = 0;
        for (; row + 4 <= m; row += 4)
        {
            int col = 0;
            for (; col + 2 * w <= n; col += 2 * w)
            {
                nuint c0 = (nuint)(row * n + col), c1 = c0 + (nuint)n, c2 = c1 + (nuint)n, c3 = c2 + (nuint)n, wv = (nuint)w;
                Vector256<T> x00 = Vector256.LoadUnsafe(ref cr, c0), x01 = Vector256.LoadUnsafe(ref cr, c0 + wv);
                Vector256<T> x10 = Vector256.LoadUnsafe(ref cr, c1), x11 = Vector256.LoadUnsafe(ref cr, c1 + wv);
                Vector256<T> x20 = Vector256.LoadUnsafe(ref cr, c2), x21 = Vector256.LoadUnsafe(ref cr, c2 + wv);
                Vector256<T> x30 = Vector256.LoadUnsafe(ref cr, c3), x31 = Vector256.LoadUnsafe(ref cr, c3 + wv);
                for (int p = 0; p < k; p++)
                {
                    nuint bp = (nuint)(p * n + col);
                    Vector256<T> b0 = Vector256.LoadUnsafe(ref br, bp), b1 = Vector256.LoadUnsafe(ref br, bp + wv);
                    Vector256<T> a0 = Vector256.Create(Unsafe.Add(ref ar, row * k + p)), a1 = Vector256.Create(Unsafe.Add(ref ar, (row + 1) * k + p));
                    Vector256<T> a2 = Vector256.Create(Unsafe.Add(ref ar, (row + 2) * k + p)), a3 = Vector256.Create(Unsafe.Add(ref ar, (row + 3) * k + p));
                    x00 = MulAdd(a0, b0, x00); x01 = MulAdd(a0, b1, x01);
                    x10 = MulAdd(a1, b0, x10); x11 = MulAdd(a1, b1, x11);
                    x20 = MulAdd(a2, b0, x20); x21 = MulAdd(a2, b1, x21);
                    x30 = MulAdd(a3, b0, x30); x31 = MulAdd(a3, b1, x31);
                }
                x00.StoreUnsafe(ref cr, c0); x01.StoreUnsafe(ref cr, c0 + wv);
                x10.StoreUnsafe(ref cr, c1); x11.StoreUnsafe(ref cr, c1 + wv);
                x20.StoreUnsafe(ref cr, c2); x21.StoreUnsafe(ref cr, c2 + wv);
                x30.StoreUnsafe(ref cr, c3); x31.StoreUnsafe(ref cr, c3 + wv);
            }
            for (; col + w <= n; col += w)
                for (int r = row; r < row + 4; r++) OneVector(ref ar, ref br, ref cr, r, col, k, n);
            for (; col < n; col++)
                for (int r = row; r < row + 4; r++) OneElement(a, b, c, r, col, k, n);
        }
        for (; row < m; row++)
        {
            int col = 0;
            for (; col + w <= n; col += w) OneVector(ref ar, ref br, ref cr, row, col, k, n);
            for (; col < n; col++) OneElement(a, b, c, row, col, k, n);
        }
    }

    static void OneVector(ref T ar, ref T br, ref T cr, int row, int col, int k, int n)
    {
        nuint at = (nuint)(row * n + col);
        Vector256<T> x = Vector256.LoadUnsafe(ref cr, at);
        for (int p = 0; p < k; p++)
            x = MulAdd(Vector256.Create(Unsafe.Add(ref ar, row * k + p)), Vector256.LoadUnsafe(ref br, (nuint)(p * n + col)), x);
        x.StoreUnsafe(ref cr, at);
    }

    static void OneElement(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> c, int row, int col, int k, int n)
    {
        T x = c[row * n + col];
        for (int p = 0; p < k; p++) x += a[row * k + p] * b[p * n + col];
        c[row * n + col] = x;
    }

    static void Plain(ReadOnlySpan<T> a, int m, int k, ReadOnlySpan<T> b, int n, Span<T> c)
    {
        for (int row = 0; row < m; row++)
            for (int col = 0; col < n; col++) OneElement(a, b, c, row, col, k, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<T> MulAdd(Vector256<T> a, Vector256<T> b, Vector256<T> c)
    {
        if (Fma.IsSupported)
        {
            if (typeof(T) == typeof(float)) return Fma.MultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
            if (typeof(T) == typeof(double)) return Fma.MultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        }
        return a * b + c;
    }

    /// <summary>Writes the transpose of <paramref name="source"/> ([rows, cols]) into <paramref name="target"/> ([cols, rows]).</summary>
    public static void Transpose(ReadOnlySpan<T> source, int rows, int cols, Span<T> target)
    {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) target[c * rows + r] = source[r * cols + c];
    }
}
