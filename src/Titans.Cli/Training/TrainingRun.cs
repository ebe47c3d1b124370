using System.Diagnostics;
using System.Text.Json;
using Titans.Cli.Reporting;
using Titans.Models;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Training;

/// <summary>Where a run writes, and how often it reports, evaluates and saves.</summary>
public sealed record RunOptions(string Directory, int LogEvery, int EvalEvery, int EvalTokens, int CheckpointEvery);

/// <summary>
/// A training run on disk: <c>checkpoint.safetensors</c> (replaced atomically), <c>metrics.jsonl</c> (one JSON object
/// per logged step or evaluation), <c>loss.png</c>, and the two configurations as JSON. Plain progress lines go to
/// standard output: step, loss, learning rate, tokens/s, ETA.
/// </summary>
public static class TrainingRun
{
    public const string CheckpointFile = "checkpoint.safetensors";

    public static EvaluationResult Run(Trainer trainer, ITokenizer tokenizer, RunOptions options, long elapsedBefore = 0)
    {
        Directory.CreateDirectory(options.Directory);
        string checkpoint = Path.Combine(options.Directory, CheckpointFile);
        WriteAtomically(Path.Combine(options.Directory, "model.json"), trainer.Model.Config.ToJson());
        WriteAtomically(Path.Combine(options.Directory, "training.json"), trainer.Config.ToJson());
        string metricsPath = Path.Combine(options.Directory, "metrics.jsonl");
        if (trainer.Step == 0) File.WriteAllText(metricsPath, "");
        var (trainCurve, validationCurve) = ReadCurves(metricsPath, trainer.Step);
        var watch = Stopwatch.StartNew();
        int firstStep = trainer.Step;
        long tokens = 0;
        EvaluationResult? last = null;
        while (trainer.Step < trainer.Config.Steps)
        {
            var result = trainer.TrainStep();
            tokens += result.Tokens;
            bool final = trainer.Step == trainer.Config.Steps;
            if (trainer.Step % options.LogEvery == 0 || final || trainer.Step == firstStep + 1)
            {
                double seconds = watch.Elapsed.TotalSeconds;
                double rate = tokens / seconds;
                double eta = (trainer.Config.Steps - trainer.Step) * seconds / (trainer.Step - firstStep);
                Console.WriteLine($"step {trainer.Step,6}/{trainer.Config.Steps}  loss {result.Loss:F4}  lr {result.LearningRate:E2}  " +
                                  $"|g| {result.GradientNorm:F2}  {rate:N0} tok/s  elapsed {Clock(seconds)}  eta {Clock(eta)}");
                Append(metricsPath, new { step = trainer.Step, loss = result.Loss, lr = result.LearningRate, grad_norm = result.GradientNorm,
                    tokens_per_s = Math.Round(rate, 1), elapsed_s = Math.Round(seconds, 2) });
                trainCurve.Add((trainer.Step, result.Loss));
            }
            if (trainer.Step % options.EvalEvery == 0 || final)
            {
                last = Validate(trainer, tokenizer, options.EvalTokens);
                Console.WriteLine($"step {trainer.Step,6}  validation loss {last.Loss:F4}  bits/byte {last.BitsPerByte:F4}  ppl {last.Perplexity:F2}");
                Append(metricsPath, new { step = trainer.Step, val_loss = last.Loss, val_bpb = last.BitsPerByte, val_tokens = last.Tokens });
                validationCurve.Add((trainer.Step, last.Loss));
                SavePlot(options.Directory, trainCurve, validationCurve);
            }
            if (trainer.Step % options.CheckpointEvery == 0 || final)
                Checkpoint.Save(checkpoint, trainer, tokenizer, elapsedBefore + watch.ElapsedMilliseconds);
        }
        return last ?? Validate(trainer, tokenizer, options.EvalTokens);
    }

    /// <summary>Validation on the first <paramref name="tokens"/> of the held-out tail, streamed in training-length chunks.</summary>
    public static EvaluationResult Validate(Trainer trainer, ITokenizer tokenizer, int tokens)
    {
        var validation = trainer.Data.Validation.AsSpan(0, Math.Min(tokens, trainer.Data.Validation.Length));
        int rows = Math.Max(1, Math.Min(trainer.Config.BatchSize, (validation.Length - 1) / trainer.Config.SequenceLength));
        return Evaluation.Run(trainer.Model, validation, tokenizer, trainer.Config.SequenceLength, trainer.Config.SequenceLength, rows);
    }

    static void SavePlot(string directory, List<(int Step, double Loss)> train, List<(int Step, double Loss)> validation) =>
        LinePlot.Save(Path.Combine(directory, "loss.png"), "Loss", "step", "loss (nats/token)",
            new[]
            {
                new PlotSeries("train", train.Select(p => (double)p.Step).ToList(), train.Select(p => p.Loss).ToList()),
                new PlotSeries("validation", validation.Select(p => (double)p.Step).ToList(), validation.Select(p => p.Loss).ToList()),
            }, log2X: false, log10Y: false);

    /// <summary>The curves logged before a resumed run's step (later lines belong to steps being redone).</summary>
    static (List<(int, double)>, List<(int, double)>) ReadCurves(string path, int upTo)
    {
        var train = new List<(int, double)>();
        var validation = new List<(int, double)>();
        if (!File.Exists(path)) return (train, validation);
        var kept = new List<string>();
        foreach (string line in File.ReadLines(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                int step = doc.RootElement.GetProperty("step").GetInt32();
                if (step > upTo) continue;
                kept.Add(line);
                if (doc.RootElement.TryGetProperty("loss", out var loss)) train.Add((step, loss.GetDouble()));
                if (doc.RootElement.TryGetProperty("val_loss", out var val)) validation.Add((step, val.GetDouble()));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException) { }   // a torn last line
        }
        WriteAtomically(path, string.Concat(kept.Select(l => l + "\n")));
        return (train, validation);
    }

    static void Append(string path, object record) => File.AppendAllText(path, JsonSerializer.Serialize(record) + "\n");

    static void WriteAtomically(string path, string text)
    {
        string temporary = path + ".tmp";
        File.WriteAllText(temporary, text);
        File.Move(temporary, path, overwrite: true);
    }

    static string Clock(double seconds) => double.IsFinite(seconds) ? TimeSpan.FromSeconds(Math.Round(seconds)).ToString(@"h\:mm\:ss") : "?";
}
