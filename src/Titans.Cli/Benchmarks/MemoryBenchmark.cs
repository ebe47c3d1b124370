using Spectre.Console;
using TorchSharp;
using Titans.Cli.Reporting;
using Titans.Memory;
using Titans.Memory.Scans;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench memory`: speed of one <see cref="NeuralMemory"/> (batch 1, fp32) over sequence lengths, chunk sizes
/// and memory depths; achieved GFLOP/s from <see cref="NeuralMemoryCost"/> against the libtorch fp32 matmul rate
/// measured in the same run; and the chunked path's speed-up over the sequential reference.
/// </summary>
public static class MemoryBenchmark
{
    /// <param name="RecomputeGroup">chunks per recomputed group for the lean backward's columns (0: those columns are left out)</param>
    public sealed record Options(bool Quick, int Width, int Heads, int Repeats, Device Device, int RecomputeGroup = 16);

    /// <summary>
    /// One cell: forward by the fused kernel and by the chunked scan; forward+backward by plain autograd, by autograd over
    /// recomputed groups, and by the hand-written backward (<see cref="HandWrittenScan"/>) over the same groups by libtorch
    /// calls and by the fused kernel, each with its peak RSS.
    /// </summary>
    sealed record Row(long Length, int Depth, int Chunk, double Forward, double ForwardChunked, double ForwardBackward, double Flops, long PeakRss,
        double Recomputed, long RecomputedPeakRss, double HandWritten, long HandWrittenPeakRss, double Fused, long FusedPeakRss, OpCounts Ops)
    {
        /// <summary>The fastest forward+backward by libtorch calls (plain autograd, recomputed groups, hand-written).</summary>
        public double BestLibtorch => new[] { ForwardBackward, Recomputed, HandWritten }.Where(t => !double.IsNaN(t)).Min();
    }

    /// <summary>Tensors the library creates per chunk (each op returns one), counted by TorchSharp's dispose-scope statistics.</summary>
    sealed record OpCounts(double Forward, double ForwardBackward, double Recomputed, double HandWritten);

    public static void Run(Options o, string? output, string command)
    {
        if (o.Repeats < 1) throw new ArgumentException($"--repeats must be at least 1, got {o.Repeats}.");
        long[] lengths = o.Quick ? new long[] { 1024, 4096 } : new long[] { 1024, 4096, 16384 };
        int[] chunks = o.Quick ? new[] { 16, 64 } : new[] { 16, 64, 256 };
        int[] depths = o.Quick ? new[] { 2 } : new[] { 1, 2, 4 };
        Config(o, 2, 16).Validate(); // a bad --width/--heads fails here, before any timing

        // The ceiling is measured before and after the grid; ratios use the higher reading (this machine is noisy,
        // and a low ceiling reading would flatter the module).
        double ceilingBefore = MatmulGflops(o.Width, o.Device, o.Repeats);
        AnsiConsole.MarkupLine($"libtorch fp32 matmul ceiling ([[4096×{o.Width}]]·[[{o.Width}×{o.Width}]]): [bold]{ceilingBefore:F1} GFLOP/s[/]");
        double ceiling = ceilingBefore;

        Measure(o with { Repeats = 1 }, 1024, 2, 16); // throwaway: the first cell of a process pays heap growth and lazy init
        var rows = new List<Row>();
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var h in Header) table.AddColumn(new TableColumn(h).RightAligned());
        // A live table in a terminal; one plain line per row when the output is redirected (logs stay readable).
        bool live = AnsiConsole.Profile.Capabilities.Interactive;
        void MeasureAll(Action refresh)
        {
            foreach (long length in lengths)
                foreach (int depth in depths)
                    foreach (int chunk in chunks)
                    {
                        var row = Measure(o, length, depth, chunk);
                        rows.Add(row);
                        var cells = Cells(row, ceiling).ToArray();
                        table.AddRow(cells);
                        if (live) refresh();
                        else Console.WriteLine(string.Join("  ", Header.Zip(cells, (h, c) => $"{h}: {c}")));
                    }
        }
        if (live) AnsiConsole.Live(table).Start(ctx => MeasureAll(ctx.Refresh));
        else MeasureAll(() => { });

        double ceilingAfter = MatmulGflops(o.Width, o.Device, o.Repeats);
        AnsiConsole.MarkupLine($"ceiling measured again after the grid: [bold]{ceilingAfter:F1} GFLOP/s[/]");
        if (ceilingAfter > ceiling)
        {
            ceiling = ceilingAfter; // recompute the ratio column against the higher reading
            table = new Table();
            foreach (var h in Header) table.AddColumn(h);
            foreach (var r in rows) table.AddRow(Cells(r, ceiling).ToArray());
            AnsiConsole.Write(table);
        }
        var (reference, chunk16, chunk64, speedupLength) = SequentialSpeedup(o, 0);
        string speedup = $"Sequential reference vs chunked, {speedupLength} tokens, depth 2, forward+backward, both warmed up: " +
                         $"reference {reference:F2} s; chunk 16 {chunk16:F3} s ({reference / chunk16:F1}× faster); " +
                         $"chunk 64 {chunk64:F3} s ({reference / chunk64:F1}× faster).";
        if (o.RecomputeGroup > 0)
        {
            var (_, lean16, lean64, _) = SequentialSpeedup(o, o.RecomputeGroup, reference);
            speedup += $" Recomputed groups of {o.RecomputeGroup} chunks: chunk 16 {lean16:F3} s ({reference / lean16:F1}×); " +
                       $"chunk 64 {lean64:F3} s ({reference / lean64:F1}×).";
        }
        var (_, hand16, hand64, _) = SequentialSpeedup(o, o.RecomputeGroup, reference, handWritten: true, fused: false);
        speedup += $" Hand-written backward: chunk 16 {hand16:F3} s ({reference / hand16:F1}×); chunk 64 {hand64:F3} s ({reference / hand64:F1}×).";
        var (_, fused16, fused64, _) = SequentialSpeedup(o, o.RecomputeGroup, reference, handWritten: true, fused: true);
        speedup += $" Fused kernel, forward and backward: chunk 16 {fused16:F3} s ({reference / fused16:F1}×); chunk 64 {fused64:F3} s ({reference / fused64:F1}×).";
        AnsiConsole.WriteLine(speedup);

        if (output is null) return;
        new MarkdownReport("Neural memory: speed of the chunked path", command)
            .Paragraph($"One NeuralMemory module, batch 1, fp32, width {o.Width}, {o.Heads} heads (d_h = {o.Width / o.Heads}), " +
                       "MLP expansion 4, residual LayerNorm wrapper, data-dependent gates, conv kernel 4. " +
                       $"Median of {o.Repeats} runs after one warm-up. GFLOP/s counts the matmuls of the algorithm " +
                       "(NeuralMemoryCost; forward+backward = 3× forward). The forward (no autograd) runs the fused C# kernel, the default, " +
                       "and the chunked libtorch scan beside it on the same weights (FusedKernel off), interleaved. Peak RSS is the process's peak during the " +
                       "forward+backward runs of that row (freed memory stays in the process for reuse, so it does not fall " +
                       "between rows). *skipped: autograd would keep an estimated > 16 GiB of chunk states (24 GiB machine). " +
                       $"The recomputed columns run the same backward over groups of {o.RecomputeGroup} chunks (RecomputeGroup; a " +
                       "sequence of one group or less takes plain autograd, as at 1K tokens and chunk 64). The three forward+backward " +
                       "paths run on the same weights, their timed steps interleaved round by round. The hand-written columns " +
                       $"replace autograd in the memory's backward (HandWrittenBackward; states kept every {Math.Max(o.RecomputeGroup, 1)} " +
                       "chunks, or only the first with --recompute-group 0; the backward of the projections and gates stays autograd's), by libtorch calls " +
                       "(FusedKernel off); the fused columns run that backward as the C# kernel, the default in training (fused / best libtorch: the fastest " +
                       "of the three libtorch paths' time over the kernel's). Ops/chunk: tensors " +
                       "created by TorchSharp calls per chunk (every op returns one; the native backward of autograd's graph is " +
                       "not counted, so the plain path's backward ops are not in its number).")
            .Paragraph($"libtorch fp32 matmul ceiling, measured in the same run ([4096×{o.Width}]·[{o.Width}×{o.Width}]): " +
                       $"{ceilingBefore:F1} GFLOP/s before the grid, {ceilingAfter:F1} GFLOP/s after; the ratio column uses the " +
                       $"higher, **{ceiling:F1} GFLOP/s**.")
            .Table(Header, rows.Select(r => Cells(r, ceiling).ToList()))
            .Paragraph(speedup + " The reference runs token by token with the inner gradient from autograd " +
                       "(create_graph), on the same libtorch kernels; its time is set by per-token op overhead. The chunked " +
                       "path at chunk 16 pays per chunk instead: about 100 ops (the ops/chunk columns), its dozen matmuls at " +
                       "16-row shapes far from the ceiling. Larger chunks amortize it (docs/fast-memory.md).")
            .Save(output);
        AnsiConsole.MarkupLine($"Wrote {output}");
    }

    static readonly string[] Header =
    {
        "tokens", "depth", "chunk", "fwd tok/s (fused kernel)", "fwd GFLOP/s", "fwd tok/s (chunked, libtorch)", "fused / chunked", "fwd+bwd tok/s", "fwd+bwd GFLOP/s", "fwd+bwd / ceiling", "peak RSS",
        "recomputed fwd+bwd tok/s", "recomputed / ceiling", "recomputed peak RSS",
        "hand-written fwd+bwd tok/s", "hand-written / ceiling", "hand-written peak RSS",
        "fused fwd+bwd tok/s", "fused fwd+bwd / ceiling", "fused / best libtorch", "fused peak RSS",
        "ops/chunk fwd", "ops/chunk fwd+bwd", "ops/chunk recomputed", "ops/chunk hand-written",
    };

    static IEnumerable<string> Cells(Row r, double ceiling)
    {
        double fwdGflops = r.Flops / r.Forward / 1e9, bwdGflops = 3 * r.Flops / r.ForwardBackward / 1e9;
        yield return r.Length.ToString();
        yield return r.Depth.ToString();
        yield return r.Chunk.ToString();
        yield return $"{r.Length / r.Forward:N0}";
        yield return $"{fwdGflops:F1}";
        yield return $"{r.Length / r.ForwardChunked:N0}";
        yield return $"{r.ForwardChunked / r.Forward:F2}×";
        bool skipped = double.IsNaN(r.ForwardBackward);
        yield return skipped ? "skipped*" : $"{r.Length / r.ForwardBackward:N0}";
        yield return skipped ? "" : $"{bwdGflops:F1}";
        yield return skipped ? "" : $"{bwdGflops / ceiling:P0}";
        yield return skipped ? "" : Timing.Mib(r.PeakRss);
        bool recomputed = !double.IsNaN(r.Recomputed);
        yield return recomputed ? $"{r.Length / r.Recomputed:N0}" : "";
        yield return recomputed ? $"{3 * r.Flops / r.Recomputed / 1e9 / ceiling:P0}" : "";
        yield return recomputed ? Timing.Mib(r.RecomputedPeakRss) : "";
        yield return $"{r.Length / r.HandWritten:N0}";
        yield return $"{3 * r.Flops / r.HandWritten / 1e9 / ceiling:P0}";
        yield return Timing.Mib(r.HandWrittenPeakRss);
        yield return $"{r.Length / r.Fused:N0}";
        yield return $"{3 * r.Flops / r.Fused / 1e9 / ceiling:P0}";
        yield return $"{r.BestLibtorch / r.Fused:F2}×";
        yield return Timing.Mib(r.FusedPeakRss);
        yield return $"{r.Ops.Forward:F0}";
        yield return skipped ? "" : $"{r.Ops.ForwardBackward:F0}";
        yield return recomputed ? $"{r.Ops.Recomputed:F0}" : "";
        yield return $"{r.Ops.HandWritten:F0}";
    }

    static NeuralMemoryConfig Config(Options o, int depth, int chunk) =>
        new() { ModelDim = o.Width, Heads = o.Heads, Depth = depth, ChunkSize = chunk, Expansion = 4, RecomputeGroup = 0, HandWrittenBackward = false };   // plain autograd; the other columns set these

    static Row Measure(Options o, long length, int depth, int chunk)
    {
        var config = Config(o, depth, chunk);
        manual_seed(0);
        using var memory = new NeuralMemory("memory", config);
        memory.to(o.Device);
        using var x = randn(1, length, o.Width, device: o.Device);
        double chunks = Math.Ceiling((double)length / chunk);
        void Forward()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            memory.forward(x);
        }
        double forwardOps = CountOps(Forward) / chunks;

        // Every path on the same weights.
        NeuralMemory Copy(NeuralMemoryConfig variant)
        {
            var copy = new NeuralMemory("memory", variant);
            copy.load_state_dict(memory.state_dict());
            copy.to(o.Device);
            return copy;
        }
        // Inference: the fused C# kernel (the default) against the chunked libtorch scan on the same weights, interleaved.
        using var chunkedScan = Copy(config with { FusedKernel = false });
        void ForwardChunked()
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            chunkedScan.forward(x);
        }
        // Warm both up past the JIT's tiers (the kernel's helpers start as tier-0 code) before timing.
        for (int i = 0; i < 5; i++) { Forward(); ForwardChunked(); }
        double[] forwards = Timing.InterleavedMedianSeconds(new Action?[] { Forward, ForwardChunked }, o.Repeats);
        using var fused = Copy(config with { RecomputeGroup = o.RecomputeGroup, HandWrittenBackward = true });
        using var handWritten = Copy(config with { RecomputeGroup = o.RecomputeGroup, HandWrittenBackward = true, FusedKernel = false });
        using var recomputed = o.RecomputeGroup > 0 ? Copy(config with { RecomputeGroup = o.RecomputeGroup }) : null;
        bool plain = AutogradBytes(config, length) <= AutogradBudgetBytes;
        var paths = new[] { handWritten, recomputed, plain ? memory : null, fused };
        // Peak RSS of one step each, the lean paths first (RSS freed by a path stays in the process); then the timed steps
        // interleaved round by round, so that the machine's drift (±30% over minutes) falls on every path alike.
        var peaks = paths.Select(m =>
        {
            if (m is null) return -1L;
            ForwardBackward(m, x);
            NativeAllocator.ReturnFreedMemory();
            ProcessMemory.ResetPeak();
            ForwardBackward(m, x);
            return ProcessMemory.PeakRss();
        }).ToArray();
        var runs = paths.Select(m => m is null ? null : (Action)(() => ForwardBackward(m, x))).ToArray();
        double[] seconds = Timing.InterleavedMedianSeconds(runs, o.Repeats);
        double[] ops = paths.Select(m => m is null ? double.NaN : CountOps(() => ForwardBackward(m, x)) / chunks).ToArray();
        return new Row(length, depth, chunk, forwards[0], forwards[1], seconds[2], NeuralMemoryCost.ForwardFlops(config, length), peaks[2],
            seconds[1], peaks[1], seconds[0], peaks[0], seconds[3], peaks[3], new OpCounts(forwardOps, ops[2], ops[1], ops[0]));
    }

    /// <summary>Tensors created on this thread while <paramref name="run"/> runs (TorchSharp counts each in its dispose-scope statistics).</summary>
    static long CountOps(Action run)
    {
        var statistics = DisposeScopeManager.Statistics;
        long before = statistics.CreatedInScopeCount + statistics.CreatedOutsideScopeCount;
        run();
        return statistics.CreatedInScopeCount + statistics.CreatedOutsideScopeCount - before;
    }

    /// <summary>
    /// Rough size of what autograd keeps for the backward pass: about 8 state-sized tensors per chunk (calibrated on
    /// this benchmark: 4K tokens, depth 2, chunk 16 peaked near 2 GiB). Longer runs are for the recomputed groups.
    /// </summary>
    static double AutogradBytes(NeuralMemoryConfig c, long length) =>
        Math.Ceiling((double)length / c.ChunkSize) * c.Heads * c.LayerShapes.Sum(s => (double)s.Out * s.In) * 4 * 8;

    const double AutogradBudgetBytes = 16.0 * (1L << 30);

    static void ForwardBackward(NeuralMemory memory, Tensor x)
    {
        using var scope = NewDisposeScope();
        memory.forward(x).square().mean().backward();
        BackwardFailures.ThrowIfAny();
        memory.zero_grad();
    }

    /// <summary>
    /// Forward+backward of the token-by-token reference against the chunked path (chunk 16 and 64), same width, depth 2.
    /// Both are warmed up first: the reference's first run pays a one-time autograd cost (~19 s against ~4 s after),
    /// and comparing a cold reference with a warm chunked path would overstate the speed-up about fourfold.
    /// </summary>
    /// <param name="group">RecomputeGroup of the chunked runs</param>
    /// <param name="knownReference">the reference's time from an earlier call (it is not run again)</param>
    /// <param name="handWritten">whether the chunked runs take the hand-written backward</param>
    /// <param name="fused">whether the hand-written backward runs as the fused kernel</param>
    static (double Reference, double Chunk16, double Chunk64, long Length) SequentialSpeedup(Options o, int group, double? knownReference = null,
        bool handWritten = false, bool fused = false)
    {
        long length = o.Quick ? 256 : 1024; // quick mode keeps under a minute
        manual_seed(0);
        using var x = randn(1, length, o.Width, device: o.Device);
        double slow = knownReference ?? Reference();
        double Reference()
        {
            manual_seed(0);
            using var reference = new NeuralMemory("memory", Config(o, 2, 16) with { Algorithm = MemoryAlgorithm.Sequential });
            reference.to(o.Device);
            return Timing.MedianSeconds(() => ForwardBackward(reference, x), o.Quick ? 1 : o.Repeats);
        }
        double Chunked(int chunk)
        {
            manual_seed(0);
            using var chunked = new NeuralMemory("memory", Config(o, 2, chunk) with { RecomputeGroup = group, HandWrittenBackward = handWritten, FusedKernel = fused });
            chunked.to(o.Device);
            return Timing.MedianSeconds(() => ForwardBackward(chunked, x), o.Repeats);
        }
        return (slow, Chunked(16), Chunked(64), length);
    }

    /// <summary>fp32 GFLOP/s of one large matmul, the practical ceiling for matmul-bound work on this machine.</summary>
    static double MatmulGflops(int width, Device device, int repeats)
    {
        using var a = randn(4096, width, device: device);
        using var b = randn(width, width, device: device);
        double seconds = Timing.MedianSeconds(() =>
        {
            using var scope = NewDisposeScope();
            for (int i = 0; i < 10; i++) a.matmul(b);
        }, Math.Max(repeats, 5));
        return 10 * 2.0 * 4096 * width * width / seconds / 1e9;
    }
}
