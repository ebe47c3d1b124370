using Titans.Cli.Reporting;
using Titans.Cli.Runs;
using Titans.Models;
using Titans.Tasks.LongContext;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench tasks`: trains every architecture (one preset, equal parameter count) on a long-context task at length L
/// with the same examples, schedule and seed, then scores each over L … 16L and the needle depths, streaming through its
/// state. Writes a table of accuracy by length, one heat map per architecture and a plot of accuracy against length.
/// Finished runs in the runs folder are reused. With an initial runs folder, each architecture is fine-tuned from its
/// finished run there instead of trained from scratch (a second stage, e.g. with a stream prefix, in one regime for all).
/// </summary>
public static class TaskBenchmark
{
    /// <summary>What the benchmark is given, by name.</summary>
    public sealed record Options
    {
        /// <summary>The task and the text its needles hide in.</summary>
        public required string Task { get; init; }
        public required string Haystack { get; init; }
        public required ComparedModels Models { get; init; }
        public required TrainingConfig Training { get; init; }
        /// <summary>Scored at these multiples of the training length, at this many needle depths, with this many examples per cell.</summary>
        public required IReadOnlyList<int> Factors { get; init; }
        public int Depths { get; init; } = 5;
        public int Examples { get; init; } = 20;
        public int EvalEvery { get; init; } = 200;
        /// <summary>The folder of the runs (finished ones are reused), --force, and an earlier bench's runs to fine-tune from.</summary>
        public required string RunsDirectory { get; init; }
        public bool Force { get; init; }
        public string? InitFrom { get; init; }
    }

    sealed record Outcome(TitansConfig Config, List<GridCell>? Cells, string? Failure, double TrainAccuracy, int? StartStep)
    {
        public string Name => ArchitectureNames.Display(Config);
    }

    public static void Run(Options options, string? output, string command)
    {
        var tokenizer = ByteTokenizer.Instance;
        var task = TaskRun.CreateTask(options.Task, tokenizer, options.Haystack);
        int length = options.Training.SequenceLength;
        TaskRun.RequireLength(task, length, $"--seq-len {length}");
        var lengths = options.Factors.Select(f => f * length).ToList();
        var depths = TaskRun.Depths(task, options.Depths);
        using var runs = RunFolder.Acquire(options.RunsDirectory, "bench-tasks", options.Force);   // held: a second benchmark into it is refused
        var outcomes = new List<Outcome>();
        foreach (var architecture in options.Models.Architectures)
        {
            string folder = Path.Combine(options.RunsDirectory, TrainingRun.FolderName(architecture));
            string checkpoint = Path.Combine(folder, TrainingRun.CheckpointFile);
            string? init = options.InitFrom is null ? null : StartCheckpoint(options.InitFrom, architecture);
            // A fine-tune keeps the model of the run it starts from; otherwise the preset's, the same for every architecture.
            TitansLanguageModel? start = null;
            int? startStep = null;
            if (init is not null)
            {
                var (loaded, header) = Checkpoint.LoadModel(init);
                (start, startStep) = (loaded, header.Step);
            }
            using var startModel = start;
            var config = start?.Config ?? options.Models.Config(architecture);
            string name = ArchitectureNames.Display(config);
            string? failure = null;
            if (TrainingRun.IsFinished(checkpoint, config, options.Training, TaskRun.Metadata(task, options.Haystack, init)))
                Console.WriteLine($"{name}: reusing the finished run in {folder}");
            else
            {
                TorchSharp.torch.manual_seed(options.Training.Seed);
                using var fresh = start is null ? new TitansLanguageModel("model", config) : null;
                start?.train();
                var run = new RunOptions(folder, LogEvery: 50, options.EvalEvery, EvalTokens: 1, CheckpointEvery: options.Training.Steps)
                    { Fresh = true, Force = options.Force };
                try { TaskRun.Train(start ?? fresh!, options.Training, tokenizer, task, options.Haystack, run, validationExamples: 100, init); }
                catch (TrainingDivergedException e) { failure = e.Message; }
            }
            var metrics = TrainingRun.ReadMetrics(Path.Combine(folder, TrainingRun.MetricsFile));
            double trainAccuracy = metrics.Validation.Select(v => v.Accuracy).DefaultIfEmpty(double.NaN).Last();
            if (failure is not null)
            {
                outcomes.Add(new Outcome(config, null, failure, double.NaN, startStep));
                Console.WriteLine($"{name}: {failure}\n");
                continue;
            }
            var (model, _) = Checkpoint.LoadModel(checkpoint);
            using (model)
            {
                Console.WriteLine($"{name}: scoring {task.Name} at {string.Join(", ", lengths.Select(TaskRun.LengthLabel))} tokens");
                var cells = TaskRun.Grid(model, task, length, lengths, depths, ExamplesPerCell(task, options), chunk: 512, rows: 10, seed: 1,
                    c => Console.WriteLine($"  length {TaskRun.LengthLabel(c.Length),6}  depth {TaskRun.DepthLabel(c.Depth),9}  accuracy {TaskRun.Percent(c.Accuracy),6}" +
                                           (c.Failure is null ? "" : $"  ({c.Failure})")));
                outcomes.Add(new Outcome(config, cells, null, trainAccuracy, startStep));
                Console.WriteLine($"{name}: {string.Join("  ", lengths.Select(l => $"{TaskRun.LengthLabel(l)} {TaskRun.Percent(TaskRun.MeanAt(cells, l))}"))}\n");
                if (output is not null)
                    TaskRun.Save(HeatMapFile(output, architecture, ".md"), HeatMapFile(output, architecture, ".png"),
                        $"{task.Name}: {name} trained at {length} tokens", command, task.Description + ".", cells, length);
            }
        }
        if (output is not null) Report(outcomes, options, task, lengths, output, command);
    }

    /// <summary>The finished run an architecture's fine-tune starts from, in the initial runs folder; a missing one is named.</summary>
    static string StartCheckpoint(string runs, Architecture architecture)
    {
        string file = Path.GetFullPath(Path.Combine(runs, TrainingRun.FolderName(architecture), TrainingRun.CheckpointFile));
        return File.Exists(file) ? file
            : throw new FileNotFoundException($"--init-from: there is no {ArchitectureNames.Display(architecture)} run to start from ({file} does not exist).", file);
    }

    /// <summary>A task without depths has one cell per length; it gets the examples all the depths would have had.</summary>
    static int ExamplesPerCell(ILongContextTask task, Options options) => task.HasDepth ? options.Examples : options.Examples * options.Depths;

    static string HeatMapFile(string output, Architecture architecture, string extension) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(output))!, Path.GetFileNameWithoutExtension(output), TrainingRun.FolderName(architecture) + extension);

    static void Report(List<Outcome> outcomes, Options options, ILongContextTask task, List<int> lengths, string output, string command)
    {
        var t = options.Training;
        var report = new MarkdownReport($"Long-context task {task.Name}: accuracy by context length", command)
            .Paragraph($"{task.Description}. " + (options.InitFrom is null
                           ? $"Every architecture at the `{options.Models.Preset}` preset" + (options.Models.InitialForgetting is double a ? $" (memories with initial forgetting α₀ = {a})" : "") +
                             (options.Models.MemoryPatch is null ? "" : $" (memories with `{options.Models.MemoryPatch}`)") + " trained"
                           : $"Every architecture fine-tuned from its own finished run in `{options.InitFrom}` (after {string.Join(" or ", outcomes.Select(o => o.StartStep).Distinct())} steps there)") +
                       $" on the same examples at L = {t.SequenceLength} tokens " +
                       $"({t.Steps} steps × {t.BatchSize} examples{(TrainingRun.PrefixPhrase(t) is string p ? $", {p}" : "")}, peak learning rate {t.LearningRate}{(t.InitialMemoryWeightDecay is double w0 ? $", weight decay of the memories' W₀ {w0}" : "")}, seed {t.Seed}; loss on the answer tokens only), " +
                       (task.HasDepth ? $"then scored on {options.Examples} held-out examples per (length, depth) cell at {options.Depths} needle depths from 0 to 100%"
                                      : $"then scored on {ExamplesPerCell(task, options)} held-out examples per length (the facts are scattered, so there is no depth)") +
                       ", streaming through the model's state. An answer counts when greedy decoding writes it exactly. " +
                       "Accuracy is averaged over depths; the heat maps give every cell. \"validation at L\" is the last validation " +
                       "during training (100 examples at L). Training speeds are in `bench throughput`; the runs here shared the 2 cores with other jobs.");
        report.Table(new[] { "model", "parameters", "validation at L" }.Concat(lengths.Select(l => $"{TaskRun.LengthLabel(l)} ({l / t.SequenceLength}L)")).ToList(),
            outcomes.Select(o => (IReadOnlyList<string>)new[]
            {
                o.Name, Quantities.Count(o.Config.ParameterCount), TaskRun.Percent(o.TrainAccuracy),
            }.Concat(lengths.Select(l => o.Cells is null ? "diverged" : TaskRun.Percent(TaskRun.MeanAt(o.Cells, l)))).ToList())
            .Concat(outcomes.FirstOrDefault(o => o.Cells is not null) is { Cells: { } cells }       // every model is scored on the same examples
                ? TaskRun.FloorRows(cells, lengths, t.SequenceLength).Select(f => (IReadOnlyList<string>)new[] { f.Label, "", "" }.Concat(f.Cells).ToList())
                : []));
        report.Paragraph(TaskRun.FloorNote);
        var notes = outcomes.Where(o => o.Failure is not null).Select(o => $"- {o.Name}: {o.Failure}")
            .Concat(outcomes.Where(o => o.Cells is not null).SelectMany(o => o.Cells!.Where(c => c.Failure is not null)
                .Select(c => $"- {o.Name} at {TaskRun.LengthLabel(c.Length)}: {c.Failure}")).Distinct()).ToList();
        if (notes.Count > 0) report.Paragraph("Where a cell has no accuracy:\n\n" + string.Join("\n", notes));
        string folder = Path.GetFileNameWithoutExtension(output);
        report.Paragraph("Heat maps (depth × length): " + string.Join(", ", outcomes.Where(o => o.Cells is not null)
            .Select(o => $"[{o.Name}]({folder}/{TrainingRun.FolderName(o.Config.Architecture)}.png)")) + ".");
        string plot = Path.ChangeExtension(output, ".png");
        report.Paragraph($"![accuracy by length]({Path.GetFileName(plot)})");
        report.Save(output);
        LinePlot.Save(plot, $"{task.Name}: accuracy by context length (trained at {t.SequenceLength})", "context length (tokens)", "accuracy (mean over depths)",
            outcomes.Where(o => o.Cells is not null).Select(o => new PlotSeries(o.Name,
                lengths.Where(l => !double.IsNaN(TaskRun.MeanAt(o.Cells!, l))).Select(l => (double)l).ToList(),
                lengths.Select(l => TaskRun.MeanAt(o.Cells!, l)).Where(a => !double.IsNaN(a)).ToList())).ToList(), log2X: true, log10Y: false);
        Console.WriteLine($"Wrote {output}, {plot} and the heat maps in {folder}/");
    }
}
