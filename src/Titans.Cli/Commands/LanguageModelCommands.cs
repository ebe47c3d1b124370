using System.CommandLine;
using System.Diagnostics;
using Titans.Cli.Training;
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

    public static IEnumerable<Command> Create() => new[] { Train(), Eval(), Generate(), Quickstart() };

    static Command Train()
    {
        var preset = new Option<string>("--preset") { Description = $"model size ({string.Join(", ", Presets.Names)})", DefaultValueFactory = _ => "tiny" };
        var architecture = new Option<string>("--architecture", "-a") { Description = "transformer++, swa, lmm, mac, mag or mal", DefaultValueFactory = _ => "mac" };
        var modelConfig = new Option<string?>("--model-config") { Description = "a model configuration JSON file (as `titans models --json` prints) instead of a preset" };
        var tokenizerOption = new Option<string>("--tokenizer") { Description = "bytes, o200k_base, cl100k_base (tiktoken BPE) or a SentencePiece .model file", DefaultValueFactory = _ => "bytes" };
        var steps = new Option<int>("--steps") { Description = "optimizer steps", DefaultValueFactory = _ => new TrainingConfig().Steps };
        var batch = new Option<int>("--batch-size") { Description = "sequences per micro-batch", DefaultValueFactory = _ => new TrainingConfig().BatchSize };
        var accumulate = new Option<int>("--accumulate") { Description = "micro-batches per optimizer step (gradient accumulation)", DefaultValueFactory = _ => 1 };
        var length = new Option<int>("--seq-len") { Description = "tokens per training sequence", DefaultValueFactory = _ => new TrainingConfig().SequenceLength };
        var lr = new Option<double>("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => new TrainingConfig().LearningRate };
        var warmup = new Option<int>("--warmup") { Description = "linear warmup steps (then cosine decay to 10% of the peak)", DefaultValueFactory = _ => new TrainingConfig().WarmupSteps };
        var decay = new Option<double>("--weight-decay") { Description = "AdamW weight decay (matrices and embeddings)", DefaultValueFactory = _ => new TrainingConfig().WeightDecay };
        var clip = new Option<double>("--clip") { Description = "maximum gradient norm (0: off)", DefaultValueFactory = _ => new TrainingConfig().GradientClip };
        var seed = new Option<long>("--seed") { Description = "seed of the weights and of the batch order", DefaultValueFactory = _ => 1 };
        var validation = new Option<double>("--val-fraction") { Description = "fraction of the corpus held out (its end)", DefaultValueFactory = _ => new TrainingConfig().ValidationFraction };
        var output = new Option<string?>("--out") { Description = "run folder (default: runs/<architecture>-<preset>)" };
        var resume = new Option<string?>("--resume") { Description = "continue the run in this folder (or checkpoint file) bit for bit; --steps may extend it" };
        var logEvery = new Option<int>("--log-every") { Description = "steps between progress lines", DefaultValueFactory = _ => 10 };
        var evalEvery = new Option<int>("--eval-every") { Description = "steps between validations", DefaultValueFactory = _ => 100 };
        var evalTokens = new Option<int>("--eval-tokens") { Description = "validation tokens scored each time", DefaultValueFactory = _ => 32768 };
        var saveEvery = new Option<int>("--checkpoint-every") { Description = "steps between checkpoints", DefaultValueFactory = _ => 100 };
        var command = new Command("train", "Train a language model on a text corpus; writes a checkpoint, metrics.jsonl and loss.png into the run folder.")
            { Data, preset, architecture, modelConfig, tokenizerOption, steps, batch, accumulate, length, lr, warmup, decay, clip, seed, validation, output, resume,
              logEvery, evalEvery, evalTokens, saveEvery };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            int Positive(Option<int> option) => parse.GetValue(option) is int v and > 0 ? v
                : throw new ArgumentException($"{option.Name} must be at least 1, got {parse.GetValue(option)}.");
            var run = new RunOptions("", Positive(logEvery), Positive(evalEvery), Positive(evalTokens), Positive(saveEvery));
            string corpus = parse.GetValue(Data) ?? DefaultCorpus;
            if (parse.GetValue(resume) is string from)
            {
                string file = CheckpointPath(from);
                var (trainer, header) = Checkpoint.Resume(file, h => LoadData(corpus, h.Tokenizer, h.Training),
                    parse.GetResult(steps) is null ? null : parse.GetValue(steps));
                using (trainer)
                using (trainer.Model)
                {
                    Console.WriteLine($"Resuming {ArchitectureNames.Display(trainer.Model.Config.Architecture)} at step {trainer.Step} of {trainer.Config.Steps} from {file}");
                    TrainingRun.Run(trainer, header.Tokenizer, run with { Directory = Path.GetDirectoryName(Path.GetFullPath(file))! }, header.ElapsedMilliseconds);
                }
                return 0;
            }
            var arch = ArchitectureNames.Parse(parse.GetValue(architecture)!);
            var tokenizer = Tokenizers.FromSpecification(parse.GetValue(tokenizerOption)!);
            TitansConfig config = parse.GetValue(modelConfig) is string path
                ? TitansConfig.FromJson(File.ReadAllText(path))
                : Presets.Get(parse.GetValue(preset)!, arch, vocabulary: tokenizer.VocabularySize);
            var training = new TrainingConfig
            {
                Steps = parse.GetValue(steps), BatchSize = parse.GetValue(batch), AccumulationSteps = parse.GetValue(accumulate),
                SequenceLength = parse.GetValue(length), LearningRate = parse.GetValue(lr), WarmupSteps = parse.GetValue(warmup),
                WeightDecay = parse.GetValue(decay), GradientClip = parse.GetValue(clip), Seed = parse.GetValue(seed),
                ValidationFraction = parse.GetValue(validation),
            }.Validate();
            string folder = parse.GetValue(output) ?? Path.Combine("runs", $"{TrainingRun.FolderName(config.Architecture)}-{parse.GetValue(preset)}");
            TrainingRun.Start(config, training, tokenizer, LoadData(corpus, tokenizer, training), corpus, run with { Directory = folder });
            return 0;
        }));
        return command;
    }

    public static TokenData LoadData(string corpus, ITokenizer tokenizer, TrainingConfig training)
    {
        var tokens = tokenizer.Encode(TextCorpus.Load(corpus));
        return new TokenData(tokens, training.ValidationFraction, training.SequenceLength);
    }

    /// <summary>The checkpoint file of a run folder, or the file itself.</summary>
    static string CheckpointPath(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, TrainingRun.CheckpointFile) : path;
        return File.Exists(file) ? file : throw new ArgumentException($"No checkpoint at '{file}'.");
    }

    static Command Eval()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "run folder or checkpoint file", Required = true };
        var chunk = new Option<int>("--chunk") { Description = "tokens per forward pass while streaming", DefaultValueFactory = _ => 512 };
        var maxContext = new Option<int?>("--max-context") { Description = "Transformer++ restarts its cache after this many tokens (default: its training length)" };
        var windows = new Option<bool>("--windows") { Description = "every model, not only Transformer++, restarts after --max-context tokens (independent windows)" };
        var command = new Command("eval", "Loss, perplexity and bits per byte of a checkpoint on a text, streamed through the model in chunks.")
            { checkpoint, Data, chunk, maxContext, windows };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var (model, header) = Checkpoint.LoadModel(CheckpointPath(parse.GetValue(checkpoint)!));
            using (model)
            {
                string corpus = parse.GetValue(Data) ?? DefaultCorpus;
                var tokens = header.Tokenizer.Encode(TextCorpus.Load(corpus));
                var watch = Stopwatch.StartNew();
                int context = parse.GetValue(maxContext) ?? header.Training.SequenceLength;
                if (context < 1) throw new ArgumentException($"--max-context must be at least 1, got {context}.");
                var result = Evaluation.Run(model, tokens, header.Tokenizer, parse.GetValue(chunk), context,
                    restartEveryModel: parse.GetValue(windows));
                Console.WriteLine($"{ArchitectureNames.Display(header.Model.Architecture)} step {header.Step} on {corpus}: {result.Tokens:N0} tokens, " +
                                  $"loss {result.Loss:F4} nats, perplexity {result.Perplexity:F3}, {result.BitsPerByte:F4} bits/byte " +
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
        var command = new Command("generate", "Continue a prompt with a trained model; long prompts stream through the model's state.")
            { checkpoint, prompt, promptFile, tokens, temperature, topK, topP, seed };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            string text = parse.GetValue(promptFile) is string file ? TextCorpus.Load(file)
                : parse.GetValue(prompt) ?? throw new ArgumentException("Give a --prompt or a --prompt-file.");
            var (model, header) = Checkpoint.LoadModel(CheckpointPath(parse.GetValue(checkpoint)!));
            using (model)
                Sample(model, header.Tokenizer, text, parse.GetValue(tokens),
                    new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP), parse.GetValue(seed)));
            return 0;
        }));
        return command;
    }

    /// <summary>Prints the prompt, then each generated character as soon as it completes.</summary>
    static void Sample(TitansLanguageModel model, ITokenizer tokenizer, string prompt, int count, SamplingOptions options)
    {
        var encoded = tokenizer.Encode(prompt);
        if (encoded.Length == 0) throw new ArgumentException("The prompt is empty.");
        Console.Write(prompt);
        var pending = new List<long>();
        foreach (long token in TextGenerator.Generate(model, encoded, count, options))
        {
            pending.Add(token);
            string piece = tokenizer.Decode(pending.ToArray());
            if (!piece.EndsWith('\uFFFD')) { Console.Write(piece); pending.Clear(); }   // wait for a whole UTF-8 character
        }
        if (pending.Count > 0) Console.Write(tokenizer.Decode(pending.ToArray()));
        Console.WriteLine();
    }

    static Command Quickstart()
    {
        var steps = new Option<int>("--steps") { Description = "optimizer steps per model", DefaultValueFactory = _ => 800 };
        var output = new Option<string>("--out") { Description = "folder of the two runs", DefaultValueFactory = _ => Path.Combine("runs", "quickstart") };
        var command = new Command("quickstart",
            "Train a tiny MAC and a Transformer++ of equal size the same way on Moby Dick (shipped), print both validation bits per byte, and generate a sample.")
            { steps, output };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var watch = Stopwatch.StartNew();
            var training = new TrainingConfig { Steps = parse.GetValue(steps), BatchSize = 8, SequenceLength = 128, WarmupSteps = 20, Seed = 1 }.Validate();
            var tokenizer = ByteTokenizer.Instance;
            var data = LoadData(DefaultCorpus, tokenizer, training);
            var folders = new List<(Architecture Architecture, string Folder)>();
            foreach (var architecture in new[] { Architecture.Mac, Architecture.TransformerPlusPlus })
            {
                string folder = Path.Combine(parse.GetValue(output)!, TrainingRun.FolderName(architecture));
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
                var run = new RunOptions(folder, LogEvery: 25, EvalEvery: training.Steps, EvalTokens: 32768, CheckpointEvery: training.Steps);
                TrainingRun.Start(Presets.Get("tiny", architecture), training, tokenizer, data, DefaultCorpus, run);
                folders.Add((architecture, folder));
                Console.WriteLine();
            }
            Console.WriteLine($"Validation bits per byte on {Math.Min(32768, data.Validation.Length):N0} held-out bytes " +
                              $"(windows: every model restarts each {training.SequenceLength} bytes, its training length; streamed: the state is carried):");
            foreach (var (architecture, folder) in folders)
            {
                var (trained, _) = Checkpoint.LoadModel(Path.Combine(folder, TrainingRun.CheckpointFile));
                using (trained)
                {
                    var scores = TrainingRun.Score(trained, data, training, tokenizer, 32768);
                    Console.WriteLine($"  {ArchitectureNames.Display(architecture),-14} windows {scores.Windows.BitsPerByte:F3}   streamed " +
                                      (scores.Streamed is null ? $"diverged ({scores.Failure})" : $"{scores.Streamed.BitsPerByte:F3}"));
                }
            }
            var (model, header) = Checkpoint.LoadModel(Path.Combine(folders[0].Folder, TrainingRun.CheckpointFile));
            using (model)
            {
                Console.WriteLine("\nA sample from the MAC model (temperature 0.8):\n");
                Sample(model, header.Tokenizer, "Call me Ishmael. ", 200, new SamplingOptions());
            }
            Console.WriteLine($"\nquickstart finished in {watch.Elapsed.TotalMinutes:F1} min; runs in {parse.GetValue(output)}");
            return 0;
        }));
        return command;
    }
}
