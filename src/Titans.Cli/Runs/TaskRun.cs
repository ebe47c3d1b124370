using System.Diagnostics;
using Titans.Cli.Reporting;
using Titans.Memory;
using Titans.Models;
using Titans.Runtime;
using Titans.Tasks.LongContext;
using Titans.Text;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Cli.Runs;

/// <summary>
/// One cell of a length × depth grid: accuracy over its examples, how fast they streamed, and the floors of its examples
/// (<see cref="TaskFloors"/>): the share whose needle lies within the training length, and the most frequent answer's score.
/// </summary>
/// <param name="Failure">Why the cell has no accuracy (the memory diverged, or the model cannot read that far).</param>
public sealed record GridCell(int Length, double Depth, double Accuracy, int Examples, double TokensPerSecond, string? Failure,
    double InReach, double Guessed);

/// <summary>
/// Training on a long-context task and scoring a model over a grid of lengths and needle depths. A task run is a training
/// run (<see cref="TrainingRun"/>) whose batches come from the task generator and whose validation is task accuracy;
/// its checkpoint records the task and haystack, so `task eval` knows what the model was trained on.
/// </summary>
public static class TaskRun
{
    public const string TaskKey = "task";
    public const string HaystackKey = "task_haystack";
    /// <summary>The checkpoint a fine-tune started from: "" (or absent, in older checkpoints) when trained from scratch.</summary>
    public const string InitKey = "init";
    /// <summary>The SHA-256 of the haystack's text, for the tasks that read one ("" for the pass key, whose haystack is generated noise).</summary>
    public const string HaystackChecksumKey = "task_haystack_sha256";
    /// <summary>Transformer++ attends to every earlier token; past this many the cache and the quadratic cost are out of reach.</summary>
    public const int FullAttentionLimit = 65_536;

    /// <summary>A task by name, its real-text haystack read from <paramref name="haystack"/> only if the task needs one.</summary>
    public static ILongContextTask CreateTask(string name, ITokenizer tokenizer, string haystack) =>
        LongContextTasks.Create(name, tokenizer, () => Haystack.FromText(Path.GetFileName(haystack), TextCorpus.Load(haystack), tokenizer));

    /// <summary>
    /// <paramref name="count"/> evaluation examples of <paramref name="length"/> model inputs (plus the last answer token)
    /// at one depth, drawn from the haystack's evaluation part; a function of (seed, length, depth) alone.
    /// </summary>
    public static List<TaskExample> Examples(ILongContextTask task, int length, double depth, int count, long seed)
    {
        var random = new Random(BatchSeed.Of(seed, length, (int)Math.Round(depth * 1_000_000)));
        return Enumerable.Range(0, count).Select(_ => task.Generate(length + 1, depth, random, evaluation: true)).ToList();
    }

    /// <summary>
    /// Refuses a length (model inputs; the example has one token more) too short for the task's needles, question and
    /// answers; <paramref name="what"/> names it in the message.
    /// </summary>
    public static void RequireLength(ILongContextTask task, int length, string what)
    {
        if (length + 1 < task.MinimumLength)
            throw new ArgumentException($"A {task.Name} example needs at least {task.MinimumLength} tokens with this tokenizer; {what} is too short.");
    }

    /// <summary>Depths spread evenly over [0, 1] for a task that has them; one (ignored) depth otherwise.</summary>
    public static IReadOnlyList<double> Depths(ILongContextTask task, int count) =>
        !task.HasDepth ? new[] { double.NaN } : count == 1 ? new[] { 0.5 } : Enumerable.Range(0, count).Select(i => i / (double)(count - 1)).ToList();

    /// <summary>Validation during task training: answer loss and accuracy at the training length.</summary>
    public static Validation Validate(TitansLanguageModel model, ILongContextTask task, int length, int examples, int rows, long seed)
    {
        var depths = Depths(task, Math.Min(examples, 5));
        var all = depths.SelectMany(d => Examples(task, length, double.IsNaN(d) ? 0.5 : d, (examples + depths.Count - 1) / depths.Count, seed)).ToList();
        // One pass per batch gives both the answer loss and the greedy answers (examples this short need no streaming).
        double loss = 0, accuracy = 0;
        bool training = model.training;
        model.eval();
        using (no_grad())
            foreach (var batch in all.Chunk(rows))
            {
                using var scope = NewDisposeScope();
                using var tensors = TaskBatches.Tensors(batch);
                Tensor logits = model.forward(tensors.Tokens);
                loss += tensors.Loss(logits).to(ScalarType.Float64).item<double>() * batch.Length;
                var best = logits.argmax(-1).data<long>().ToArray();
                for (int j = 0; j < batch.Length; j++)
                    accuracy += TaskScoring.Check(batch[j], batch[j].AnswerInputs.Select(p => best[j * length + p]).ToArray()).Accuracy;
            }
        model.train(training);
        loss /= all.Count;
        accuracy /= all.Count;
        return new Validation(loss, $"validation answer loss {loss:F4}  accuracy {100 * accuracy:F1}% ({all.Count} examples)",
            new Dictionary<string, object> { ["val_loss"] = loss, ["val_accuracy"] = accuracy, ["val_examples"] = all.Count });
    }

    /// <summary>
    /// Trains <paramref name="model"/> (new, or loaded to fine-tune) on the task at the training config's sequence length.
    /// </summary>
    public static Validation Train(TitansLanguageModel model, TrainingConfig training, ITokenizer tokenizer, ILongContextTask task,
        string haystack, RunOptions run, int validationExamples, string? init = null)
    {
        RequireLength(task, training.SequenceLength, $"--seq-len {training.SequenceLength}");
        using var folder = TrainingRun.HoldNew(run);
        using var trainer = new Trainer(model, training, new TaskBatches(task), Commands.CommonOptions.Environment);
        Console.WriteLine($"Training {ArchitectureNames.Display(model.Config)} ({Quantities.Count(model.parameters().Sum(p => p.numel()))} parameters) " +
                          $"on {task.Description}; {training.Steps} steps × {training.BatchSize} examples of {training.SequenceLength} tokens{TrainingRun.PrefixNote(training)} → {run.Directory}");
        return TrainingRun.Run(folder, trainer, tokenizer, Configure(run, task, haystack, training, validationExamples, init));
    }

    /// <summary>The run options of a task run: task validation, and the task (and the fine-tune's start) in the checkpoint.</summary>
    public static RunOptions Configure(RunOptions run, ILongContextTask task, string haystack, TrainingConfig training, int validationExamples,
        string? init = null) =>
        run with
        {
            Validate = t => Validate(t.Model, task, training.SequenceLength, validationExamples, training.BatchSize, training.Seed + 1),
            Metadata = Metadata(task, haystack, init),
        };

    /// <summary>What a task run's checkpoint records of its task and of the checkpoint a fine-tune started from ("" from scratch).</summary>
    public static IReadOnlyDictionary<string, string> Metadata(ILongContextTask task, string haystack, string? init = null) =>
        new Dictionary<string, string>
        {
            [TaskKey] = task.Name, [HaystackKey] = Path.GetFullPath(haystack), [HaystackChecksumKey] = HaystackChecksum(task.Name, haystack),
            [InitKey] = string.IsNullOrEmpty(init) ? "" : Path.GetFullPath(init),
        };

    /// <summary>The SHA-256 of the text a task reads its haystack from; "" for a task that reads none.</summary>
    static string HaystackChecksum(string task, string haystack) => !LongContextTasks.ReadsText(task) ? ""
        : Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(TextCorpus.Load(haystack))));

    /// <summary>
    /// A resumed task run must read the haystack it trained on, or it would not continue as it would have: the text given
    /// (or found at the recorded path) is checked against the checksum the run recorded (runs of earlier builds record none).
    /// </summary>
    public static void RequireHaystackOf(Checkpoint.Header header, string task, string haystack, string file)
    {
        if (header.Metadata.GetValueOrDefault(HaystackChecksumKey) is string recorded && recorded.Length > 0 && HaystackChecksum(task, haystack) != recorded)
            throw new ArgumentException($"The haystack '{haystack}' differs from the one '{file}' trained with (the SHA-256 of its text differs); " +
                                        "resume with the run's own haystack.");
    }

    /// <summary>
    /// The evaluation examples of every cell, one list per depth, each with the floors of <see cref="TaskFloors"/> for a
    /// model trained at <paramref name="trained"/> tokens.
    /// </summary>
    public static List<(List<TaskExample> Examples, double InReach, double Guessed)> Cells(ILongContextTask task, int length,
        IReadOnlyList<double> depths, int examples, long seed, int trained, string frequentAnswer) =>
        depths.Select(depth =>
        {
            var list = Examples(task, length, double.IsNaN(depth) ? 0.5 : depth, examples, seed);
            return (list, list.Average(e => TaskFloors.InReach(e, trained) ? 1.0 : 0), list.Average(e => TaskFloors.Guessed(e, frequentAnswer)));
        }).ToList();

    /// <summary>
    /// The most frequent answer of the training examples at <paramref name="trained"/> tokens (the guess floor's answer);
    /// at the task's shortest example for a model trained shorter (a language model scored on a task).
    /// </summary>
    public static string FrequentAnswer(ILongContextTask task, int trained) => TaskFloors.MostFrequentAnswer(task, Math.Max(trained + 1, task.MinimumLength));

    /// <summary>Scores every (length, depth) cell of a model trained at <paramref name="trained"/> tokens, reporting each as it finishes.</summary>
    public static List<GridCell> Grid(TitansLanguageModel model, ILongContextTask task, int trained, IReadOnlyList<int> lengths,
        IReadOnlyList<double> depths, int examples, int chunk, int rows, long seed, Action<GridCell> report)
    {
        var cells = new List<GridCell>();
        string frequent = FrequentAnswer(task, trained);
        foreach (int length in lengths)
        {
            if (model.Config.CacheGrowsWithContext && length > FullAttentionLimit)
            {
                foreach (double depth in depths)
                    Add(new GridCell(length, depth, double.NaN, 0, double.NaN,
                        $"Transformer++ attends to every earlier token; {length:N0} is past the {FullAttentionLimit:N0} this runs it to", double.NaN, double.NaN));
                continue;
            }
            // Every depth of one length is scored in one call, so rows of a batch can hold needles at different
            // depths: ten 2M-token haystacks at ten depths stream side by side instead of one after another.
            var floors = Cells(task, length, depths, examples, seed, trained, frequent);
            var lists = floors.Select(f => f.Examples).ToList();
            var watch = Stopwatch.StartNew();
            long total = (long)lists.Sum(l => l.Count) * length;
            double lastShown = 0;
            void Progress(long streamed)                       // a line a minute, so a 2M-token grid is not silent for half an hour
            {
                if (watch.Elapsed.TotalSeconds - lastShown < 60 || streamed >= total) return;
                lastShown = watch.Elapsed.TotalSeconds;
                Console.WriteLine($"  length {LengthLabel(length),6}  streamed {streamed:N0} of {total:N0} tokens ({streamed / lastShown:N0} tok/s)");
            }
            try
            {
                var scores = TaskScoring.Score(model, lists.SelectMany(l => l).ToList(), chunk, rows, Progress);
                double tokensPerSecond = (double)scores.Count * length / watch.Elapsed.TotalSeconds;
                int at = 0;
                for (int d = 0; d < depths.Count; d++)
                {
                    var cellScores = scores.Skip(at).Take(lists[d].Count).ToList();
                    at += lists[d].Count;
                    Add(new GridCell(length, depths[d], cellScores.Average(s => s.Accuracy), cellScores.Count, tokensPerSecond, null,
                        floors[d].InReach, floors[d].Guessed));
                }
            }
            catch (NonFiniteValueException e)
            {
                for (int d = 0; d < depths.Count; d++)
                    Add(new GridCell(length, depths[d], double.NaN, lists[d].Count, double.NaN, $"the memory diverged: {e.Message}",
                        floors[d].InReach, floors[d].Guessed));
            }
        }
        return cells;

        void Add(GridCell cell)
        {
            cells.Add(cell);
            report(cell);
        }
    }

    /// <summary>"256", "4K", "2M": a length as a column header.</summary>
    public static string LengthLabel(int length) =>
        length >= 1 << 20 && length % (1 << 20) == 0 ? $"{length >> 20}M" : length >= 1024 && length % 1024 == 0 ? $"{length / 1024}K" : $"{length:N0}";

    public static string DepthLabel(double depth) => double.IsNaN(depth) ? "scattered" : $"{100 * depth:0}%";

    /// <summary>Accuracy as a table cell: a percentage, or "—" with the reason in a footnote list.</summary>
    public static string Percent(double accuracy) => double.IsNaN(accuracy) ? "—" : $"{100 * accuracy:0.#}%";

    /// <summary>Depth-averaged accuracy of one length (NaN when a cell failed).</summary>
    public static double MeanAt(IEnumerable<GridCell> cells, int length)
    {
        var row = cells.Where(c => c.Length == length).ToList();
        return row.Any(c => double.IsNaN(c.Accuracy)) ? double.NaN : row.Average(c => c.Accuracy);
    }

    /// <summary>
    /// The floor rows of a table by length (label, then one cell per length) for a model trained at
    /// <paramref name="trained"/> tokens: averaged over depths, as the accuracy is.
    /// </summary>
    public static IEnumerable<(string Label, IReadOnlyList<string> Cells)> FloorRows(IReadOnlyList<GridCell> cells, IReadOnlyList<int> lengths, int trained)
    {
        string At(int length, Func<GridCell, double> floor) => Percent(cells.Where(c => c.Length == length).Average(floor));
        yield return ($"*floor: needle within L = {trained:N0}*", lengths.Select(l => At(l, c => c.InReach)).ToList());
        yield return ("*floor: most frequent answer*", lengths.Select(l => At(l, c => c.Guessed)).ToList());
    }

    /// <summary>What the floor rows mean, for the paragraph under a table that has them.</summary>
    public const string FloorNote =
        "The floors are what a model scores without reading far back: the share of examples whose needle (every fact) lies " +
        "within the last L tokens before the answer, which a model that reads only as far back as it trained can answer, " +
        "and the share of answers the training examples' most frequent answer gets right.";

    /// <summary>The grid as a depth × length table (with a mean row and the floors) and heat map, for a model trained at <paramref name="trained"/> tokens.</summary>
    public static void Save(string markdown, string png, string title, string command, string about, IReadOnlyList<GridCell> cells, int trained)
    {
        var lengths = cells.Select(c => c.Length).Distinct().ToList();
        var depths = cells.Select(c => c.Depth).Distinct().ToList();
        var grid = new double[depths.Count, lengths.Count];
        for (int d = 0; d < depths.Count; d++)
            for (int l = 0; l < lengths.Count; l++)
                grid[d, l] = cells.First(c => c.Length == lengths[l] && (c.Depth == depths[d] || double.IsNaN(c.Depth) && double.IsNaN(depths[d]))).Accuracy;
        var rows = depths.Select((depth, d) => (IReadOnlyList<string>)new[] { DepthLabel(depth) }
            .Concat(lengths.Select((_, l) => Percent(grid[d, l]))).ToList()).ToList();
        if (depths.Count > 1) rows.Add(new[] { "**mean**" }.Concat(lengths.Select(l => $"**{Percent(MeanAt(cells, l))}**")).ToList());
        rows.AddRange(FloorRows(cells, lengths, trained).Select(f => (IReadOnlyList<string>)new[] { f.Label }.Concat(f.Cells).ToList()));
        var report = new MarkdownReport(title, command).Paragraph(about + " " + FloorNote)
            .Table(new[] { "depth \\ length" }.Concat(lengths.Select(LengthLabel)).ToList(), rows);
        var speeds = lengths.Select(l => cells.Where(c => c.Length == l && !double.IsNaN(c.TokensPerSecond)).Select(c => c.TokensPerSecond).DefaultIfEmpty(double.NaN).Average()).ToList();
        report.Table(new[] { "length" }.Concat(lengths.Select(LengthLabel)).ToList(),
            new[] { (IReadOnlyList<string>)new[] { "tokens/s" }.Concat(speeds.Select(s => double.IsNaN(s) ? "—" : $"{s:N0}")).ToList() });
        var failures = cells.Where(c => c.Failure is not null).Select(c => $"- {LengthLabel(c.Length)} at {DepthLabel(c.Depth)}: {c.Failure}").Distinct().ToList();
        if (failures.Count > 0) report.Paragraph("No accuracy where:\n\n" + string.Join("\n", failures));
        report.Paragraph($"Peak resident memory of the process: {ProcessMemory.PeakRss() / (1024.0 * 1024):N0} MiB.");
        report.Paragraph($"![{title}]({Path.GetFileName(png)})");
        report.Save(markdown);
        HeatMap.Save(png, title, "context length (tokens)", "needle depth", lengths.Select(LengthLabel).ToList(), depths.Select(DepthLabel).ToList(), grid);
    }
}
