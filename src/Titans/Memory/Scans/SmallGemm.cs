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
        if (a.Length < m * k || b.Length < k * n || c.Length < m * n)
            throw new ArgumentException($"[{m}, {k}]·[{k}, {n}] needs {m * k}, {k * n} and {m * n} elements, got {a.Length}, {b.Length} and {c.Length}");
        if (Portable || !Vector256.IsHardwareAccelerated || n < Vector256<T>.Count) { Plain(a, m, k, b, n, c, accumulate); return; }
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
                // Accumulators start from C, or from zero where C is overwritten (no pass to clear it first).
                Vector256<T> x00 = Vector256<T>.Zero, x01 = x00, x10 = x00, x11 = x00, x20 = x00, x21 = x00, x30 = x00, x31 = x00;
                if (accumulate)
                {
                    (x00, x01) = (Vector256.LoadUnsafe(ref cr, c0), Vector256.LoadUnsafe(ref cr, c0 + wv));
                    (x10, x11) = (Vector256.LoadUnsafe(ref cr, c1), Vector256.LoadUnsafe(ref cr, c1 + wv));
                    (x20, x21) = (Vector256.LoadUnsafe(ref cr, c2), Vector256.LoadUnsafe(ref cr, c2 + wv));
                    (x30, x31) = (Vector256.LoadUnsafe(ref cr, c3), Vector256.LoadUnsafe(ref cr, c3 + wv));
                }
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
                for (int r = row; r < row + 4; r++) OneVector(ref ar, ref br, ref cr, r, col, k, n, accumulate);
            for (; col < n; col++)
                for (int r = row; r < row + 4; r++) OneElement(a, b, c, r, col, k, n, accumulate);
        }
        for (; row < m; row++)
        {
            int col = 0;
            for (; col + w <= n; col += w) OneVector(ref ar, ref br, ref cr, row, col, k, n, accumulate);
            for (; col < n; col++) OneElement(a, b, c, row, col, k, n, accumulate);
        }
    }

    /// <summary>C (+)= A·Bᵀ with B stored as [n, k] (a matrix kept transposed, used as it is): each element a dot product
    /// over k, four rows of A by two of B at a time, vector partial sums reduced lane by lane in a fixed order.</summary>
    /// <param name="a">[m, k]</param><param name="b">[n, k]</param><param name="c">[m, n]</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MultiplyTransposed(ReadOnlySpan<T> a, int m, int k, ReadOnlySpan<T> b, int n, Span<T> c, bool accumulate)
    {
        if (a.Length < m * k || b.Length < n * k || c.Length < m * n)
            throw new ArgumentException($"[{m}, {k}]·[{n}, {k}]ᵀ needs {m * k}, {n * k} and {m * n} elements, got {a.Length}, {b.Length} and {c.Length}");
        int w = Vector256<T>.Count;
        bool vector = !Portable && Vector256.IsHardwareAccelerated && k >= w;
        ref T ar = ref MemoryMarshal.GetReference(a);
        ref T br = ref MemoryMarshal.GetReference(b);
        ref T cr = ref MemoryMarshal.GetReference(c);
        int full = vector ? k / w * w : 0;
        int row = 0;
        if (vector)
            for (; row + 4 <= m; row += 4)
            {
                int col = 0;
                for (; col + 2 <= n; col += 2)
                {
                    Vector256<T> x00 = Vector256<T>.Zero, x01 = x00, x10 = x00, x11 = x00, x20 = x00, x21 = x00, x30 = x00, x31 = x00;
                    nuint a0 = (nuint)(row * k), a1 = a0 + (nuint)k, a2 = a1 + (nuint)k, a3 = a2 + (nuint)k;
                    nuint b0 = (nuint)(col * k), b1 = b0 + (nuint)k;
                    for (int p = 0; p < full; p += w)
                    {
                        nuint at = (nuint)p;
                        Vector256<T> v0 = Vector256.LoadUnsafe(ref br, b0 + at), v1 = Vector256.LoadUnsafe(ref br, b1 + at);
                        Vector256<T> u0 = Vector256.LoadUnsafe(ref ar, a0 + at), u1 = Vector256.LoadUnsafe(ref ar, a1 + at);
                        Vector256<T> u2 = Vector256.LoadUnsafe(ref ar, a2 + at), u3 = Vector256.LoadUnsafe(ref ar, a3 + at);
                        x00 = MulAdd(u0, v0, x00); x01 = MulAdd(u0, v1, x01);
                        x10 = MulAdd(u1, v0, x10); x11 = MulAdd(u1, v1, x11);
                        x20 = MulAdd(u2, v0, x20); x21 = MulAdd(u2, v1, x21);
                        x30 = MulAdd(u3, v0, x30); x31 = MulAdd(u3, v1, x31);
                    }
                    Finish(ref ar, ref br, ref cr, row, col, k, n, full, x00, accumulate); Finish(ref ar, ref br, ref cr, row, col + 1, k, n, full, x01, accumulate);
                    Finish(ref ar, ref br, ref cr, row + 1, col, k, n, full, x10, accumulate); Finish(ref ar, ref br, ref cr, row + 1, col + 1, k, n, full, x11, accumulate);
                    Finish(ref ar, ref br, ref cr, row + 2, col, k, n, full, x20, accumulate); Finish(ref ar, ref br, ref cr, row + 2, col + 1, k, n, full, x21, accumulate);
                    Finish(ref ar, ref br, ref cr, row + 3, col, k, n, full, x30, accumulate); Finish(ref ar, ref br, ref cr, row + 3, col + 1, k, n, full, x31, accumulate);
                }
                for (; col < n; col++)
                    for (int r = row; r < row + 4; r++) OneDot(ref ar, ref br, ref cr, r, col, k, n, full, accumulate);
            }
        for (; row < m; row++)
            for (int col = 0; col < n; col++) OneDot(ref ar, ref br, ref cr, row, col, k, n, full, accumulate);
    }

    /// <summary>One element of A·Bᵀ: vector partial sums over the first <paramref name="full"/> of k, then the rest.</summary>
    static void OneDot(ref T ar, ref T br, ref T cr, int row, int col, int k, int n, int full, bool accumulate)
    {
        Vector256<T> x = Vector256<T>.Zero;
        for (int p = 0; p < full; p += Vector256<T>.Count)
            x = MulAdd(Vector256.LoadUnsafe(ref ar, (nuint)(row * k + p)), Vector256.LoadUnsafe(ref br, (nuint)(col * k + p)), x);
        Finish(ref ar, ref br, ref cr, row, col, k, n, full, x, accumulate);
    }

    /// <summary>C[row, col] (+)= the lanes of <paramref name="x"/> in order, then the products past <paramref name="full"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Finish(ref T ar, ref T br, ref T cr, int row, int col, int k, int n, int full, Vector256<T> x, bool accumulate)
    {
        T sum = T.Zero;
        if (full > 0)
            for (int lane = 0; lane < Vector256<T>.Count; lane++) sum += x.GetElement(lane);
        for (int p = full; p < k; p++) sum += Unsafe.Add(ref ar, row * k + p) * Unsafe.Add(ref br, col * k + p);
        ref T target = ref Unsafe.Add(ref cr, row * n + col);
        target = accumulate ? target + sum : sum;
    }

    static void OneVector(ref T ar, ref T br, ref T cr, int row, int col, int k, int n, bool accumulate)
    {
        nuint at = (nuint)(row * n + col);
        Vector256<T> x = accumulate ? Vector256.LoadUnsafe(ref cr, at) : Vector256<T>.Zero;
        for (int p = 0; p < k; p++)
            x = MulAdd(Vector256.Create(Unsafe.Add(ref ar, row * k + p)), Vector256.LoadUnsafe(ref br, (nuint)(p * n + col)), x);
        x.StoreUnsafe(ref cr, at);
    }

    static void OneElement(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> c, int row, int col, int k, int n, bool accumulate)
    {
        T x = accumulate ? c[row * n + col] : T.Zero;
        for (int p = 0; p < k; p++) x += a[row * k + p] * b[p * n + col];
        c[row * n + col] = x;
    }

    static void Plain(ReadOnlySpan<T> a, int m, int k, ReadOnlySpan<T> b, int n, Span<T> c, bool accumulate)
    {
        for (int row = 0; row < m; row++)
            for (int col = 0; col < n; col++) OneElement(a, b, c, row, col, k, n, accumulate);
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

    /// <summary>Writes the transpose of <paramref name="source"/> ([rows, cols]) into <paramref name="target"/> ([cols, rows]),
    /// in tiles of 16 × 16 so that the strided side stays in cache (row by row, a 256 × 64 state took 8× longer).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Transpose(ReadOnlySpan<T> source, int rows, int cols, Span<T> target)
    {
        if (source.Length < rows * cols || target.Length < rows * cols)
            throw new ArgumentException($"a [{rows}, {cols}] transpose needs {rows * cols} elements on both sides");
        ref T src = ref MemoryMarshal.GetReference(source);
        ref T dst = ref MemoryMarshal.GetReference(target);
        const int Tile = 16;
        for (int r0 = 0; r0 < rows; r0 += Tile)
        {
            int r1 = Math.Min(r0 + Tile, rows);
            for (int c0 = 0; c0 < cols; c0 += Tile)
            {
                int c1 = Math.Min(c0 + Tile, cols);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++) Unsafe.Add(ref dst, c * rows + r) = Unsafe.Add(ref src, r * cols + c);
            }
        }
    }
}
