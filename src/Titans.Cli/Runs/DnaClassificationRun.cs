using System.Text.Json;
using TorchSharp;
using Titans.Cli.Reporting;
using Titans.Dna;
using Titans.Text;
using Titans.Models;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Cli.Runs;

/// <summary>
/// `dna classify`: re-splits a labelled set (seeded, stratified), trains each model with early stopping on validation
/// accuracy, scores top-1 accuracy on the test part, and writes a table beside the paper's Table 4.
/// </summary>
public static class DnaClassificationRun
{
    /// <summary>What a classification run is given, by name.</summary>
    public sealed record Options
    {
        /// <summary>The labelled TSV, and the seed of its stratified 70/10/20 re-split.</summary>
        public required string Data { get; init; }
        public long SplitSeed { get; init; } = 1;
        /// <summary>The models (architectures and "cnn"), their preset and layer count, and a `dna pretrain` checkpoint to start from.</summary>
        public required IReadOnlyList<string> Models { get; init; }
        public string Preset { get; init; } = "tiny";
        public int? Layers { get; init; }
        public string? Pretrained { get; init; }
        public required TrainingConfig Training { get; init; }
        /// <summary>Early stopping: validation every this many steps, stop after this many without a new best.</summary>
        public int EvaluateEvery { get; init; } = 100;
        public int Patience { get; init; } = 4;
        /// <summary>The run folder (and --force), where else the table goes, and the command as typed.</summary>
        public required string Directory { get; init; }
        public bool Force { get; init; }
        public string? Report { get; init; }
        public string CommandLine { get; init; } = "";
    }

    /// <param name="ClassAccuracy">Test accuracy per class, in the order of the data set's classes (empty where training diverged).</param>
    public sealed record Result(string Model, long Parameters, bool Pretrained, double ValidationAccuracy, double TestAccuracy, int Steps, int BestStep, double Seconds,
        IReadOnlyList<double> ClassAccuracy);

    /// <summary>The paper's Table 4 (top-1 accuracy, %), by data set file name.</summary>
    static readonly Dictionary<string, (string Model, double Accuracy)[]> PaperColumns = new(StringComparer.OrdinalIgnoreCase)
    {
        ["human_enhancers_cohn"] = new[] { ("Neural memory (Titans)", 75.2), ("HyenaDNA", 74.2), ("Transformer++", 73.4), ("CNN", 69.5) },
        ["human_promoters_nontata"] = new[] { ("Neural memory (Titans)", 96.6), ("HyenaDNA", 96.6), ("Transformer++", 94.4), ("CNN", 84.6) },
    };

    public static IReadOnlyList<Result> Run(Options options, Device device)
    {
        var all = LabelledSequences.Load(options.Data);
        var (train, validation, test) = all.StratifiedSplit(options.SplitSeed);
        // Checked before any training: an empty part would only show as a NaN accuracy, after every model had trained.
        if (validation.Count == 0 || test.Count == 0)
            throw new ArgumentException($"'{options.Data}' has {all.Count:N0} sequences; the stratified 70/10/20 split leaves {validation.Count} for validation " +
                                        $"and {test.Count} for test. Give at least 10 sequences of every class.");
        string name = Path.GetFileNameWithoutExtension(options.Data);
        string splitNote = $"{all.Count:N0} sequences re-split seeded (split seed {options.SplitSeed}) and stratified by label into " +
                           $"{train.Count:N0} train / {validation.Count:N0} validation / {test.Count:N0} test";
        Console.WriteLine($"{name}: {splitNote}; {all.Classes} classes: {Classes(all, train, validation, test)}");
        TitansLanguageModel? pretrained = null;
        Checkpoint.Header? pretrainedHeader = null;
        if (options.Pretrained is string file)
        {
            (pretrained, pretrainedHeader) = Checkpoint.LoadModel(file);
            if (pretrainedHeader.Tokenizer.Name != NucleotideTokenizer.Instance.Name)
                throw new ArgumentException($"'{file}' was trained with the {pretrainedHeader.Tokenizer.Name} tokenizer; fine-tuning needs a `dna pretrain` checkpoint.");
        }
        var results = new List<Result>();
        // One folder per data set: a run on another one is refused here instead of replacing this one's results.
        using var folder = Commands.CommonOptions.Writes ? RunFolder.Acquire(options.Directory, "dna-classify", options.Force,
            identity: new Dictionary<string, string> { ["data"] = Path.GetFullPath(options.Data) }) : null;
        try
        {
            long target = SequenceClassifier.ParameterCount(Config(options, Architecture.TransformerPlusPlus), all.Classes);
            foreach (string model in options.Models)
            {
                manual_seed(options.Training.Seed);
                bool cnn = model.Equals("cnn", StringComparison.OrdinalIgnoreCase);
                Architecture architecture = cnn ? Architecture.TransformerPlusPlus : ArchitectureNames.Parse(model);
                bool fromPretrained = !cnn && pretrainedHeader?.Model.Architecture == architecture;
                var config = fromPretrained ? pretrainedHeader!.Model : Config(options, architecture);
                using nn.Module<Tensor, Tensor> classifier = cnn
                    ? new ConvolutionalClassifier(NucleotideTokenizer.Instance.VocabularySize, 16,
                        ConvolutionalClassifier.ChannelsFor(target, NucleotideTokenizer.Instance.VocabularySize, 16, all.Classes), all.Classes)
                    : new SequenceClassifier("classifier", config, all.Classes);
                if (fromPretrained) ((SequenceClassifier)classifier).InitializeFrom(pretrained!);
                classifier.to(device);
                string display = (cnn ? "CNN" : ArchitectureNames.Display(config)) + (fromPretrained ? " (pretrained)" : "");
                long parameters = classifier.parameters().Sum(p => p.numel());
                Console.WriteLine($"{display}: {parameters:N0} parameters");
                using var trainer = new Trainer<nn.Module<Tensor, Tensor>>(classifier, options.Training, new ClassificationObjective(classifier, train, device),
                    Commands.CommonOptions.Environment);
                var watch = System.Diagnostics.Stopwatch.StartNew();
                try
                {
                    var fit = EarlyStopping.Train(trainer, () => SequenceClassification.Accuracy(classifier, validation, device), lowerIsBetter: false,
                        options.EvaluateEvery, options.Patience,
                        p => Console.WriteLine($"  step {p.Step,5}  train loss {p.TrainLoss:F4}  validation accuracy {100 * p.Score:F2}%{(p.Best ? "  *" : "")}"));
                    var (accuracy, perClass) = SequenceClassification.Score(classifier, test, device);
                    Console.WriteLine($"  test accuracy {100 * accuracy:F2}%  (best step {fit.BestStep} of {fit.Steps}, {fit.Elapsed.TotalSeconds:F0} s); by class " +
                                      string.Join(", ", all.ClassNames.Zip(perClass, (c, a) => $"{c} {Percent(a)}")));
                    results.Add(new Result(display, parameters, fromPretrained, fit.BestScore, accuracy, fit.Steps, fit.BestStep, fit.Elapsed.TotalSeconds, perClass));
                }
                catch (TrainingDivergedException e)
                {
                    // One model's failure is a row of the table, not the end of the others (docs/dna.md: the CNN's NaNs).
                    Console.WriteLine($"  {e.Message}");
                    results.Add(new Result(display, parameters, fromPretrained, double.NaN, double.NaN, trainer.Step + 1, 0, watch.Elapsed.TotalSeconds, []));
                }
                if (folder is not null) Save(folder, options, name, splitNote, all, (train, validation, test), results);   // after every model, so a later failure keeps what was measured
            }
        }
        finally { pretrained?.Dispose(); }
        Console.WriteLine($"Results: {Path.Combine(options.Directory, "results.md")}");
        return results;
    }

    /// <summary>"ei (train 533, validation 76, test 153), ie (…)": each class and its sequences per part.</summary>
    static string Classes(LabelledSequences all, LabelledSequences train, LabelledSequences validation, LabelledSequences test)
    {
        int[] a = train.CountPerClass(), b = validation.CountPerClass(), c = test.CountPerClass();
        return string.Join(", ", all.ClassNames.Select((n, k) => $"{n} (train {a[k]:N0}, validation {b[k]:N0}, test {c[k]:N0})"));
    }

    static void Save(RunFolder folder, Options options, string name, string splitNote, LabelledSequences all,
        (LabelledSequences Train, LabelledSequences Validation, LabelledSequences Test) parts, IReadOnlyList<Result> results)
    {
        folder.Write("results.json", ResultsJson.Serialize(new { classes = all.ClassNames, results }));
        var report = new MarkdownReport($"DNA classification: {name}", options.CommandLine)
            .Paragraph($"**Re-split, not the official split**: only the official test split of this GenomicsBenchmarks set is available, so its " +
                       $"{splitNote}. These accuracies are therefore not directly comparable to published ones, which train on the full " +
                       $"training split. Each model trains with early stopping on validation accuracy (at most {options.Training.Steps} steps of " +
                       $"{options.Training.BatchSize} sequences, validation every {options.EvaluateEvery} steps, patience {options.Patience}, " +
                       $"AdamW lr {options.Training.LearningRate:G3}, seed {options.Training.Seed}); time is training plus validation.")
            .Table(new[] { "model", "parameters", "validation accuracy", "test accuracy", "best step / steps", "time" },
                results.Select(r => (IReadOnlyList<string>)new[]
                {
                    r.Model, $"{r.Parameters:N0}", Percent(r.ValidationAccuracy), double.IsNaN(r.TestAccuracy) ? $"diverged (non-finite) at step {r.Steps}" : $"**{Percent(r.TestAccuracy)}**",
                    $"{r.BestStep} / {r.Steps}", $"{r.Seconds:F0} s",
                }));
        int[] train = parts.Train.CountPerClass(), validation = parts.Validation.CountPerClass(), test = parts.Test.CountPerClass();
        report.Paragraph("The classes (the labels of the file, sorted), their sequences in each part, and each model's test accuracy on that class:")
            .Table(new[] { "class", "train", "validation", "test" }.Concat(results.Select(r => r.Model)).ToList(),
                all.ClassNames.Select((c, k) => (IReadOnlyList<string>)new[] { $"`{c.Replace("|", "\\|")}`", $"{train[k]:N0}", $"{validation[k]:N0}", $"{test[k]:N0}" }
                    .Concat(results.Select(r => k < r.ClassAccuracy.Count ? Percent(r.ClassAccuracy[k]) : "–")).ToList()));
        if (PaperColumns.TryGetValue(name, out var paper))
            report.Paragraph("The paper's Table 4 on this set (official split; not run here):")
                .Table(new[] { "model (paper)", "top-1 accuracy" }, paper.Select(p => (IReadOnlyList<string>)new[] { p.Model, $"{p.Accuracy:F1}%" }));
        report.Save(folder.Claim("results.md"));
        if (options.Report is string path) report.Save(path);
    }

    static string Percent(double value) => double.IsNaN(value) ? "–" : $"{100 * value:F2}%";

    /// <summary>A preset's shape for nucleotides (vocabulary 7), balanced to the preset's Transformer++.</summary>
    public static TitansConfig Config(Options options, Architecture architecture) =>
        Presets.Get(options.Preset, architecture, options.Layers, vocabulary: NucleotideTokenizer.Instance.VocabularySize);
}
