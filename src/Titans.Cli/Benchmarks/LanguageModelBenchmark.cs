using Titans.Cli.Reporting;
using Titans.Cli.Runs;
using Titans.Models;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench lm`: trains every architecture of one preset (equal parameter count) with the same data, batches,
/// schedule and seed (equal tokens), then scores each on the same held-out text, streamed through the model. Writes a
/// table of validation bits per byte and a PNG of the loss curves.
/// </summary>
public static class LanguageModelBenchmark
{
    /// <summary>What the benchmark is given, by name.</summary>
    public sealed record Options
    {
        public required string Corpus { get; init; }
        public required ComparedModels Models { get; init; }
        public required TrainingConfig Training { get; init; }
        /// <summary>Held-out tokens of the final score, and steps between validations during training.</summary>
        public int EvalTokens { get; init; } = 262_144;
        public int EvalEvery { get; init; } = 250;
        /// <summary>The folder of the runs, one per architecture (finished ones are reused), and --force.</summary>
        public required string RunsDirectory { get; init; }
        public bool Force { get; init; }
    }

    /// <summary>One architecture's run: its scores, or null with <see cref="Failure"/> where training diverged.</summary>
    sealed record Outcome(Architecture Architecture, long Parameters, TrainingRun.Scores? Scores, string? Failure, double TrainSeconds,
        List<(int Step, double Loss)> TrainCurve, List<(int Step, double Bpb)> ValidationCurve)
    {
        public EvaluationResult? Windows => Scores?.Windows;
        public EvaluationResult? Streamed => Scores?.Streamed;
    }

    public static void Run(Options options, string? output, string? plot, string command)
    {
        if (!File.Exists(options.Corpus) && !Directory.Exists(options.Corpus))
            throw new ArgumentException($"No corpus at '{options.Corpus}'. The State of the Union corpus is fetched by scripts/fetch-corpora.sh sotu.");
        if (options.EvalTokens < 2) throw new ArgumentException($"--eval-tokens must be at least 2, got {options.EvalTokens}.");
        var tokenizer = ByteTokenizer.Instance;
        var data = Commands.LanguageModelCommands.LoadData(options.Corpus, tokenizer, options.Training);
        using var runs = RunFolder.Acquire(options.RunsDirectory, "bench-lm", options.Force);   // held: a second benchmark into it is refused
        var outcomes = new List<Outcome>();
        foreach (var architecture in options.Models.Architectures)
        {
            var config = options.Models.Config(architecture);
            string folder = Path.Combine(options.RunsDirectory, TrainingRun.FolderName(architecture));
            string checkpoint = Path.Combine(folder, TrainingRun.CheckpointFile);
            string? diverged = null;
            if (TrainingRun.IsFinished(checkpoint, config, options.Training))
                Console.WriteLine($"{ArchitectureNames.Display(architecture)}: reusing the finished run in {folder}");
            else
            {
                var run = new RunOptions(folder, LogEvery: 10, options.EvalEvery, EvalTokens: Math.Min(options.EvalTokens, 65536),
                    CheckpointEvery: options.Training.Steps) { Fresh = true, Force = options.Force };
                // A model that diverges is a result too: its row says where, and the other models still run.
                try { TrainingRun.Start(config, options.Training, tokenizer, data, options.Corpus, run); }
                catch (TrainingDivergedException e) { diverged = e.Message; }
            }
            var metrics = TrainingRun.ReadMetrics(Path.Combine(folder, TrainingRun.MetricsFile));
            var validationCurve = metrics.Validation.Select(v => (v.Step, v.Bpb)).ToList();
            if (diverged is not null)
            {
                outcomes.Add(new Outcome(architecture, config.ParameterCount, null, diverged, double.NaN, metrics.Train, validationCurve));
                Console.WriteLine($"{ArchitectureNames.Display(architecture)}: {diverged}\n");
                continue;
            }
            var (model, header) = Checkpoint.LoadModel(checkpoint);
            TrainingRun.Scores scores;
            using (model) scores = TrainingRun.Score(model, data, options.Training, tokenizer, options.EvalTokens);   // the same held-out tokens for every model
            outcomes.Add(new Outcome(architecture, config.ParameterCount, scores, scores.Failure, TrainingRun.TrainingMilliseconds(checkpoint, header) / 1000.0,
                metrics.Train, validationCurve));
            Console.WriteLine($"{ArchitectureNames.Display(architecture)}: {scores.Windows.BitsPerByte:F4} bits/byte in {options.Training.SequenceLength}-token windows, " +
                              (scores.Streamed is null ? $"streamed: {scores.Failure}" : $"{scores.Streamed.BitsPerByte:F4} streamed") +
                              $", on {scores.Windows.Tokens:N0} held-out tokens\n");
        }
        Report(outcomes, options, data, output, plot, command);
    }

    static void Report(List<Outcome> outcomes, Options options, TokenData data, string? output, string? plot, string command)
    {
        var training = options.Training;
        long tokens = (long)training.Steps * training.TokensPerStep;
        int windowLength = training.SequenceLength;
        var header = new[] { "model", "params", $"bits/byte, {windowLength}-byte windows", "bits/byte, streamed", "streamed − windows",
                             "vs Transformer++ (windows)", "training time", "training tok/s" };
        var transformer = outcomes.FirstOrDefault(o => o.Architecture == Architecture.TransformerPlusPlus);
        static string Signed(double value) => $"{value:+0.0000;-0.0000;0.0000}";
        var rows = outcomes.OrderBy(o => o.Windows?.BitsPerByte ?? double.MaxValue).Select(o => (IReadOnlyList<string>)(o.Windows is null
            ? new[] { ArchitectureNames.Display(o.Architecture), Quantities.Count(o.Parameters), "diverged", "-", "-", "-", "-", "-" }
            : new[]
            {
                ArchitectureNames.Display(o.Architecture), Quantities.Count(o.Parameters), $"{o.Windows.BitsPerByte:F4}",
                o.Streamed is null ? "diverged" : $"{o.Streamed.BitsPerByte:F4}",
                o.Streamed is null ? "-" : Signed(o.Streamed.BitsPerByte - o.Windows.BitsPerByte),
                transformer?.Windows is null ? "-" : Signed(o.Windows.BitsPerByte - transformer.Windows.BitsPerByte),
                $"{o.TrainSeconds / 60:F1} min", $"{tokens / o.TrainSeconds:N0}",
            })).ToList();
        Console.WriteLine(string.Join("  ", header));
        foreach (var row in rows) Console.WriteLine(string.Join("  ", row.Select((cell, i) => cell.PadLeft(i == 0 ? 14 : 10))));

        var first = options.Models.Config(Architecture.Mac);
        long heldOut = outcomes.FirstOrDefault(o => o.Windows is not null)?.Windows!.Tokens ?? 0;
        int streams = Math.Max(1, Math.Min(training.BatchSize, (int)(heldOut / windowLength)));
        string setup = $"Corpus `{options.Corpus}`: {data.Train.Length:N0} training bytes, the last {training.ValidationFraction:P0} " +
                       $"({data.Validation.Length:N0} bytes) held out; byte tokenizer. Preset `{options.Models.Preset}` (d = {first.ModelDim}, " +
                       $"{first.Layers} layers, {first.Heads} heads, window {first.Window}, MAC segment {first.SegmentLength}, " +
                       $"{first.PersistentTokens} persistent tokens{(options.Models.MacWrite == MacWrite.SegmentInput ? ", MAC writes the segment input" : "")}, memory depth {first.Memory.Depth}, chunk {first.Memory.ChunkSize}, initial forgetting α₀ = {first.Memory.InitialForgetting}" +
                       (options.Models.MemoryPatch is null ? "" : $", memories with `{options.Models.MemoryPatch}`") + "); " +
                       "every model has the preset's Transformer++ parameter count (feed-forward width balanced). Each model trains " +
                       $"{training.Steps} steps × {training.BatchSize} sequences × {windowLength} bytes = {tokens:N0} tokens{TrainingRun.PrefixNote(training)} " +
                       $"with the same batches (seed {training.Seed}), AdamW (lr {training.LearningRate}, {training.WarmupSteps} warmup " +
                       $"steps, cosine to {training.MinLearningRateRatio:P0}, weight decay {training.WeightDecay}{(training.InitialMemoryWeightDecay is double w0 ? $" (memories' W₀: {w0})" : "")}, clip {training.GradientClip}).\n\n" +
                       $"Scored on the first {heldOut + 1:N0} held-out bytes, cut into {streams} contiguous streams of {heldOut / streams:N0} bytes. " +
                       $"**Windows**: every model starts afresh every {windowLength} bytes, the length it trained on, so all see the same " +
                       $"context. **Streamed**: each stream runs through the model in {windowLength}-byte chunks carrying the state (memory, " +
                       $"attention cache within the window) across the whole stream; Transformer++ still restarts every {windowLength} bytes, " +
                       "since its cache would grow without bound. `streamed − windows` below 0 means the model used context from beyond " +
                       "its training length; above 0, that its state drifted over a stream longer than any it trained on. " +
                       "Validation during training (the second plot) scores the first 64K held-out bytes in windows. " +
                       "Training time is wall time including that validation (every " +
                       $"{options.EvalEvery} steps) and checkpoints.";
        if (plot is not null)
        {
            LinePlot.Save(plot, $"Training loss on {Path.GetFileName(options.Corpus.TrimEnd('/'))} (byte level, equal parameters and tokens)",
                "step", "training loss (nats/byte, mean of 5 logged steps)",
                outcomes.Select(o => Smoothed(ArchitectureNames.Display(o.Architecture), o.TrainCurve, window: 5)).ToList(),
                log2X: false, log10Y: false);
            string validationPlot = Path.ChangeExtension(plot, null) + "-validation.png";
            LinePlot.Save(validationPlot, "Validation bits per byte during training", "step", "bits/byte",
                outcomes.Select(o => new PlotSeries(ArchitectureNames.Display(o.Architecture),
                    o.ValidationCurve.Select(p => (double)p.Step).ToList(), o.ValidationCurve.Select(p => p.Bpb).ToList())).ToList(),
                log2X: false, log10Y: false);
            Console.WriteLine($"Wrote {plot} and {validationPlot}");
        }
        if (output is not null)
        {
            var report = new MarkdownReport("Language modelling: every architecture at equal parameters and tokens", command)
                .Paragraph(setup).Table(header, rows);
            foreach (var o in outcomes.Where(o => o.Failure is not null))
                report.Paragraph($"{ArchitectureNames.Display(o.Architecture)}, {(o.Windows is null ? "training" : "streamed")}: {o.Failure}");
            if (plot is not null)
                report.Paragraph($"![training loss]({Path.GetFileName(plot)})")
                      .Paragraph($"![validation bits per byte]({Path.GetFileName(Path.ChangeExtension(plot, null))}-validation.png)");
            report.Save(output);
            Console.WriteLine($"Wrote {output}");
        }
    }

    /// <summary>Mean of each run of <paramref name="window"/> logged points: single-batch losses are noisy.</summary>
    static PlotSeries Smoothed(string name, List<(int Step, double Loss)> curve, int window)
    {
        var x = new List<double>();
        var y = new List<double>();
        for (int i = 0; i + window <= curve.Count; i += window)
        {
            x.Add(curve[i + window - 1].Step);
            y.Add(curve.Skip(i).Take(window).Average(p => p.Loss));
        }
        return new PlotSeries(name, x, y);
    }
}
