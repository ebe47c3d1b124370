using System.CommandLine;
using System.Diagnostics;
using Titans.Cli.Runs;
using Titans.Generation;
using Titans.Models;
using Titans.Runtime;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>`titans train | eval | generate | quickstart`: the language-model workflow.</summary>
public static class LanguageModelCommands
{
    /// <summary>Moby Dick (public domain), shipped next to the program: the corpus when none is given.</summary>
    public static string DefaultCorpus => Path.Combine(AppContext.BaseDirectory, "data", "moby-dick.txt");

    static readonly Option<string> Data = new("--data") { Description = "UTF-8 text file, or a folder of *.txt files (default: Moby Dick, shipped)" };

    public static IEnumerable<Command> Create() => new[] { Train(), Eval(), Generate(), Export(), Quickstart() };

    static Command Export()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "run folder or checkpoint file", Required = true };
        var output = new Option<string>("--out") { Description = "folder to write model.safetensors and config.json into", Required = true };
        var force = new Option<bool>("--force") { Description = "replace a model.safetensors or config.json already in --out" };
        var command = new Command("export",
            "Write a checkpoint's weights to share, without the optimizer's state: model.safetensors and config.json (docs/checkpoints.md reads them from PyTorch).")
            { checkpoint, output, force };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            string file = TrainingOptions.CheckpointPath(parse.GetValue(checkpoint)!), folder = parse.GetValue(output)!;
            if (File.Exists(folder)) throw new ArgumentException($"--out '{folder}' is a file; give a folder.");
            var there = new[] { Checkpoint.WeightsFile, Checkpoint.ConfigFile }.Where(f => Path.Exists(Path.Combine(folder, f))).ToList();
            if (there.Count > 0 && !parse.GetValue(force))
                throw new ArgumentException($"'{folder}' already holds {string.Join(" and ", there)}; give another --out, or --force to replace them.");
            var (tensors, bytes) = Checkpoint.Export(file, folder);
            Console.WriteLine($"Exported {tensors} tensors ({bytes / (1024.0 * 1024):N1} MiB) from {file} to {Path.Combine(folder, Checkpoint.WeightsFile)} " +
                              $"and {Path.Combine(folder, Checkpoint.ConfigFile)}");
            return 0;
        }));
        return command;
    }

    static Command Train()
    {
        var options = new TrainingOptions();
        var tokenizerOption = options.Tokenizer;
        var validation = new Option<double>("--val-fraction") { Description = "fraction of the corpus held out (its end)", DefaultValueFactory = _ => new TrainingConfig().ValidationFraction };
        var evalTokens = new Option<int>("--eval-tokens") { Description = "validation tokens scored each time", DefaultValueFactory = _ => 32768 };
        var command = new Command("train", "Train a language model on a text corpus; writes a checkpoint, metrics.jsonl and loss.png into the run folder.")
            { Data, validation, evalTokens };
        foreach (var option in options.All) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var run = options.Run(parse, TrainingOptions.Positive(parse, evalTokens), device);
            if (parse.GetValue(options.Resume) is string from)
            {
                options.RefuseSettingsOnResume(parse, Data, evalTokens);
                string file = TrainingOptions.CheckpointPath(from);
                var (trainer, header) = Checkpoint.Resume(file, h =>
                {
                    TrainingRun.RequireRunOf("train", h, file);
                    return LoadData(RecordedCorpus(parse, h, file), h.Tokenizer, h.Training);
                }, options.ResumeSteps(parse), device, CommonOptions.Environment);
                using (trainer)
                using (trainer.Model)
                    TrainingRun.Continue(trainer, header, file, run);
                return 0;
            }
            string corpus = parse.GetValue(Data) ?? DefaultCorpus;
            var tokenizer = Tokenizers.FromSpecification(parse.GetValue(tokenizerOption)!);
            TitansConfig config = options.Model(parse, tokenizer);
            var training = options.Training(parse, parse.GetValue(validation));
            string folder = parse.GetValue(options.Output) ?? Path.Combine("runs", $"{TrainingRun.FolderName(config.Architecture)}-{parse.GetValue(options.Preset)}");
            TrainingRun.Start(config, training, tokenizer, LoadData(corpus, tokenizer, training), corpus,
                run with { Directory = folder, Metadata = CorpusMetadata(corpus) });
            return 0;
        }));
        return command;
    }

    /// <summary>The checkpoint metadata key of the corpus a run trained on (its full path).</summary>
    const string CorpusKey = "corpus";

    static Dictionary<string, string> CorpusMetadata(string corpus) => new() { [CorpusKey] = Path.GetFullPath(corpus) };

    /// <summary>The corpus a resumed run continues on: --data (a copy; the run checks its tokens), else the one it recorded.</summary>
    static string RecordedCorpus(ParseResult parse, Checkpoint.Header header, string file)
    {
        if (parse.GetValue(Data) is string given) return given;
        string recorded = header.Metadata.GetValueOrDefault(CorpusKey)
            ?? throw new ArgumentException($"'{file}' does not record its corpus (it predates that); give its corpus with --data.");
        return File.Exists(recorded) || Directory.Exists(recorded) ? recorded
            : throw new ArgumentException($"The corpus this run trained on, '{recorded}', is gone; give a copy of it with --data.");
    }

    public static TokenData LoadData(string corpus, ITokenizer tokenizer, TrainingConfig training)
    {
        var tokens = tokenizer.Encode(TextCorpus.Load(corpus));
        return new TokenData(tokens, training.ValidationFraction, training.SequenceLength, training.StreamPrefix);
    }

    static Command Eval()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "run folder or checkpoint file", Required = true };
        var chunk = new Option<int>("--chunk") { Description = "tokens per forward pass while streaming", DefaultValueFactory = _ => 512 };
        var maxContext = new Option<int?>("--max-context") { Description = "Transformer++ restarts its cache after this many tokens (default: its training length)" };
        var windows = new Option<bool>("--windows") { Description = "every model, not only Transformer++, restarts after --max-context tokens (independent windows)" };
        var command = new Command("eval", "Loss, perplexity and bits per byte of a checkpoint on a text, streamed through the model in chunks.")
            { checkpoint, Data, chunk, maxContext, windows };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var (model, header) = Checkpoint.LoadModel(TrainingOptions.CheckpointPath(parse.GetValue(checkpoint)!), device);
            using (model)
            {
                string corpus = parse.GetValue(Data) ?? DefaultCorpus;
                var tokens = header.Tokenizer.Encode(TextCorpus.Load(corpus));
                var watch = Stopwatch.StartNew();
                int context = parse.GetValue(maxContext) ?? header.Training.SequenceLength;
                if (context < 1) throw new ArgumentException($"--max-context must be at least 1, got {context}.");
                var result = Evaluation.Run(model, tokens, header.Tokenizer, parse.GetValue(chunk), context,
                    restartEveryModel: parse.GetValue(windows), progress: Progress(watch), shareCores: CoreShare.Rebalance);
                Console.WriteLine($"{ArchitectureNames.Display(header.Model)} step {header.Step} on {corpus}: {result.Tokens:N0} tokens, " +
                                  $"loss {result.Loss:F4} nats, perplexity {result.Perplexity:F3}, {result.BitsPerByte:F4} bits/{header.Tokenizer.ByteUnit} " +
                                  $"({result.Tokens / watch.Elapsed.TotalSeconds:N0} tok/s, peak RSS {ProcessMemory.PeakRss() / (1024.0 * 1024):N0} MiB)");
            }
            return 0;
        }));
        return command;
    }

    static Command Generate()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "run folder or checkpoint file", Required = true };
        var prompt = new Option<string?>("--prompt", "-p") { Description = "text to continue" };
        var promptFile = new Option<string?>("--prompt-file") { Description = "UTF-8 file whose text to continue (any length)" };
        var tokens = new Option<int>("--tokens", "-n") { Description = "tokens to generate", DefaultValueFactory = _ => 800 };
        var defaults = new SamplingOptions();
        var temperature = new Option<double>("--temperature") { Description = "0 is greedy", DefaultValueFactory = _ => defaults.Temperature };
        var topK = new Option<int>("--top-k") { Description = "keep the k most likely tokens (0: all)", DefaultValueFactory = _ => defaults.TopK };
        var topP = new Option<double>("--top-p") { Description = "keep the most likely tokens up to this probability (1: all)", DefaultValueFactory = _ => defaults.TopP };
        var seed = new Option<long>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 1 };
        var maxContext = new Option<int?>("--max-context")
            { Description = "Transformer++ keeps at most this many tokens in its cache, restarting from the last half when full (default: its training length)" };
        var command = new Command("generate", "Continue a prompt with a trained model; long prompts stream through the model's state.")
            { checkpoint, prompt, promptFile, tokens, temperature, topK, topP, seed, maxContext };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            if (parse.GetValue(promptFile) is not null && parse.GetValue(prompt) is not null)
                throw new ArgumentException("Give either --prompt or --prompt-file, not both.");
            string text = parse.GetValue(promptFile) is string file ? PromptFile(file)
                : parse.GetValue(prompt) ?? throw new ArgumentException("Give a --prompt or a --prompt-file.");
            var (model, header) = Checkpoint.LoadModel(TrainingOptions.CheckpointPath(parse.GetValue(checkpoint)!), device);
            using (model)
                Sample(model, header.Tokenizer, text, parse.GetValue(tokens),
                    new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP), parse.GetValue(seed)),
                    parse.GetValue(maxContext) is int c ? TrainingOptions.Positive(c, "--max-context") : header.Training.SequenceLength);
            return 0;
        }));
        return command;
    }

    /// <summary>A progress line at most every 10 seconds (done, rate, time left), so a long evaluation or prompt is not silent.</summary>
    static Action<long, long> Progress(Stopwatch watch, string verb = "scored", TextWriter? writer = null)
    {
        double next = 10;
        return (done, total) =>
        {
            double seconds = watch.Elapsed.TotalSeconds;
            if (seconds < next || done >= total) return;
            next = seconds + 10;
            (writer ?? Console.Out).WriteLine($"{verb} {done:N0}/{total:N0} tokens ({100.0 * done / total:F0}%)  {done / seconds:N0} tok/s  " +
                                              $"eta {StepReport.Clock((total - done) * seconds / done)}");
        };
    }

    /// <summary>A prompt file's text (strict UTF-8); errors say "prompt file", not "corpus".</summary>
    static string PromptFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"No prompt file at '{path}'.", path);
        string text = TextCorpus.Decode(path, TextCorpus.ReadBounded(path), requireText: false);
        return string.IsNullOrWhiteSpace(text) ? throw new InvalidDataException($"The prompt file '{path}' is empty.") : text;
    }

    /// <summary>
    /// Prints the prompt, then each generated character as soon as it completes. Bad options fail before the prompt is
    /// echoed, and a failure while generating ends the text's line first, so an error never runs on from the text.
    /// </summary>
    static void Sample(TitansLanguageModel model, ITokenizer tokenizer, string prompt, int count, SamplingOptions options, int maxContext)
    {
        var encoded = tokenizer.Encode(prompt);
        if (encoded.Length == 0) throw new ArgumentException("The prompt is empty.");
        // The prompt's progress goes to standard error: standard output is the text alone.
        var tokens = TextGenerator.Generate(model, encoded, count, options, maxContext: maxContext,
            promptProgress: Progress(Stopwatch.StartNew(), "read the prompt:", Console.Error));
        Console.Write(prompt);
        try
        {
            var pending = new List<long>();
            foreach (long token in tokens)
            {
                pending.Add(token);
                string piece = tokenizer.Decode(pending.ToArray());
                if (!piece.EndsWith('\uFFFD')) { Console.Write(piece); pending.Clear(); }   // wait for a whole UTF-8 character
            }
            if (pending.Count > 0) Console.Write(tokenizer.Decode(pending.ToArray()));
        }
        finally { Console.WriteLine(); }
    }

    static Command Quickstart()
    {
        var steps = new Option<int>("--steps") { Description = "optimizer steps per model", DefaultValueFactory = _ => 800 };
        var output = new Option<string>("--out") { Description = "folder of the two runs", DefaultValueFactory = _ => Path.Combine("runs", "quickstart") };
        var force = CommonOptions.Force();
        var report = new Option<string?>("--report") { Description = "also write the scores and times to this file (.md)" };
        var command = new Command("quickstart",
            "Train a tiny MAC and a Transformer++ of equal size the same way on Moby Dick (shipped), print both validation bits per byte, and generate a sample.")
            { steps, output, force, report };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var watch = Stopwatch.StartNew();
            // Held throughout: a second quickstart into the same folder is refused instead of starting over under this one.
            using var runs = CommonOptions.Writes ? RunFolder.Acquire(parse.GetValue(output)!, "quickstart", parse.GetValue(force)) : null;
            var training = new TrainingConfig { Steps = parse.GetValue(steps), BatchSize = 8, SequenceLength = 128, WarmupSteps = 20, Seed = 1 }.Validate();
            var tokenizer = ByteTokenizer.Instance;
            var data = LoadData(DefaultCorpus, tokenizer, training);
            var folders = new List<(Architecture Architecture, string Folder, double Minutes)>();
            foreach (var architecture in new[] { Architecture.Mac, Architecture.TransformerPlusPlus })
            {
                string folder = Path.Combine(parse.GetValue(output)!, TrainingRun.FolderName(architecture));
                var run = new RunOptions(folder, LogEvery: 25, EvalEvery: training.Steps, EvalTokens: 32768, CheckpointEvery: training.Steps)
                    { Device = device, Metadata = CorpusMetadata(DefaultCorpus), Fresh = true, Force = parse.GetValue(force) };
                var started = watch.Elapsed;
                TrainingRun.Start(Presets.Get("tiny", architecture), training, tokenizer, data, DefaultCorpus, run);
                folders.Add((architecture, folder, (watch.Elapsed - started).TotalMinutes));
                Console.WriteLine();
            }
            string scored = $"Validation bits per byte on {Math.Min(32768, data.Validation.Length):N0} held-out bytes " +
                            $"(windows: every model restarts each {training.SequenceLength} bytes, its training length; streamed: the state is carried)";
            Console.WriteLine(scored + ":");
            var rows = new List<IReadOnlyList<string>>();
            foreach (var (architecture, folder, minutes) in folders)
            {
                var (trained, _) = Checkpoint.LoadModel(Path.Combine(folder, TrainingRun.CheckpointFile), device);
                using (trained)
                {
                    var scores = TrainingRun.Score(trained, data, training, tokenizer, 32768);
                    string streamed = scores.Streamed is null ? $"diverged ({scores.Failure})" : $"{scores.Streamed.BitsPerByte:F3}";
                    Console.WriteLine($"  {ArchitectureNames.Display(architecture),-14} windows {scores.Windows.BitsPerByte:F3}   streamed {streamed}");
                    rows.Add(new[] { ArchitectureNames.Display(architecture), $"{trained.parameters().Sum(p => p.numel()):N0}",
                                     $"{scores.Windows.BitsPerByte:F3}", streamed, $"{minutes:F1} min" });
                }
            }
            var (model, header) = Checkpoint.LoadModel(Path.Combine(folders[0].Folder, TrainingRun.CheckpointFile), device);
            using (model)
            {
                Console.WriteLine("\nA sample from the MAC model (temperature 0.8):\n");
                Sample(model, header.Tokenizer, "Call me Ishmael. ", 200, new SamplingOptions(), header.Training.SequenceLength);
            }
            Console.WriteLine($"\nquickstart finished in {watch.Elapsed.TotalMinutes:F1} min; runs in {parse.GetValue(output)}");
            if (parse.GetValue(report) is string file)
            {
                new Reporting.MarkdownReport("The quickstart: a tiny MAC and Transformer++ on Moby Dick", CommonOptions.CommandLine(parse))
                    .Paragraph($"Both `tiny` models trained the same way ({training.Steps} steps of {training.BatchSize} × {training.SequenceLength} bytes, " +
                               $"AdamW, warmup and cosine, seed {training.Seed}; one run each). {scored}; training time includes the validation:")
                    .Table(new[] { "model", "parameters", "bits/byte, windows", "bits/byte, streamed", "training" }, rows)
                    .Paragraph($"The whole quickstart (both trainings, scoring, the sample) took {watch.Elapsed.TotalMinutes:F1} min.")
                    .Save(file);
                Console.WriteLine($"Wrote {file}");
            }
            return 0;
        }));
        return command;
    }
}
