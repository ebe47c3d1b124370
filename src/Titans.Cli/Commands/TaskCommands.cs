using TorchSharp;
using System.CommandLine;
using Titans.Cli.Reporting;
using Titans.Cli.Runs;
using Titans.Experiments;
using Titans.Models;
using Titans.Runtime;
using Titans.Tasks.LongContext;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>`titans task list | show | train | eval | trace | probe`: long-context tasks (S-NIAH, BABILong-style, MQAR).</summary>
public static class TaskCommands
{
    static readonly Option<string?> Haystack = new("--haystack")
        { Description = "UTF-8 text (file or folder of *.txt) the real-text tasks hide their needles in (default: Moby Dick, shipped)" };

    public static Command Create()
    {
        var command = new Command("task", "Long-context tasks: single-needle retrieval (S-NIAH), BABILong-style reasoning and associative recall (MQAR).");
        command.Subcommands.Add(List());
        command.Subcommands.Add(Show());
        command.Subcommands.Add(Train());
        command.Subcommands.Add(Eval());
        command.Subcommands.Add(Floors());
        command.Subcommands.Add(Trace());
        command.Subcommands.Add(Probe());
        return command;
    }

    /// <summary>The task to score a checkpoint on: --task, else the one it trained on; its haystack as <see cref="HaystackOf"/> finds it.</summary>
    static ILongContextTask TaskOf(ParseResult parse, Option<string?> taskOption, Checkpoint.Header header, string file)
    {
        string name = parse.GetValue(taskOption) ?? header.Metadata.GetValueOrDefault(TaskRun.TaskKey)
                      ?? throw new ArgumentException($"'{file}' was not trained on a task; say which with --task.");
        return TaskRun.CreateTask(name, header.Tokenizer, HaystackOf(parse, header, fallBackWhenGone: true));
    }

    /// <summary>
    /// The checkpoint's run folder, held while a report is written into it (the default of --out): a run writing there is
    /// not written into meanwhile, and no file of the user's is replaced. Anywhere else (an export, a folder of the user's)
    /// the report needs an --out.
    /// </summary>
    static RunFolder ReportFolder(string checkpoint)
    {
        try { return RunFolder.Acquire(Path.GetDirectoryName(Path.GetFullPath(checkpoint))!, TrainingRun.Kind); }
        catch (ArgumentException e) { throw new ArgumentException($"The report would go beside the checkpoint, but: {CommonOptions.PlainMessage(e)} Give --out FILE.md.", e); }
    }

    /// <summary>A report's path in the held run folder, recorded as titans' own (and its plot's, a .png of the same name).</summary>
    static string Beside(RunFolder folder, string name, bool withPlot)
    {
        if (withPlot) folder.Claim(Path.ChangeExtension(name, ".png"));
        return folder.Claim(name);
    }

    static string HaystackPath(ParseResult parse) => parse.GetValue(Haystack) ?? LanguageModelCommands.DefaultCorpus;

    /// <summary>
    /// A checkpoint's haystack: the --haystack given, else the one it trained with, else the shipped default. Evaluation
    /// draws from any text's held-out tail, so where the recorded file is gone (and only then) it may say so and use the
    /// default; a resumed run must see the same text, so it may not.
    /// </summary>
    static string HaystackOf(ParseResult parse, Checkpoint.Header header, bool fallBackWhenGone)
    {
        string? recorded = header.Metadata.GetValueOrDefault(TaskRun.HaystackKey);
        if (parse.GetValue(Haystack) is string given)
        {
            // Resuming continues on the run's own haystack; --haystack may only stand in for it once it is gone.
            if (!fallBackWhenGone && recorded is not null && Path.GetFullPath(given) != recorded && (File.Exists(recorded) || Directory.Exists(recorded)))
                throw new ArgumentException($"The run trained with the haystack '{recorded}'; --resume continues on it (--haystack may only replace it once it is gone).");
            return given;
        }
        if (recorded is null) return LanguageModelCommands.DefaultCorpus;
        if (fallBackWhenGone && !File.Exists(recorded) && !Directory.Exists(recorded))
        {
            Console.WriteLine($"The haystack the model trained with, '{recorded}', is gone; using {LanguageModelCommands.DefaultCorpus} (choose with --haystack).");
            return LanguageModelCommands.DefaultCorpus;
        }
        return recorded;
    }

    static Command List()
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer the shortest lengths are counted in", DefaultValueFactory = _ => "bytes" };
        var command = new Command("list", "The tasks, what they ask, and the shortest example each can make.") { tokenizer, Haystack };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var tokens = Tokenizers.FromSpecification(parse.GetValue(tokenizer)!);
            foreach (string name in LongContextTasks.Names)
            {
                var task = TaskRun.CreateTask(name, tokens, HaystackPath(parse));
                Console.WriteLine($"{name,-8} {task.Description} (at least {task.MinimumLength} tokens)");
            }
            return 0;
        }));
        return command;
    }

    static Command Show()
    {
        var taskOption = new Option<string>("--task", "-t") { Description = string.Join(", ", LongContextTasks.Names), DefaultValueFactory = _ => "passkey" };
        var length = new Option<int>("--length") { Description = "tokens in the example", DefaultValueFactory = _ => 400 };
        var depth = new Option<double>("--depth") { Description = "needle depth in [0, 1]", DefaultValueFactory = _ => 0.5 };
        var seed = new Option<long>("--seed") { Description = "seed of the example", DefaultValueFactory = _ => 1 };
        var tokenizer = new Option<string>("--tokenizer") { Description = "bytes, o200k_base, cl100k_base or a SentencePiece .model file", DefaultValueFactory = _ => "bytes" };
        var command = new Command("show", "Print one held-out example of a task as the model reads it, answers in [brackets].")
            { taskOption, length, depth, seed, tokenizer, Haystack };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var tokens = Tokenizers.FromSpecification(parse.GetValue(tokenizer)!);
            var task = TaskRun.CreateTask(parse.GetValue(taskOption)!, tokens, HaystackPath(parse));
            var example = task.Generate(TrainingOptions.Positive(parse, length), parse.GetValue(depth), new Random((int)parse.GetValue(seed)), evaluation: true);
            int at = 0;
            foreach (var answer in example.Answers)
            {
                Console.Write(tokens.Decode(example.Tokens.AsSpan(at, answer.Start - at)));
                Console.Write($"[{tokens.Decode(example.Tokens.AsSpan(answer.Start, answer.Length))}]");
                at = answer.Start + answer.Length;
            }
            Console.WriteLine(tokens.Decode(example.Tokens.AsSpan(at)));
            return 0;
        }));
        return command;
    }

    static Command Train()
    {
        var options = new TrainingOptions("tokens per training example (L)", lengthAlias: "--length");
        var taskOption = new Option<string?>("--task", "-t") { Description = $"{string.Join(", ", LongContextTasks.Names)} (required unless resuming)" };
        var init = new Option<string?>("--init") { Description = "fine-tune: start from this checkpoint's weights (its model and tokenizer)" };
        var evalExamples = new Option<int>("--eval-examples") { Description = "validation examples at the training length", DefaultValueFactory = _ => 100 };
        var train = new Command("train", "Train (or fine-tune) a model on a long-context task at length L; validation is task accuracy at L.")
            { taskOption, Haystack, init, evalExamples };
        foreach (var option in options.All) train.Options.Add(option);
        train.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var run = options.Run(parse, evalTokens: 1, device);
            int examples = TrainingOptions.Positive(parse, evalExamples);
            if (parse.GetValue(options.Resume) is string from)
            {
                options.RefuseSettingsOnResume(parse, Haystack, evalExamples);
                string file = TrainingOptions.CheckpointPath(from);
                ILongContextTask? task = null;
                string haystack = "";
                var (trainer, header) = Checkpoint.Resume(file, h =>
                {
                    TrainingRun.RequireRunOf("task train", h, file);
                    string name = h.Metadata[TaskRun.TaskKey];
                    haystack = HaystackOf(parse, h, fallBackWhenGone: false);
                    TaskRun.RequireHaystackOf(h, name, haystack, file);
                    task = TaskRun.CreateTask(name, h.Tokenizer, haystack);
                    return new TaskBatches(task);
                }, options.ResumeSteps(parse), device, CommonOptions.Environment);
                using (trainer)
                using (trainer.Model)
                    TrainingRun.Continue(trainer, header, file,
                        TaskRun.Configure(run, task!, haystack, trainer.Config, examples, header.Metadata.GetValueOrDefault(TaskRun.InitKey)), $" on {task!.Name}");
                return 0;
            }
            string taskName = parse.GetValue(taskOption) ?? throw new ArgumentException($"Give a --task: {string.Join(", ", LongContextTasks.Names)}.");
            var training = options.Training(parse, new TrainingConfig().ValidationFraction);
            TitansLanguageModel model;
            ITokenizer tokenizer;
            string? startFile = parse.GetValue(init) is string start ? TrainingOptions.CheckpointPath(start) : null;
            if (startFile is not null)
            {
                (model, var header) = Checkpoint.LoadModel(startFile, device);
                tokenizer = header.Tokenizer;
                model.train();
            }
            else
            {
                tokenizer = Tokenizers.FromSpecification(parse.GetValue(options.Tokenizer)!);
                var config = options.Model(parse, tokenizer);
                TrainingRun.RequireVocabulary(config, tokenizer);
                TorchSharp.torch.manual_seed(training.Seed);
                model = new TitansLanguageModel("model", config);
                model.to(device);   // before the trainer's optimizer takes the parameters
            }
            using (model)
            {
                var task = TaskRun.CreateTask(taskName, tokenizer, HaystackPath(parse));
                string folder = parse.GetValue(options.Output)
                                ?? Path.Combine("runs", $"{task.Name}-{TrainingRun.FolderName(model.Config.Architecture)}-{training.SequenceLength}");
                TaskRun.Train(model, training, tokenizer, task, HaystackPath(parse), run with { Directory = folder }, examples, startFile);
            }
            return 0;
        }));
        return train;
    }

    static Command Eval()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "run folder or checkpoint file", Required = true };
        var taskOption = new Option<string?>("--task", "-t") { Description = "task to score (default: the one the model was trained on)" };
        var grid = new GridOptions();
        var chunk = new Option<int>("--chunk") { Description = "tokens per forward pass while streaming", DefaultValueFactory = _ => 512 };
        var rows = new Option<int>("--batch-size") { Description = "examples streamed side by side", DefaultValueFactory = _ => 10 };
        var output = new Option<string?>("--out") { Description = "result file (.md; the heat map goes next to it as .png; default: eval-<task>.md in the run folder)" };
        var command = new Command("eval", "Score a model on a long-context task over a grid of lengths and needle depths, streaming through its state; writes a table and a heat map.")
            { checkpoint, taskOption, Haystack, grid.Lengths, grid.Depths, grid.Examples, chunk, rows, grid.Seed, output };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            string file = TrainingOptions.CheckpointPath(parse.GetValue(checkpoint)!);
            using var beside = parse.GetValue(output) is null ? ReportFolder(file) : null;
            var (model, header) = Checkpoint.LoadModel(file, device);
            using (model)
            {
                var task = TaskOf(parse, taskOption, header, file);
                int trained = header.Training.SequenceLength;
                var (lengthList, depthList) = grid.Parse(parse, task, trained);
                string markdown = parse.GetValue(output) ?? Beside(beside!, $"eval-{task.Name}.md", withPlot: true);
                string title = $"{task.Name}: {ArchitectureNames.Display(header.Model)} trained at {trained:N0} tokens (step {header.Step})";
                int examples = TrainingOptions.Positive(parse, grid.Examples);
                Console.WriteLine($"{title}; {task.Description}; {Examples(examples)} per cell");
                var cells = TaskRun.Grid(model, task, trained, lengthList, depthList, examples, TrainingOptions.Positive(parse, chunk),
                    TrainingOptions.Positive(parse, rows), parse.GetValue(grid.Seed),
                    c => Console.WriteLine($"  length {TaskRun.LengthLabel(c.Length),6}  depth {TaskRun.DepthLabel(c.Depth),9}  accuracy {TaskRun.Percent(c.Accuracy),6}" +
                                           (c.Failure is null ? $"  ({c.TokensPerSecond:N0} tok/s)" : $"  ({c.Failure})")));
                TaskRun.Save(markdown, Path.ChangeExtension(markdown, ".png"), title, CommonOptions.CommandLine(parse),
                    $"{task.Description}. {Examples(examples)} per cell from the haystack's held-out tail; " +
                    "an answer counts when greedy decoding writes it exactly.", cells, trained);
                Console.WriteLine($"Mean accuracy by length: {string.Join("  ", lengthList.Select(l => $"{TaskRun.LengthLabel(l)} {TaskRun.Percent(TaskRun.MeanAt(cells, l))}"))}; " +
                                  $"peak RSS {ProcessMemory.PeakRss() / (1024.0 * 1024):N0} MiB; wrote {markdown} and its heat map");
            }
            return 0;
        }));
        return command;
    }

    /// <summary>The options of a length × depth grid of held-out examples, shared by `task eval` and `task floors`.</summary>
    sealed class GridOptions
    {
        public readonly Option<string?> Lengths = new("--lengths") { Description = "comma-separated context lengths (default: L, 2L, 4L, 8L, 16L for training length L)" };
        public readonly Option<string?> Depths = new("--depths") { Description = "comma-separated needle depths in [0, 1] (default: 0, 0.25, 0.5, 0.75, 1)" };
        public readonly Option<int> Examples = new("--examples") { Description = "examples per (length, depth) cell", DefaultValueFactory = _ => 20 };
        public readonly Option<long> Seed = new("--seed") { Description = "seed of the examples", DefaultValueFactory = _ => 1 };

        /// <summary>The lengths and depths given, or the defaults for a model trained at <paramref name="trained"/> tokens; each checked.</summary>
        public (IReadOnlyList<int> Lengths, IReadOnlyList<double> Depths) Parse(ParseResult parse, ILongContextTask task, int trained)
        {
            var lengths = parse.GetValue(Lengths) is string given ? Lists.NonEmpty(Lists.PositiveIntegers(given, "--lengths"), "--lengths")
                : new[] { 1, 2, 4, 8, 16 }.Select(f => f * trained).ToList();
            foreach (int l in lengths) TaskRun.RequireLength(task, l, $"the length {l}");
            var depths = !task.HasDepth ? TaskRun.Depths(task, 1)
                : parse.GetValue(Depths) is string d ? Lists.NonEmpty(Lists.Numbers(d, "--depths"), "--depths") : TaskRun.Depths(task, 5);
            // Only the depths given are checked (a task without depths uses NaN for "scattered"), written so that NaN fails too.
            if (task.HasDepth && parse.GetValue(Depths) is not null && depths.FirstOrDefault(x => !(x >= 0 && x <= 1), 0) is var outside && !(outside >= 0 && outside <= 1))
                throw new ArgumentException($"--depths must lie in [0, 1], got {outside.ToString(System.Globalization.CultureInfo.InvariantCulture)}.");
            return (lengths, depths);
        }
    }

    static Command Floors()
    {
        var taskOption = new Option<string>("--task", "-t") { Description = string.Join(", ", LongContextTasks.Names), Required = true };
        var trainedOption = new Option<int>("--seq-len") { Description = "the training length L the floors are for", Required = true };
        var grid = new GridOptions();
        var tokenizer = new Option<string>("--tokenizer") { Description = "bytes, o200k_base, cl100k_base or a SentencePiece .model file", DefaultValueFactory = _ => "bytes" };
        var output = new Option<string?>("--out") { Description = "also write the table to this file (.md)" };
        var command = new Command("floors", "What a model trained at L scores without reading far back, on the examples `task eval` and `bench tasks` score: " +
                                            "the share of needles within L before the answer, and the most frequent answer's score.")
            { taskOption, trainedOption, Haystack, grid.Lengths, grid.Depths, grid.Examples, grid.Seed, tokenizer, output };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var task = TaskRun.CreateTask(parse.GetValue(taskOption)!, Tokenizers.FromSpecification(parse.GetValue(tokenizer)!), HaystackPath(parse));
            int trained = TrainingOptions.Positive(parse, trainedOption);
            TaskRun.RequireLength(task, trained, $"--seq-len {trained}");
            var (lengths, depths) = grid.Parse(parse, task, trained);
            int examples = TrainingOptions.Positive(parse, grid.Examples);
            string frequent = TaskRun.FrequentAnswer(task, trained);
            var cells = lengths.SelectMany(l => TaskRun.Cells(task, l, depths, examples, parse.GetValue(grid.Seed), trained, frequent)
                .Select((c, d) => new GridCell(l, depths[d], double.NaN, c.Examples.Count, double.NaN, null, c.InReach, c.Guessed))).ToList();
            var header = new[] { "floor \\ length" }.Concat(lengths.Select(TaskRun.LengthLabel)).ToList();
            var rows = TaskRun.FloorRows(cells, lengths, trained).Select(f => (IReadOnlyList<string>)new[] { f.Label }.Concat(f.Cells).ToList()).ToList();
            string about = $"{task.Description}; {Examples(examples)} per (length, depth) cell at {depths.Count} depth{(depths.Count == 1 ? "" : "s")}, seed {parse.GetValue(grid.Seed)}. " +
                           TaskRun.FloorNote + $" The most frequent answer of 1,000 training examples is \"{frequent}\".";
            Console.WriteLine(about);
            foreach (var row in rows) Console.WriteLine(string.Join("  ", row));
            if (parse.GetValue(output) is string file)
            {
                new MarkdownReport($"{task.Name}: floors for a model trained at {trained:N0} tokens", CommonOptions.CommandLine(parse))
                    .Paragraph(about).Table(header, rows).Save(file);
                Console.WriteLine($"Wrote {file}");
            }
            return 0;
        }));
        return command;
    }

    static Command Trace()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "run folder or checkpoint file", Required = true };
        var taskOption = new Option<string?>("--task", "-t") { Description = "task of the example (default: the one the model was trained on)" };
        var length = new Option<int?>("--length") { Description = "tokens in the example (default: 16 L for training length L)" };
        var depth = new Option<double>("--depth") { Description = "needle depth in [0, 1]", DefaultValueFactory = _ => 0.5 };
        var window = new Option<int?>("--window") { Description = "tokens per traced window (default: L)" };
        var seed = new Option<long>("--seed") { Description = "seed of the example", DefaultValueFactory = _ => 1 };
        var text = new Option<string?>("--text") { Description = "trace the first --length tokens of this UTF-8 text (file or folder of *.txt) instead of a task example, e.g. for a language model" };
        var output = new Option<string?>("--out") { Description = "result file (.md; the plot goes next to it as .png; default: trace-<task or text>.md in the run folder)" };
        var command = new Command("trace", "Stream one long example (or a text) through a memory model and report, window by window, the memory's mean gates and the norms of its weights and momentum.")
            { checkpoint, taskOption, Haystack, text, length, depth, window, seed, output };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            string file = TrainingOptions.CheckpointPath(parse.GetValue(checkpoint)!);
            using var beside = parse.GetValue(output) is null ? ReportFolder(file) : null;
            var (model, header) = Checkpoint.LoadModel(file, device);
            using (model)
            {
                int trained = header.Training.SequenceLength;
                int tokens = parse.GetValue(length) is int given ? TrainingOptions.Positive(given, "--length") : 16 * trained;
                int size = parse.GetValue(window) is int w ? TrainingOptions.Positive(w, "--window") : trained;
                string name, source;
                long[] sequence;
                if (parse.GetValue(text) is string path)
                {
                    long[] all = header.Tokenizer.Encode(TextCorpus.Load(path));
                    if (all.Length < 2) throw new ArgumentException($"'{path}' holds fewer than 2 tokens.");
                    sequence = all.Length > tokens ? all[..tokens] : all;
                    name = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(path));
                    source = $"The first {sequence.Length:N0} tokens of `{path}`";
                }
                else
                {
                    name = parse.GetValue(taskOption) ?? header.Metadata.GetValueOrDefault(TaskRun.TaskKey)
                           ?? throw new ArgumentException($"'{file}' was not trained on a task; say which with --task, or trace a text with --text.");
                    var task = TaskRun.CreateTask(name, header.Tokenizer, HaystackOf(parse, header, fallBackWhenGone: true));
                    TaskRun.RequireLength(task, tokens, $"the length {tokens}");
                    double needle = parse.GetValue(depth);
                    if (needle is < 0 or > 1) throw new ArgumentException("--depth must lie in [0, 1].");
                    var example = task.Generate(tokens, needle, new Random((int)parse.GetValue(seed)), evaluation: true);
                    sequence = example.Tokens;
                    source = $"One {task.Name} example of {tokens:N0} tokens from the haystack's held-out tail, needle depth {TaskRun.DepthLabel(needle)}, " +
                             $"answer at token {example.Answers[0].Start:N0}";
                }
                string title = $"{name} trace: {ArchitectureNames.Display(header.Model)} trained at {trained:N0} tokens (step {header.Step})";
                Console.WriteLine($"{title}; {sequence.Length:N0} tokens, windows of {size:N0}");
                var trace = MemoryTrace.Run(model, sequence, size);
                string markdown = parse.GetValue(output) ?? Beside(beside!, $"trace-{name}.md", withPlot: true);
                SaveTrace(markdown, Path.ChangeExtension(markdown, ".png"), title, CommonOptions.CommandLine(parse), trace,
                    $"{source}; streamed in windows of {size:N0} tokens (the training length is {trained:N0}). " +
                    "Per window: the mean next-token loss, the memory's mean gates over the tokens it wrote (θ inner learning rate, α forgetting, " +
                    "η surprise decay) and, at the window's end, the Frobenius norms of its weights W and momentum S per memory layer.");
                Console.WriteLine($"wrote {markdown} and its plot");
            }
            return 0;
        }));
        return command;
    }

    static Command Probe()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "run folder or checkpoint file of a MAC model trained on a needle task", Required = true };
        var taskOption = new Option<string?>("--task", "-t") { Description = "needle task of the examples (default: the one the model was trained on)" };
        var length = new Option<int?>("--length") { Description = "tokens per example (default: the training length L)" };
        var examples = new Option<int>("--examples") { Description = "examples (needle depths uniform); two thirds fit the probes, one third scores them", DefaultValueFactory = _ => 600 };
        var seed = new Option<long>("--seed") { Description = "seed of the examples and the probes", DefaultValueFactory = _ => 1 };
        var output = new Option<string?>("--out") { Description = "result file (.md; default: probe-<task>.md in the run folder)" };
        var command = new Command("probe", "Where MAC loses a needle: linear probes of the needle's tokens from the segment input and the value written into the memory at the needle, and from the memory's read at the question.")
            { checkpoint, taskOption, Haystack, length, examples, seed, output };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            string file = TrainingOptions.CheckpointPath(parse.GetValue(checkpoint)!);
            using var beside = parse.GetValue(output) is null ? ReportFolder(file) : null;
            var (model, header) = Checkpoint.LoadModel(file, device);
            using (model)
            {
                var task = TaskOf(parse, taskOption, header, file);
                if (task is not NeedleTask) throw new ArgumentException($"The probe needs a needle task (passkey, number, uuid), got {task.Name}.");
                int trained = header.Training.SequenceLength;
                int tokens = parse.GetValue(length) is int given ? TrainingOptions.Positive(given, "--length") : trained;
                TaskRun.RequireLength(task, tokens, $"the length {tokens}");
                int count = TrainingOptions.Positive(parse, examples);
                var random = new Random((int)parse.GetValue(seed));
                var items = Enumerable.Range(0, count).Select(_ => task.Generate(tokens, random.NextDouble(), random, evaluation: true)).ToList();
                string title = $"{task.Name} write probe: {ArchitectureNames.Display(header.Model)} trained at {trained:N0} tokens (step {header.Step})";
                Console.WriteLine($"{title}; {count} examples of {tokens:N0} tokens");
                var results = MacWriteProbe.Run(model, items, seed: parse.GetValue(seed));
                foreach (var r in results)
                    Console.WriteLine($"  block {r.Block}  {r.Feature,-28}  held out {TaskRun.Percent(r.TestAccuracy),5}  fitted {TaskRun.Percent(r.TrainAccuracy),5}  chance {TaskRun.Percent(r.Chance)}");
                string markdown = parse.GetValue(output) ?? Beside(beside!, $"probe-{task.Name}.md", withPlot: false);
                new MarkdownReport(title, CommonOptions.CommandLine(parse))
                    .Paragraph($"{count} {task.Name} examples of {tokens:N0} tokens from the haystack's held-out tail, needle depth uniform. Per MAC block, a linear " +
                               "probe (softmax regression on the standardized signal) is fitted on two thirds of the examples to name each needle token " +
                               "from one signal, and scored on the other third. Chance: the most frequent token's share of the held-out ones.")
                    .Table(new[] { "block", "signal", "held-out accuracy", "fitted accuracy", "chance", "samples (fit / held out)" },
                        results.Select(r => (IReadOnlyList<string>)new[] { $"{r.Block}", r.Feature, TaskRun.Percent(r.TestAccuracy), TaskRun.Percent(r.TrainAccuracy),
                            TaskRun.Percent(r.Chance), $"{r.TrainSamples} / {r.TestSamples}" }))
                    .Save(markdown);
                Console.WriteLine($"wrote {markdown}");
            }
            return 0;
        }));
        return command;
    }

    static void SaveTrace(string markdown, string png, string title, string command, MemoryTraceResult trace, string about)
    {
        var report = new MarkdownReport(title, command).Paragraph(about);
        var series = new List<PlotSeries>();
        for (int b = 0; b < trace.InitialWeightNorms.Count; b++)
        {
            var initial = trace.InitialWeightNorms[b];
            var blocks = trace.Windows.Select(w => w.Blocks[b]).ToList();
            int layers = initial.Count, index = blocks[0].Block;
            var header = new[] { "tokens", "loss", "θ", "α", "η" }.Concat(Enumerable.Range(1, layers).Select(l => $"‖W{l}‖"))
                .Concat(Enumerable.Range(1, layers).Select(l => $"‖S{l}‖")).ToList();
            var rows = new List<IReadOnlyList<string>> { new[] { "0 (W₀)", "", "", "", "" }.Concat(initial.Select(n => $"{n:F2}")).Concat(initial.Select(_ => "")).ToList() };
            rows.AddRange(trace.Windows.Select((w, i) => (IReadOnlyList<string>)new[] { $"{w.End:N0}", $"{w.Loss:F3}", $"{blocks[i].Theta:F4}", $"{blocks[i].Alpha:G3}", $"{blocks[i].Eta:F3}" }
                .Concat(blocks[i].WeightNorms.Select(n => $"{n:F2}")).Concat(blocks[i].MomentumNorms.Select(n => $"{n:F3}")).ToList()));
            report.Paragraph($"Block {index}:").Table(header, rows);
            int heads = blocks[0].HeadAlpha.Count;
            report.Paragraph($"Block {index} by head: mean θ and α over each window, and log₁₀ of the retention since token 0 under forgetting alone.")
                .Table(new[] { "tokens" }.Concat(Enumerable.Range(1, heads).Select(h => $"θ h{h}")).Concat(Enumerable.Range(1, heads).Select(h => $"α h{h}"))
                        .Concat(Enumerable.Range(1, heads).Select(h => $"log₁₀ kept h{h}")).ToList(),
                    trace.Windows.Select((w, i) => (IReadOnlyList<string>)new[] { $"{w.End:N0}" }.Concat(blocks[i].HeadTheta.Select(x => $"{x:F4}"))
                        .Concat(blocks[i].HeadAlpha.Select(x => $"{x:G3}")).Concat(blocks[i].HeadLog10Retention.Select(x => $"{x:F2}")).ToList()).ToList());
            for (int l = 0; l < layers; l++)
                series.Add(new PlotSeries($"block {index} W{l + 1}", new[] { 0.0 }.Concat(trace.Windows.Select(w => (double)w.End)).ToList(),
                    new[] { 1.0 }.Concat(blocks.Select(x => x.WeightNorms[l] / initial[l])).ToList()));
            Console.WriteLine($"  block {index}: ‖W‖/‖W₀‖ at the end {string.Join(", ", Enumerable.Range(0, layers).Select(l => $"{blocks[^1].WeightNorms[l] / initial[l]:F3}"))}");
        }
        report.Paragraph($"![{title}]({Path.GetFileName(png)})");
        report.Save(markdown);
        LinePlot.Save(png, title, "tokens read", "‖W‖ / ‖W₀‖", series, log2X: false, log10Y: false);
    }

    static string Examples(int count) => count == 1 ? "1 example" : $"{count} examples";
}
