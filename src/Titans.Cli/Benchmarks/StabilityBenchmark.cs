using System.Diagnostics;
using Spectre.Console;
using Titans.Cli.Reporting;
using Titans.Experiments;
using Titans.Memory;
using Titans.Models;
using Titans.Text;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench stability`: for the paper's plain memory and each stabilizer alone and combined, (1) the outer-gradient
/// norm at initialization against the length it runs through, per preset memory, and (2) the state along a long
/// real-text stream: ‖W‖/‖W₀‖ per layer, ‖S‖ and the relative step per chunk (docs/memory-stability.md).
/// </summary>
public static class StabilityBenchmark
{
    /// <summary>A memory as the paper has it or with stabilizers; <see cref="Apply"/> turns a preset's memory into it.</summary>
    public sealed record Variant(string Name, string Description, Func<NeuralMemoryConfig, NeuralMemoryConfig> Apply);

    /// <summary>Soft limit of the inner-gradient clamp in the variants that use it.</summary>
    public const double Clip = 1.0;

    /// <summary>The paper's plain memory: no stabilizer, and the gates the presets started from before (θ₀ 0.05, η₀ 0.9).</summary>
    public static NeuralMemoryConfig Paper(NeuralMemoryConfig c) => c with
    {
        RetainTowardInitial = false, FixedNorm = FastWeightNorm.None, InnerGradientClip = 0, InitialInnerLearningRate = 0.05, InitialMomentum = 0.9,
        LastHeadInitialForgetting = null, LastHeadInitialInnerLearningRate = null,
    };

    static NeuralMemoryConfig SmallSteps(NeuralMemoryConfig c) => c with { InitialInnerLearningRate = 0.01, InitialMomentum = 0.5 };

    /// <summary>Each stabilizer alone on the paper's memory, then the presets' default and the default with the rest added.</summary>
    public static IReadOnlyList<Variant> Variants { get; } = new Variant[]
    {
        new("paper", "the paper's plain memory (θ₀ 0.05, η₀ 0.9, forgetting toward 0)", Paper),
        new("small-steps", "the paper's memory with θ₀ 0.01, η₀ 0.5", c => SmallSteps(Paper(c))),
        new("retention", "the paper's memory, forgetting toward W₀", c => Paper(c) with { RetainTowardInitial = true }),
        new("rows", "the paper's memory, rows fixed to W₀'s norms", c => Paper(c) with { FixedNorm = FastWeightNorm.Rows }),
        new("layers", "the paper's memory, layers fixed to W₀'s norms", c => Paper(c) with { FixedNorm = FastWeightNorm.Layers }),
        new("clip", $"the paper's memory, inner gradient soft-clamped to {Clip}", c => Paper(c) with { InnerGradientClip = Clip }),
        new("timescales", "the paper's memory, heads log-spaced in α₀ (to α₀/1000) and θ₀ (to θ₀/10)",
            c => Paper(c) with { LastHeadInitialForgetting = c.InitialForgetting / 1000, LastHeadInitialInnerLearningRate = 0.005 }),
        new("retention+small-steps", "the paper's memory, forgetting toward W₀, θ₀ 0.01, η₀ 0.5", c => SmallSteps(Paper(c)) with { RetainTowardInitial = true }),
        // The presets' memory itself (with any --memory patch), not a copy of its settings that could drift from Presets.
        new("default", $"the presets' memory: forgetting toward W₀, θ₀ 0.01, η₀ 0.5, inner gradient soft-clamped to {Clip}", c => c),
        new("default+rows", "the default with rows fixed to W₀'s norms", c => c with { FixedNorm = FastWeightNorm.Rows }),
    };

    public sealed record Options(bool Quick, IReadOnlyList<string> Presets, IReadOnlyList<Variant> Variants, IReadOnlyList<int> Lengths,
        int Seeds, string TracePreset, IReadOnlyList<long> Points, string Data, string? MemoryPatch = null);

    public static Options Defaults(bool quick, string data) => quick
        ? new Options(true, new[] { "tiny" }, Variants, new[] { 256, 1024, 4096 }, 1, "tiny", new long[] { 1024, 16384, 65536 }, data)
        : new Options(false, new[] { "tiny", "small" }, Variants, new[] { 256, 1024, 4096, 16384 }, 3, "tiny",
            new long[] { 1024, 4096, 16384, 65536, 102400, 262144, 1048576 }, data);

    public static void Run(Options options, string? output, string? plot, string command)
    {
        long[] text = ByteTokenizer.Instance.Encode(TextCorpus.Load(options.Data));
        int longest = options.Lengths.Max();
        if (text.Length < longest + 1)
            throw new ArgumentException($"{options.Data} has {text.Length:N0} bytes; the outer gradient at {longest:N0} tokens needs {longest + 1:N0}.");
        var watch = Stopwatch.StartNew();

        // (1) Outer-gradient norm against length, median over seeds (each seed a new initialization).
        var gradientRows = new List<string[]>();
        var gradientSeries = new List<PlotSeries>();
        foreach (string preset in options.Presets)
        {
            NeuralMemoryConfig baseMemory = PresetMemory(preset, options.MemoryPatch);
            foreach (var variant in options.Variants)
            {
                var config = variant.Apply(baseMemory).Validate();
                var medians = options.Lengths.Select(length =>
                {
                    var norms = Enumerable.Range(1, options.Seeds).Select(seed =>
                    {
                        using var probe = new MemoryStability(config, seed);
                        return probe.OuterGradientNorm(text, length);
                    }).ToList();
                    return Median(norms);
                }).ToList();
                double growth = medians[^1] / medians[0];
                var row = new[] { preset, variant.Name }.Concat(medians.Select(Format)).Append(Growth(growth)).ToArray();
                gradientRows.Add(row);
                if (preset == options.Presets[0])   // overflowed points are left out of the plot
                {
                    var finite = options.Lengths.Zip(medians).Where(p => double.IsFinite(p.Second)).ToList();
                    gradientSeries.Add(new PlotSeries(variant.Name, finite.Select(p => (double)p.First).ToList(), finite.Select(p => p.Second).ToList()));
                }
                AnsiConsole.MarkupLine(Markup.Escape($"outer gradient  {preset,-6} {variant.Name,-20} " +
                    string.Join("  ", options.Lengths.Zip(medians, (l, m) => $"{l}: {Format(m)}")) + $"  growth {Growth(growth)}  ({watch.Elapsed.TotalSeconds:N0} s)"));
            }
        }

        // (2) The state along a long stream of the same text (repeated past its end).
        var traceRows = new List<string[]>();
        var series = new List<PlotSeries>();
        NeuralMemoryConfig traceMemory = PresetMemory(options.TracePreset, options.MemoryPatch);
        foreach (var variant in options.Variants)
        {
            using var probe = new MemoryStability(variant.Apply(traceMemory).Validate(), seed: 1);
            var points = probe.Trace(text, options.Points, progress: p => AnsiConsole.MarkupLine(Markup.Escape(
                $"stream  {variant.Name,-20} {p.Tokens,9:N0} tokens  " +
                string.Join("  ", p.Layers.Select((l, i) => $"W{i + 1} {l.WeightRatio:0.###} (heads {l.MinHeadRatio:0.###}–{l.MaxHeadRatio:0.###}) step {l.RelativeStep:0.####}")) +
                $"  ({watch.Elapsed.TotalSeconds:N0} s)")));
            foreach (var point in points)
                traceRows.Add(new[] { variant.Name, $"{point.Tokens:N0}" }
                    .Concat(point.Layers.Select(l => $"{l.WeightRatio:0.###} ({l.MinHeadRatio:0.###}–{l.MaxHeadRatio:0.###})"))
                    .Concat(point.Layers.Select(l => Format(l.MomentumNorm)))
                    .Concat(point.Layers.Select(l => $"{l.RelativeStep:0.####}")).ToArray());
            series.Add(new PlotSeries(variant.Name, points.Select(p => (double)p.Tokens).ToList(), points.Select(p => p.Layers[^1].WeightRatio).ToList()));
        }

        AnsiConsole.MarkupLine($"Done in {watch.Elapsed.TotalMinutes:N1} min.");
        string? statePlot = plot is null ? null : Path.Combine(Path.GetDirectoryName(plot) ?? "", Path.GetFileNameWithoutExtension(plot) + "-state.png");
        if (plot is not null)
        {
            LinePlot.Save(plot, $"Outer-gradient norm at initialization ({options.Presets[0]} memory; overflow not drawn)",
                "L (tokens the gradient runs through)", "gradient norm", gradientSeries, log2X: true, log10Y: true);
            LinePlot.Save(statePlot!, $"Last memory layer along a stream of real text ({options.TracePreset} memory, initialization)",
                "tokens streamed", "‖W_L‖ / ‖W_L,0‖", series, log2X: true, log10Y: false);
            AnsiConsole.MarkupLine($"Wrote {plot} and {statePlot}");
        }
        if (output is null) return;
        int depth = traceMemory.Depth;
        new MarkdownReport("Memory stability: outer gradients against length, and the state along a stream", command)
            .Paragraph((options.MemoryPatch is null ? "" : $"Every preset's memory with `{options.MemoryPatch}` set over it. ") +
                       $"One neural memory at initialization reads real text ({Path.GetFileName(options.Data)}, bytes): each byte a fixed " +
                       "random vector of unit RMS, and a fixed random head turns the memory's output into next-byte logits. " +
                       $"Variants: {string.Join("; ", options.Variants.Select(v => $"**{v.Name}**: {v.Description}"))}. " +
                       $"Total time {watch.Elapsed.TotalMinutes:N1} min.")
            .Paragraph($"**Outer-gradient norm** (the global norm of the memory's parameter gradients of the mean next-byte " +
                       $"cross-entropy over the first L bytes; median of {options.Seeds} initialization seed(s)), and its growth from " +
                       $"L = {options.Lengths[0]:N0} to L = {longest:N0}. A stable recurrence keeps this flat; an exploding one grows with L.")
            .Table(new[] { "preset", "memory" }.Concat(options.Lengths.Select(l => $"L = {l:N0}")).Append("growth").ToArray(), gradientRows)
            .Paragraph($"**State along a stream** ({options.TracePreset} preset's memory, seed 1, streamed without gradient in pieces of " +
                       $"4,096 bytes, the text repeated past its end): ‖W‖/‖W₀‖ per layer over all heads (the smallest and largest " +
                       "head's in brackets), the momentum's norm ‖S‖, and the relative step ‖ΔW‖/‖W‖ of one chunk's update (mean over " +
                       "heads and the 4 chunks after the point).")
            .Paragraph(plot is null ? "" : $"![outer gradient against length]({Path.GetFileName(plot)})\n\n![last layer along the stream]({Path.GetFileName(statePlot)})")
            .Table(new[] { "memory", "tokens" }
                .Concat(Enumerable.Range(1, depth).Select(l => $"‖W{l}‖/‖W{l}₀‖"))
                .Concat(Enumerable.Range(1, depth).Select(l => $"‖S{l}‖"))
                .Concat(Enumerable.Range(1, depth).Select(l => $"step W{l}")).ToArray(), traceRows)
            .Save(output);
        AnsiConsole.MarkupLine($"Wrote {output}");
    }

    /// <summary>A preset's memory; presets wider than 384 are cut to 2 heads (the heads are independent memories of d_h = 64).</summary>
    /// <param name="patch">JSON fields set over the preset's memory (null: none)</param>
    public static NeuralMemoryConfig PresetMemory(string preset, string? patch = null)
    {
        var memory = Presets.Get(preset, Architecture.Lmm).Memory;
        if (patch is not null) memory = NeuralMemoryConfig.Patch(memory, patch);
        return memory.ModelDim > 384 ? memory with { Heads = 2, ModelDim = 2 * memory.HeadDim } : memory;
    }

    static string Growth(double ratio) => double.IsFinite(ratio) ? (ratio >= 1e4 ? $"{ratio:0.0E+0}×" : $"{ratio:0.##}×") : "overflow";

    /// <summary>The median, with overflowed values (∞, NaN) counted as the largest.</summary>
    static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Select(v => double.IsFinite(v) ? v : double.PositiveInfinity).Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>A number for the tables; a gradient that overflowed float32 (∞ or NaN) reads "overflow".</summary>
    static string Format(double value) => !double.IsFinite(value) ? "overflow"
        : Math.Abs(value) >= 1e4 || (Math.Abs(value) < 1e-3 && value != 0) ? value.ToString("0.0E+0") : value.ToString("0.###");
}
