using TorchSharp;
using System.Diagnostics;
using System.Text.Json;
using Titans.Cli.Reporting;
using Titans.Memory;
using Titans.Models;
using Titans.Runtime;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Runs;

/// <summary>Where a run writes, and how often it reports, evaluates and saves.</summary>
public sealed record RunOptions(string Directory, int LogEvery, int EvalEvery, int EvalTokens, int CheckpointEvery)
{
    /// <summary>How to validate; by default the corpus's held-out tail in training-length windows.</summary>
    public Func<Trainer, Validation>? Validate { get; init; }
    /// <summary>Where the model trains (--device); batches follow it.</summary>
    public TorchSharp.torch.Device? Device { get; init; }
    /// <summary>More checkpoint metadata (a task run's task).</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }
    /// <summary>The user's say (--force) to write into a folder that holds files titans did not write.</summary>
    public bool Force { get; init; }
    /// <summary>A new run starts over in a folder that holds a run of titans' (benchmarks, quickstart): that run's files go first.</summary>
    public bool Fresh { get; init; }
}

/// <summary>What a validation measured: the loss to plot, a progress line, and the fields it adds to metrics.jsonl.</summary>
public sealed record Validation(double Loss, string Summary, IReadOnlyDictionary<string, object> Fields)
{
    public static Validation Of(EvaluationResult result, string unit = "byte") => new(result.Loss,
        $"validation loss {result.Loss:F4}  bits/{unit} {result.BitsPerByte:F4}  ppl {result.Perplexity:F2}",
        new Dictionary<string, object> { ["val_loss"] = result.Loss, ["val_bpb"] = result.BitsPerByte, ["val_tokens"] = result.Tokens });
}

/// <summary>
/// A training run on disk: <c>checkpoint.safetensors</c> (replaced atomically), <c>metrics.jsonl</c> (one JSON object
/// per logged step or evaluation), <c>loss.png</c>, and the two configurations as JSON. Plain progress lines go to
/// standard output: step, loss, learning rate, tokens/s, ETA.
/// </summary>
public static class TrainingRun
{
    public const string CheckpointFile = "checkpoint.safetensors";
    public const string MetricsFile = "metrics.jsonl";
    /// <summary>
    /// The training time up to the checkpoint's step, beside it rather than in it, so that identical runs write identical
    /// checkpoints: <c>{"step": …, "elapsed_ms": …}</c>.
    /// </summary>
    public const string TimingFile = "timing.json";
    /// <summary>The checkpoint metadata key of <see cref="TokenData.Checksum"/>, for runs on a corpus.</summary>
    public const string DataChecksumKey = "data_sha256";

    /// <summary>The kind of run folder (<see cref="RunFolder"/>) a training run writes.</summary>
    public const string Kind = "train";

    /// <summary>A run folder's name for an architecture: <c>mac</c>, <c>transformerpp</c>, <c>swa</c>, …</summary>
    public static string FolderName(Architecture architecture) => ArchitectureNames.Display(architecture).ToLowerInvariant().Replace("+", "p");

    /// <summary>
    /// The run folder of a new run, held (null on ranks other than 0, which write nothing): a folder that already holds
    /// a checkpoint is refused, unless the run starts fresh there (<see cref="RunOptions.Fresh"/>).
    /// </summary>
    public static RunFolder? HoldNew(RunOptions run)
    {
        if (!Commands.CommonOptions.Writes) return null;   // under mpirun, rank 0 alone writes
        var folder = RunFolder.Acquire(run.Directory, Kind, run.Force, run.Fresh);
        if (File.Exists(Path.Combine(run.Directory, CheckpointFile)))
        {
            folder.Dispose();
            throw new ArgumentException($"'{run.Directory}' already holds a checkpoint; continue it with --resume {run.Directory}, or pick another --out.");
        }
        return folder;
    }

    /// <summary>The command that trains the run a checkpoint holds (and resumes it): a task run, a DNA pretraining run, or `train`.</summary>
    public static string CommandOf(Checkpoint.Header header) =>
        header.Metadata.ContainsKey(TaskRun.TaskKey) ? "task train" : header.Metadata.ContainsKey(Commands.DnaCommands.GenomeKey) ? "dna pretrain" : "train";

    /// <summary>A run resumes with the command that started it: `train --resume` of a task run would go on as language modelling.</summary>
    public static void RequireRunOf(string command, Checkpoint.Header header, string file)
    {
        string kind = CommandOf(header);
        if (kind != command)
            throw new ArgumentException($"'{file}' is a `titans {kind}` run" + (kind == "task train" ? $" (task {header.Metadata[TaskRun.TaskKey]})" : "") +
                                        $"; resume it with `titans {kind} --resume`.");
    }

    /// <summary>The model's vocabulary must be the tokenizer's.</summary>
    public static void RequireVocabulary(TitansConfig config, ITokenizer tokenizer)
    {
        if (config.VocabSize != tokenizer.VocabularySize)
            throw new ArgumentException($"The model's VocabSize is {config.VocabSize}, the {tokenizer.Name} tokenizer has {tokenizer.VocabularySize} tokens.");
    }

    /// <summary>Trains a new model; refuses to overwrite a folder that already holds a checkpoint.</summary>
    public static Validation Start(TitansConfig config, TrainingConfig training, ITokenizer tokenizer, TokenData data,
        string corpus, RunOptions run)
    {
        RequireVocabulary(config, tokenizer);
        using var folder = HoldNew(run);
        TorchSharp.torch.manual_seed(training.Seed);
        using var model = new TitansLanguageModel("model", config);
        if (run.Device is not null) model.to(run.Device);   // before the optimizer takes the parameters
        using var trainer = new Trainer(model, training, data, Commands.CommonOptions.Environment);
        Console.WriteLine($"Training {ArchitectureNames.Display(config)} ({Quantities.Count(model.parameters().Sum(p => p.numel()))} parameters) " +
                          $"on {data.Train.Length:N0} tokens of {corpus}, validating on {data.Validation.Length:N0}; " +
                          $"{training.Steps} steps × {training.TokensPerStep:N0} tokens{PrefixNote(training)} → {run.Directory}");
        var metadata = new Dictionary<string, string>(run.Metadata ?? new Dictionary<string, string>()) { [DataChecksumKey] = data.Checksum() };
        return Run(folder, trainer, tokenizer, run with { Metadata = metadata });
    }

    /// <summary>
    /// Continues a resumed run in its checkpoint's folder, keeping what the checkpoint recorded besides its own keys (its
    /// corpus, its task; <paramref name="run"/>'s metadata wins). A run on a corpus must get the tokens it trained on
    /// (checked against their recorded checksum), or it would not continue as it would have.
    /// </summary>
    /// <param name="subject">Words after the model's name in the first line (" on qa1"), or "".</param>
    public static Validation Continue(Trainer trainer, Checkpoint.Header header, string file, RunOptions run, string subject = "")
    {
        if (trainer.Data is TokenData data && header.Metadata.GetValueOrDefault(DataChecksumKey) is string recorded && data.Checksum() != recorded)
            throw new ArgumentException($"The data given differs from the data '{file}' trained on (the SHA-256 of its tokens differs); " +
                                        "resume with the run's own data.");
        Console.WriteLine($"Resuming {ArchitectureNames.Display(trainer.Model.Config)}{subject} at step {trainer.Step} of {trainer.Config.Steps} from {file}");
        var metadata = header.Extra.ToDictionary();
        foreach (var (key, value) in run.Metadata ?? new Dictionary<string, string>()) metadata[key] = value;
        run = run with { Directory = Path.GetDirectoryName(Path.GetFullPath(file))!, Metadata = metadata };
        using var folder = Commands.CommonOptions.Writes ? RunFolder.Acquire(run.Directory, Kind, run.Force) : null;
        return Run(folder, trainer, header.Tokenizer, run, TrainingMilliseconds(file, header));
    }

    /// <summary>The training time up to a checkpoint: from <see cref="TimingFile"/> beside it when that is of the same step, else what older checkpoints held.</summary>
    public static long TrainingMilliseconds(string checkpoint, Checkpoint.Header header)
    {
        try
        {
            string timing = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(checkpoint))!, TimingFile);
            if (File.Exists(timing))
            {
                using var json = JsonDocument.Parse(File.ReadAllText(timing));
                if (json.RootElement.GetProperty("step").GetInt32() == header.Step) return json.RootElement.GetProperty("elapsed_ms").GetInt64();
            }
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException) { }
        return header.ElapsedMilliseconds;
    }

    /// <summary><see cref="PrefixPhrase"/> in parentheses after a space when training uses a stream prefix, else "".</summary>
    public static string PrefixNote(TrainingConfig training) => PrefixPhrase(training) is string phrase ? $" ({phrase})" : "";

    /// <summary>"each after up to N tokens streamed without gradient" (or "M–N tokens") when training uses a stream prefix, else null.</summary>
    public static string? PrefixPhrase(TrainingConfig training) => training switch
    {
        { StreamPrefix: 0 } => null,
        { MinStreamPrefix: 0 } => $"each after up to {training.StreamPrefix:N0} tokens streamed without gradient",
        _ when training.MinStreamPrefix == training.StreamPrefix => $"each after {training.StreamPrefix:N0} tokens streamed without gradient",
        _ => $"each after {training.MinStreamPrefix:N0}–{training.StreamPrefix:N0} tokens streamed without gradient",
    };

    /// <summary>Trains <paramref name="trainer"/> to its last step in the run folder <paramref name="held"/> (null: a rank other than 0, which writes nothing).</summary>
    public static Validation Run(RunFolder? held, Trainer trainer, ITokenizer tokenizer, RunOptions options, long elapsedBefore = 0)
    {
        if (held is null)
        {
            // A rank other than 0: the same steps, in step with rank 0 through the all-reduce; no files, no validation.
            while (trainer.Step < trainer.Config.Steps) trainer.TrainStep();
            return new Validation(double.NaN, "", new Dictionary<string, object>());
        }
        string checkpoint = held.Claim(CheckpointFile), plot = held.Claim(PlotFile), metricsPath = held.Claim(MetricsFile);
        held.Write("model.json", trainer.Model.Config.ToJson());
        held.Write("training.json", trainer.Config.ToJson());
        // Lines after the checkpoint's step belong to steps a resumed run redoes; a new run starts an empty log.
        var metrics = trainer.Step == 0 ? new Metrics(new(), new(), new()) : ReadMetrics(metricsPath, trainer.Step);
        AtomicFile.WriteAllText(metricsPath, string.Concat(metrics.Lines.Select(l => l + "\n")));
        var trainCurve = metrics.Train;
        var validationCurve = metrics.Validation.Select(v => (v.Step, v.Loss)).ToList();
        int firstStep = trainer.Step;
        var validate = options.Validate ?? (t => Validation.Of(Validate(t, tokenizer, options.EvalTokens), tokenizer.ByteUnit));
        return TrainingProgress.Show(firstStep, trainer.Config.Steps, progress =>
        {
            var watch = Stopwatch.StartNew();
            long tokens = 0;
            Validation? last = null;
            while (trainer.Step < trainer.Config.Steps)
            {
                var result = trainer.TrainStep();
                tokens += result.Tokens;
                progress.Tick(trainer.Step);
                bool final = trainer.Step == trainer.Config.Steps;
                if (trainer.Step % options.LogEvery == 0 || final || trainer.Step == firstStep + 1)
                {
                    double seconds = watch.Elapsed.TotalSeconds;
                    var report = new StepReport(trainer.Step, trainer.Config.Steps, result.Loss, result.LearningRate, result.GradientNorm,
                        tokens / seconds, seconds, (trainer.Config.Steps - trainer.Step) * seconds / (trainer.Step - firstStep));
                    progress.Log(report);
                    Append(metricsPath, new { step = trainer.Step, loss = result.Loss, lr = result.LearningRate, grad_norm = result.GradientNorm,
                        tokens_per_s = Math.Round(report.TokensPerSecond, 1), elapsed_s = Math.Round(seconds, 2),
                        largest_grads = result.LargestGradients.ToDictionary(g => g.Parameter, g => Math.Round(g.Norm, 6)) });
                    trainCurve.Add((trainer.Step, result.Loss));
                }
                if (trainer.Step % options.EvalEvery == 0 || final)
                {
                    last = validate(trainer);
                    progress.Message($"step {trainer.Step,6}  {last.Summary}");
                    Append(metricsPath, new Dictionary<string, object>(last.Fields) { ["step"] = trainer.Step });
                    validationCurve.Add((trainer.Step, last.Loss));
                    SavePlot(plot, trainCurve, validationCurve);
                }
                if (trainer.Step % options.CheckpointEvery == 0 || final)
                {
                    try
                    {
                        Checkpoint.Save(checkpoint, trainer, tokenizer, options.Metadata);
                        held.Write(TimingFile, JsonSerializer.Serialize(new { step = trainer.Step, elapsed_ms = elapsedBefore + watch.ElapsedMilliseconds }));
                    }
                    catch (IOException e)
                    {
                        throw new IOException($"Could not save step {trainer.Step}'s checkpoint ({e.Message.Trim()}); " +
                                              (File.Exists(checkpoint) ? "the last one saved is unchanged." : "none was saved before."), e);
                    }
                }
            }
            if (Distributed.DataParallel.World is { Reductions: > 0 } world)
                progress.Message($"data parallel over {world.Size} ranks: gradient all-reduce {world.ReduceTime.TotalMilliseconds / world.Reductions:F2} ms " +
                                 $"and {world.ReducedBytes / world.Reductions / 1024.0:N1} KiB per step (each rank sends and receives about that), " +
                                 $"{100 * world.ReduceTime.TotalSeconds / watch.Elapsed.TotalSeconds:F1}% of the time");
            return last ?? validate(trainer);
        });
    }

    /// <summary>
    /// Validation during training on the first <paramref name="tokens"/> of the held-out tail, in training-length windows:
    /// comparable with the training loss and across architectures, and never longer than what the model has learned to
    /// stream (a memory trained on short sequences can diverge on far longer streams; `eval` measures that).
    /// </summary>
    public static EvaluationResult Validate(Trainer trainer, ITokenizer tokenizer, int tokens) =>
        Validate(trainer.Model, trainer.Data as TokenData ?? throw new InvalidOperationException("Corpus validation needs a corpus; give the run a Validate."),
            trainer.Config, tokenizer, tokens, windows: true);

    /// <summary>
    /// Scores the first <paramref name="tokens"/> held-out tokens, cut into up to a batch of contiguous streams that run
    /// through the model in training-length chunks carrying the state; with <paramref name="windows"/> every model
    /// starts afresh each training length instead (as it saw its training sequences).
    /// </summary>
    public static EvaluationResult Validate(TitansLanguageModel model, TokenData data, TrainingConfig training, ITokenizer tokenizer,
        int tokens, bool windows = false)
    {
        var validation = data.Validation.AsSpan(0, Math.Min(tokens, data.Validation.Length));
        int length = training.SequenceLength;
        int rows = Math.Max(1, Math.Min(training.BatchSize, (validation.Length - 1) / length));
        return Evaluation.Run(model, validation, tokenizer, length, length, rows, restartEveryModel: windows, shareCores: CoreShare.Rebalance);
    }

    /// <summary>A trained model's held-out score both ways: in windows, and streamed.</summary>
    /// <param name="Streamed">Null, with the reason in <paramref name="Failure"/>, where the memory's inner loop diverged
    /// on a stream longer than any it trained on.</param>
    public sealed record Scores(EvaluationResult Windows, EvaluationResult? Streamed, string? Failure);

    public static Scores Score(TitansLanguageModel model, TokenData data, TrainingConfig training, ITokenizer tokenizer, int tokens)
    {
        var windows = Validate(model, data, training, tokenizer, tokens, windows: true);
        try { return new Scores(windows, Validate(model, data, training, tokenizer, tokens), null); }
        catch (NonFiniteValueException e) { return new Scores(windows, null, e.Message); }
    }

    /// <summary>
    /// Whether a checkpoint is the finished run of exactly this model and training, and holds <paramref name="metadata"/>
    /// (a task run's task, haystack and start; a key the checkpoint lacks reads as ""), so benchmarks may reuse it.
    /// </summary>
    public static bool IsFinished(string checkpoint, TitansConfig config, TrainingConfig training, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (!File.Exists(checkpoint)) return false;
        try
        {
            using var content = Checkpoints.SafeTensors.Load(checkpoint);
            var header = Checkpoint.ReadHeader(checkpoint, content);
            return header.Step == training.Steps && header.Training == training && header.Model == config &&
                   (metadata ?? new Dictionary<string, string>()).All(m => (header.Metadata.GetValueOrDefault(m.Key) ?? "") == m.Value);
        }
        catch (InvalidDataException) { return false; }
    }

    const string PlotFile = "loss.png";

    static void SavePlot(string path, List<(int Step, double Loss)> train, List<(int Step, double Loss)> validation) =>
        LinePlot.Save(path, "Loss", "step", "loss (nats/token)",
            new[]
            {
                new PlotSeries("train", train.Select(p => (double)p.Step).ToList(), train.Select(p => p.Loss).ToList()),
                new PlotSeries("validation", validation.Select(p => (double)p.Step).ToList(), validation.Select(p => p.Loss).ToList()),
            }, log2X: false, log10Y: false);

    /// <summary>The lines of a metrics log up to a step, and the curves they hold.</summary>
    /// <param name="Validation">Bits per byte of a corpus run, accuracy of a task run (NaN where the run has none).</param>
    public sealed record Metrics(List<string> Lines, List<(int Step, double Loss)> Train, List<(int Step, double Loss, double Bpb, double Accuracy)> Validation);

    /// <summary>Reads a metrics log, keeping steps ≤ <paramref name="upTo"/>; a torn last line is skipped.</summary>
    public static Metrics ReadMetrics(string path, int upTo = int.MaxValue)
    {
        var metrics = new Metrics(new(), new(), new());
        if (!File.Exists(path)) return metrics;
        foreach (string line in File.ReadLines(path))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                var root = doc.RootElement;
                int step = root.GetProperty("step").GetInt32();
                if (step > upTo) continue;
                metrics.Lines.Add(line);
                if (root.TryGetProperty("loss", out var loss)) metrics.Train.Add((step, Number(loss)));
                if (root.TryGetProperty("val_loss", out var val)) metrics.Validation.Add((step, Number(val), Optional(root, "val_bpb"), Optional(root, "val_accuracy")));
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException) { }
        }
        return metrics;
    }

    static double Optional(JsonElement root, string name) => root.TryGetProperty(name, out var value) ? Number(value) : double.NaN;

    /// <summary>A number, or one of the named values ("NaN", "Infinity") <see cref="ResultsJson"/> writes as strings.</summary>
    static double Number(JsonElement value) =>
        value.ValueKind == JsonValueKind.String ? double.Parse(value.GetString()!, System.Globalization.CultureInfo.InvariantCulture) : value.GetDouble();

    static void Append(string path, object record) => File.AppendAllText(path, ResultsJson.SerializeLine(record) + "\n");
}
