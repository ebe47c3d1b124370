using System.Diagnostics;
using System.Numerics.Tensors;
using Spectre.Console;
using Titans.Cli.Reporting;
using Titans.Memory.Scans;
using TorchSharp;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// The fused kernel's building blocks timed alone on one thread, float32, at the memory's shapes (16-token chunks,
/// per-head width 64, hidden 256): its products against this core's peak, a transpose row by row against tiled, and an
/// element-wise pass through TensorPrimitives against the kernel's own loop. The measurements behind the kernel's design
/// (docs/fast-memory.md); contenders alternate round by round and each figure is a median.
/// </summary>
public static class KernelBenchmark
{
    public static void Run(int rounds, string? output, string command)
    {
        if (rounds < 1) throw new ArgumentException($"--repeats must be at least 1, got {rounds}.");
        var rows = new List<string[]>();
        void Add(string what, string shape, double seconds, string result)
        {
            rows.Add(new[] { what, shape, $"{seconds * 1e6:F2} µs", result });
            AnsiConsole.WriteLine($"{what,-44} {shape,-14} {seconds * 1e6,10:F2} µs  {result}");
        }
        var random = new Random(1);
        float[] Filled(int count) => Enumerable.Range(0, count).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();

        int threads = torch.get_num_threads();
        torch.set_num_threads(1);                                   // libtorch on one thread, as each kernel stream runs
        try
        {
            foreach (var (m, k, n) in new[] { (16, 64, 256), (16, 256, 64), (64, 16, 256), (16, 16, 256) })
            {
                float[] a = Filled(m * k), b = Filled(k * n), c = new float[m * n], bt = Filled(n * k);
                using var ta = torch.tensor(a).view(m, k);
                using var tb = torch.tensor(b).view(k, n);
                // The kernel multiplies by a matrix kept transposed only over the state's long side (k = 64 or 256 here).
                bool transposed = k >= 64;
                double[] t = Median(rounds, () => SmallGemm<float>.Multiply(a, m, k, b, n, c, accumulate: true),
                    transposed ? () => SmallGemm<float>.MultiplyTransposed(a, m, k, bt, n, c, accumulate: true) : null,
                    () => { using var product = ta.matmul(tb); });
                double flops = 2.0 * m * k * n;
                Add("product A·B (SmallGemm.Multiply)", $"{m}×{k}×{n}", t[0], $"{flops / t[0] / 1e9:F1} GFLOP/s");
                if (transposed) Add("product A·Bᵀ, B as stored (MultiplyTransposed)", $"{m}×{k}×{n}", t[1], $"{flops / t[1] / 1e9:F1} GFLOP/s");
                Add("product A·B, libtorch matmul (one call)", $"{m}×{k}×{n}", t[^1], $"{flops / t[^1] / 1e9:F1} GFLOP/s");
            }
        }
        finally { torch.set_num_threads(threads); }
        foreach (var (rowsCount, cols) in new[] { (256, 64), (64, 256) })
        {
            float[] source = Filled(rowsCount * cols), target = new float[rowsCount * cols];
            double[] t = Median(rounds, () => RowByRow(source, rowsCount, cols, target), () => SmallGemm<float>.Transpose(source, rowsCount, cols, target));
            Add("transpose, row by row", $"{rowsCount}×{cols}", t[0], "");
            Add("transpose, tiles of 16 (SmallGemm.Transpose)", $"{rowsCount}×{cols}", t[1], $"{t[0] / t[1]:F1}× faster");
        }
        foreach (int count in new[] { 256, 16384 })
        {
            float[] x = Filled(count), y = Filled(count);
            double[] t = Median(rounds, () => TensorPrimitives.MultiplyAdd(x, 0.5f, y, y), () => SpanMath.MultiplyAdd<float>(x, 0.5f, y, y));
            Add("y = x·a + y, TensorPrimitives", $"{count}", t[0], "");
            Add("y = x·a + y, the kernel's loop (SpanMath)", $"{count}", t[1], $"{t[0] / t[1]:F1}× faster");
        }
        if (output is null) return;
        new MarkdownReport("The fused kernel's building blocks", command)
            .Paragraph("One thread, float32, at the memory's shapes (16-token chunks, per-head width 64, hidden width 256); libtorch's matmul at " +
                       "the same shapes on one thread is the ceiling at the kernel's own shapes (one call, as the libtorch scan makes it, its output allocated by the call). Each figure is the " +
                       $"median over {rounds} rounds of the time per call, a round timing many calls of each contender in turn (warmed up " +
                       "first). GFLOP/s counts 2·m·k·n per product; this machine's libtorch matmul ceiling is about 90–100 GFLOP/s per core " +
                       "(`bench memory`).")
            .Table(new[] { "operation", "shape", "time per call", "" }, rows)
            .Save(output);
        AnsiConsole.MarkupLine($"Wrote {output}");
    }

    /// <summary>The transpose as the kernel first wrote it: row by row, the target written with a stride of a whole column.</summary>
    static void RowByRow(float[] source, int rows, int cols, float[] target)
    {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) target[c * rows + r] = source[r * cols + c];
    }

    /// <summary>Median seconds per call of each contender: rounds of about 2 ms of calls each, contenders in turn.</summary>
    static double[] Median(int rounds, params Action?[] given)
    {
        var contenders = given.OfType<Action>().ToArray();
        var calls = contenders.Select(run =>
        {
            for (int i = 0; i < 200; i++) run();                  // past the JIT's tiers
            var watch = Stopwatch.StartNew();
            int count = 0;
            while (watch.Elapsed.TotalMilliseconds < 2) { run(); count++; }
            return Math.Max(1, count);
        }).ToArray();
        var times = contenders.Select(_ => new List<double>()).ToArray();
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < contenders.Length; i++)
            {
                var watch = Stopwatch.StartNew();
                for (int j = 0; j < calls[i]; j++) contenders[i]();
                times[i].Add(watch.Elapsed.TotalSeconds / calls[i]);
            }
        return times.Select(Timing.Median).ToArray();
    }
}
