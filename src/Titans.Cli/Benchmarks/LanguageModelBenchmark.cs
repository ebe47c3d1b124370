using System.Diagnostics;
using Titans.Cli.Reporting;
using Titans.Cli.Training;
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
    public sealed record Options(string Corpus, string Preset, IReadOnlyList<Architecture> Architectures, TrainingConfig Training,
        int EvalTokens, int EvalEvery, string RunsDirectory);

    sealed record Outcome(Architecture Architecture, long Parameters, EvaluationResult Final, double TrainSeconds,
        List<(int Step, double Loss)> TrainCurve, List<(int Step, double Bpb)> ValidationCurve);

    public static void Run(Options options, string? output, string? plot, string command)
    {
        if (!File.Exists(options.Corpus) && !Directory.Exists(options.Corpus))
            throw new ArgumentException($"No corpus at '{options.Corpus}'. The State of the Union corpus is fetched by scripts/fetch-corpora.sh sotu.");
        var tokenizer = ByteTokenizer.Instance;
        var data = Commands.LanguageModelCommands.LoadData(options.Corpus, tokenizer, options.Training);
        if (options.EvalTokens < 2) throw new ArgumentException($"--eval-tokens must be at least 2, got {options.EvalTokens}.");
        var outcomes = new List<Outcome>();
        foreach (var architecture in options.Architectures)
        {
            var config = Presets.Get(options.Preset, architecture);
            string folder = Path.Combine(options.RunsDirectory, RunFolderName(architecture));
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            var run = new RunOptions(folder, LogEvery: 10, options.EvalEvery, EvalTokens: Math.Min(options.EvalTokens, 65536),
                CheckpointEvery: options.Training.Steps);
            var watch = Stopwatch.StartNew();
            TrainingRun.Start(config, options.Training, tokenizer, data, options.Corpus, run);
            double seconds = watch.Elapsed.TotalSeconds;
            // The final score: the same held-out tokens for every model, streamed in training-length chunks.
            var (model, _) = Checkpoint.LoadModel(Path.Combine(folder, TrainingRun.CheckpointFile));
            EvaluationResult final;
            using (model)
            {
                var held = data.Validation.AsSpan(0, Math.Min(options.EvalTokens, data.Validation.Length));
                int rows = Math.Max(1, Math.Min(options.Training.BatchSize, (held.Length - 1) / options.Training.SequenceLength));
                final = Evaluation.Run(model, held, tokenizer, options.Training.SequenceLength, options.Training.SequenceLength, rows);
            }
            var metrics = TrainingRun.ReadMetrics(Path.Combine(folder, TrainingRun.MetricsFile));
            outcomes.Add(new Outcome(architecture, config.ParameterCount, final, seconds, metrics.Train,
                metrics.Validation.Select(v => (v.Step, v.Bpb)).ToList()));
            Console.WriteLine($"{ArchitectureNames.Display(architecture)}: {final.BitsPerByte:F4} bits/byte on {final.Tokens:N0} held-out tokens " +
                              $"(trained in {seconds / 60:F1} min)\n");
        }
        Report(outcomes, options, data, output, plot, command);
    }

    public static string RunFolderName(Architecture architecture) =>
        ArchitectureNames.Display(architecture).ToLowerInvariant().Replace("+", "p");

    static void Report(List<Outcome> outcomes, Options options, TokenData data, string? output, string? plot, string command)
    {
        var training = options.Training;
        long tokens = (long)training.Steps * training.TokensPerStep;
        var header = new[] { "model", "params", "validation bits/byte", "validation loss (nats/byte)", "vs Transformer++", "training time", "training tok/s" };
        var transformer = outcomes.FirstOrDefault(o => o.Architecture == Architecture.TransformerPlusPlus);
        var rows = outcomes.OrderBy(o => o.Final.BitsPerByte).Select(o => (IReadOnlyList<string>)new[]
        {
            ArchitectureNames.Display(o.Architecture), Quantities.Count(o.Parameters), $"{o.Final.BitsPerByte:F4}", $"{o.Final.Loss:F4}",
            transformer is null ? "-" : $"{o.Final.BitsPerByte - transformer.Final.BitsPerByte:+0.0000;-0.0000;0}",
            $"{o.TrainSeconds / 60:F1} min", $"{tokens / o.TrainSeconds:N0}",
        }).ToList();
        foreach (var row in rows) Console.WriteLine(string.Join("  ", row.Select((cell, i) => cell.PadLeft(i == 0 ? 14 : 10))));

        var first = Presets.Get(options.Preset, Architecture.Mac);
        long heldOut = outcomes.Count > 0 ? outcomes[0].Final.Tokens : 0;
        string setup = $"Corpus `{options.Corpus}`: {data.Train.Length:N0} training bytes, the last {training.ValidationFraction:P0} " +
                       $"({data.Validation.Length:N0} bytes) held out; byte tokenizer. Preset `{options.Preset}` (d = {first.ModelDim}, " +
                       $"{first.Layers} layers, {first.Heads} heads, window {first.Window}, MAC segment {first.SegmentLength}, " +
                       $"{first.PersistentTokens} persistent tokens, memory depth {first.Memory.Depth}, chunk {first.Memory.ChunkSize}); " +
                       "every model has the preset's Transformer++ parameter count (feed-forward width balanced). Each model trains " +
                       $"{training.Steps} steps × {training.BatchSize} sequences × {training.SequenceLength} bytes = {tokens:N0} tokens " +
                       $"with the same batches (seed {training.Seed}), AdamW (lr {training.LearningRate}, {training.WarmupSteps} warmup " +
                       $"steps, cosine to {training.MinLearningRateRatio:P0}, weight decay {training.WeightDecay}, clip {training.GradientClip}). " +
                       $"Validation: the first {heldOut + 1:N0} held-out bytes, cut into {Math.Max(1, Math.Min(training.BatchSize, (int)(heldOut / training.SequenceLength)))} " +
                       $"contiguous streams, each streamed through the model in {training.SequenceLength}-byte chunks carrying the state " +
                       $"(Transformer++ restarts its cache every {training.SequenceLength} bytes, its training length). `vs Transformer++`: " +
                       "difference in bits/byte (negative is better). Training time includes periodic validation and checkpoints.";
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
