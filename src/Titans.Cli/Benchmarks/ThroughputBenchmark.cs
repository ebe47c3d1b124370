using System.Diagnostics;
using Spectre.Console;
using TorchSharp;
using Titans.Cli.Reporting;
using Titans.Models;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench throughput`: training speed (forward + backward of the next-token loss, tokens/s) and peak memory of
/// every architecture at equal parameter count, over sequence lengths, plus LMM at memory depths 1–4. Longer lengths
/// of a model are skipped once a step would exceed the time budget or the estimated memory would exceed the limit.
/// </summary>
public static class ThroughputBenchmark
{
    public sealed record Options(string Preset, int? Layers, IReadOnlyList<int> Lengths, IReadOnlyList<int> LmmDepths,
        int Repeats, double BudgetSeconds, double MemoryLimitGib, Device Device,
        IReadOnlyList<Architecture>? Architectures = null, string? MemoryPatch = null);

    sealed record Model(string Name, TitansConfig Config);

    sealed record Cell(Model Model, int Length, double Seconds, long PeakRss, string? Skipped)
    {
        public double TokensPerSecond => Length / Seconds;
    }

    public static void Run(Options options, string? output, string? plot, string command)
    {
        if (options.Lengths.Count == 0 || options.Lengths.Any(l => l < 2)) throw new ArgumentException("--lengths must be a list of lengths ≥ 2.");
        if (options.Repeats < 1) throw new ArgumentException("--repeats must be at least 1.");
        var architectures = options.Architectures ?? Enum.GetValues<Architecture>();
        var models = architectures
            .Select(a => new Model(ArchitectureNames.Display(a), Presets.Get(options.Preset, a, options.Layers).WithMemory(options.MemoryPatch)))
            .Concat(architectures.Contains(Architecture.Lmm) ? options.LmmDepths.Where(d => d != 2).Select(d =>
                new Model($"LMM L_M={d}", Presets.Get(options.Preset, Architecture.Lmm, options.Layers, d).WithMemory(options.MemoryPatch))) : [])
            .ToList();
        if (models.Count == 0) throw new ArgumentException("--architectures names no model.");
        var lengths = options.Lengths.Order().ToList();
        var first = models[0].Config;
        AnsiConsole.MarkupLine($"Training throughput, preset [bold]{options.Preset}[/] (d = {first.ModelDim}, {first.Layers} layers, " +
                               $"{Quantities.Count(first.ParameterCount)} parameters each), batch 1, fp32, median of {options.Repeats} after a warm-up.");
        var cells = new List<Cell>();
        foreach (var model in models)
        {
            string? skip = null;
            long lastGrowth = 0;
            int lastLength = 0;
            foreach (int length in lengths)
            {
                long baseline = BaselineRss();
                if (skip is null && lastLength > 0 && baseline + lastGrowth * (double)length / lastLength > options.MemoryLimitGib * (1L << 30))
                    skip = $"est. > {options.MemoryLimitGib:F0} GiB";
                if (skip is not null)
                {
                    cells.Add(new Cell(model, length, double.NaN, -1, skip));
                    AnsiConsole.MarkupLine($"  {Markup.Escape(model.Name),-14} {length,6}: skipped ({skip})");
                    continue;
                }
                var (seconds, peak) = Measure(model.Config, length, options);
                cells.Add(new Cell(model, length, seconds, peak, null));
                AnsiConsole.MarkupLine($"  {Markup.Escape(model.Name),-14} {length,6}: [bold]{length / seconds,9:N0}[/] tok/s  " +
                                       $"{seconds,7:F2} s/step  peak RSS {Timing.Mib(peak)}");
                lastGrowth = Math.Max(0, peak - baseline);
                lastLength = length;
                // The next length costs at least twice as much (four times with full attention).
                double factor = model.Config.CacheGrowsWithContext ? 4 : 2;
                if (seconds * factor > options.BudgetSeconds) skip = $"> {options.BudgetSeconds:F0} s/step";
            }
        }
        Report(cells, models, lengths, options, output, plot, command);
    }

    static long BaselineRss()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        NativeAllocator.ReturnFreedMemory();
        return ProcessMemory.CurrentRss();
    }

    static (double Seconds, long PeakRss) Measure(TitansConfig config, int length, Options options)
    {
        manual_seed(0);
        using var model = new TitansLanguageModel("model", config);
        model.to(options.Device);
        model.train();
        using var tokens = randint(0, config.VocabSize, new long[] { 1, length + 1 }, dtype: ScalarType.Int64).to(options.Device);
        void Step()
        {
            using var scope = NewDisposeScope();
            Tensor logits = model.forward(tokens.narrow(1, 0, length));
            Tensor loss = nn.functional.cross_entropy(logits.view(length, -1), tokens.narrow(1, 1, length).view(length));
            loss.backward();
            BackwardFailures.ThrowIfAny();
            model.zero_grad();
        }
        ProcessMemory.ResetPeak();
        var watch = Stopwatch.StartNew();
        Step();
        double warm = watch.Elapsed.TotalSeconds;
        // A warm-up that already used most of the budget is timed once more, not Repeats times.
        int repeats = warm * options.Repeats > options.BudgetSeconds ? 1 : options.Repeats;
        double seconds = Timing.MedianSeconds(Step, repeats, warmup: 0);
        return (seconds, ProcessMemory.PeakRss());
    }

    static void Report(List<Cell> cells, List<Model> models, List<int> lengths, Options options, string? output, string? plot, string command)
    {
        Cell? At(Model m, int length) => cells.FirstOrDefault(c => c.Model == m && c.Length == length && c.Skipped is null);
        var transformer = models.FirstOrDefault(m => m.Config.Architecture == Architecture.TransformerPlusPlus);
        int reference = lengths.Contains(2048) ? 2048 : lengths[0];
        var header = new List<string> { "model", "params" };
        header.AddRange(lengths.Select(l => $"{Short(l)} tok/s"));
        header.Add($"{Short(lengths[^1])} / {Short(reference)}");
        header.AddRange(lengths.Where(l => l >= 8192).Select(l => $"vs T++ at {Short(l)}"));
        header.Add("peak RSS (longest measured)");
        var rows = models.Select(m =>
        {
            var row = new List<string> { m.Name, Quantities.Count(m.Config.ParameterCount) };
            row.AddRange(lengths.Select(l => cells.First(c => c.Model == m && c.Length == l) is var c && c.Skipped is null
                ? $"{c.TokensPerSecond:N0}" : $"skipped ({c.Skipped})"));
            row.Add(At(m, lengths[^1]) is Cell last && At(m, reference) is Cell refCell ? $"{last.TokensPerSecond / refCell.TokensPerSecond:F2}" : "-");
            row.AddRange(lengths.Where(l => l >= 8192).Select(l =>
                At(m, l) is Cell c && transformer is not null && At(transformer, l) is Cell t ? $"{c.TokensPerSecond / t.TokensPerSecond:F2}×" : "-"));
            var lastMeasured = cells.LastOrDefault(c => c.Model == m && c.Skipped is null);
            row.Add(lastMeasured is null ? "-" : $"{Timing.Mib(lastMeasured.PeakRss)} ({Short(lastMeasured.Length)})");
            return (IReadOnlyList<string>)row;
        }).ToList();

        var table = new Table().Border(TableBorder.Rounded);
        foreach (var h in header) table.AddColumn(new TableColumn(Markup.Escape(h)).RightAligned());
        foreach (var row in rows) table.AddRow(row.Select(Markup.Escape).ToArray());
        AnsiConsole.Write(table);

        var first = models[0].Config;
        string setup = $"Preset `{options.Preset}` (d = {first.ModelDim}, {first.Layers} layers, {first.Heads} heads; window " +
                       $"{first.Window}, MAC segment {first.SegmentLength}, {first.PersistentTokens} persistent tokens; memory " +
                       $"L_M = {first.Memory.Depth} unless named, chunk {first.Memory.ChunkSize}" +
                       (options.MemoryPatch is null ? "" : $"; memory fields set: `{options.MemoryPatch}`") + "). Every model has the " +
                       "preset's Transformer++ parameter count (feed-forward width balanced). One training step = forward and " +
                       "backward of the next-token loss over one sequence (batch 1, fp32); tokens/s = length / median step " +
                       $"time of {options.Repeats} steps after a warm-up (1 step where the warm-up alone took over the " +
                       $"{options.BudgetSeconds:F0} s budget). Lengths are skipped once a step would exceed the budget or the " +
                       $"memory estimate (linear growth from the last length) would exceed {options.MemoryLimitGib:F0} GiB. " +
                       $"`{Short(lengths[^1])} / {Short(reference)}`: a model's own tokens/s at the longest length over its tokens/s " +
                       "at the reference length (1.0 = linear cost). `vs T++`: tokens/s over Transformer++'s at the same length. " +
                       "Peak RSS is the process's high-water mark during the cell, after returning freed memory to the system.";
        if (output is not null)
        {
            var report = new MarkdownReport("Training throughput of every architecture", command).Paragraph(setup).Table(header, rows);
            if (plot is not null) report.Paragraph($"![tokens/s against sequence length]({Path.GetFileName(plot)})");
            report.Save(output);
            AnsiConsole.MarkupLine($"Wrote [bold]{Markup.Escape(output)}[/]");
        }
        if (plot is not null)
        {
            var series = models.Select(m =>
            {
                var measured = cells.Where(c => c.Model == m && c.Skipped is null).ToList();
                return new PlotSeries(m.Name, measured.Select(c => (double)c.Length).ToList(), measured.Select(c => c.TokensPerSecond).ToList());
            }).ToList();
            LinePlot.Save(plot, $"Training tokens/s, preset {options.Preset} ({Quantities.Count(first.ParameterCount)} parameters each)",
                "sequence length (tokens)", "tokens/s (forward + backward)", series);
            AnsiConsole.MarkupLine($"Wrote [bold]{Markup.Escape(plot)}[/]");
        }
    }

    static string Short(int length) => length >= 1024 && length % 1024 == 0 ? $"{length / 1024}K" : length.ToString();
}
