using System.CommandLine;
using System.Diagnostics;
using Titans.Cli.Reporting;
using Titans.Cli.Runs;
using Titans.Dna;
using Titans.Text;
using Titans.Models;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>`titans dna pretrain | classify`: next-nucleotide modelling on genomes, and classification of labelled sequences.</summary>
public static class DnaCommands
{
    public static Command Create()
    {
        var dna = new Command("dna", "DNA: pretrain on genomes (next nucleotide), classify labelled sequences (GenomicsBenchmarks).");
        dna.Subcommands.Add(Pretrain());
        dna.Subcommands.Add(Evaluate());
        dna.Subcommands.Add(Classify());
        return dna;
    }

    static readonly string GenomeFolder = Path.Combine("data", "genomes");

    /// <summary>The nucleotides of every record of a FASTA file, records separated by the separator token.</summary>
    public static long[] GenomeTokens(string path)
    {
        if (!File.Exists(path) && Path.GetFullPath(path).StartsWith(Path.GetFullPath(GenomeFolder)))
            throw new FileNotFoundException($"'{path}' is missing: run scripts/fetch-corpora.sh genomes (E. coli genomes from Debian's ragout-examples).", path);
        var records = Fasta.Load(path);
        return NucleotideTokenizer.Instance.Encode(string.Join("\n", records.Select(r => r.Sequence)));
    }

    /// <summary>Checkpoint metadata keys of the genomes a pretraining run trained and validated on (full paths).</summary>
    public const string GenomeKey = "genome", HeldOutKey = "held_out";

    static Command Pretrain()
    {
        var options = new TrainingOptions();
        var genome = new Option<string>("--genome") { Description = "FASTA or FASTA.gz to train on", DefaultValueFactory = _ => Path.Combine(GenomeFolder, "MG1655-K12.fasta.gz") };
        var heldOut = new Option<string>("--held-out") { Description = "FASTA or FASTA.gz scored for bits per nucleotide (never trained on)", DefaultValueFactory = _ => Path.Combine(GenomeFolder, "DH1.fasta.gz") };
        var evalTokens = new Option<int>("--eval-tokens") { Description = "held-out nucleotides scored each time", DefaultValueFactory = _ => 32768 };
        var command = new Command("pretrain",
            "Next-nucleotide modelling on a genome (default E. coli K-12 MG1655), validated in bits per nucleotide on a held-out genome (default E. coli DH1).")
            { genome, heldOut, evalTokens };
        foreach (var option in options.All.Where(o => o != options.Tokenizer)) command.Options.Add(option);
        options.Architecture.DefaultValueFactory = _ => "lmm";
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var run = options.Run(parse, TrainingOptions.Positive(parse, evalTokens), device);
            string trainFile = parse.GetValue(genome)!, heldOutFile = parse.GetValue(heldOut)!;
            TokenData Data(TrainingConfig training) =>
                new(GenomeTokens(trainFile), GenomeTokens(heldOutFile), training.SequenceLength, training.StreamPrefix);
            if (parse.GetValue(options.Resume) is string from)
            {
                options.RefuseSettingsOnResume(parse, genome, heldOut, evalTokens);
                string file = TrainingOptions.CheckpointPath(from);
                var (trainer, header) = Checkpoint.Resume(file, h =>
                {
                    TrainingRun.RequireRunOf("dna pretrain", h, file);
                    // The genomes the run recorded unless given (copies: the run checks their tokens).
                    if (!CommonOptions.Given(parse, genome)) trainFile = h.Metadata.GetValueOrDefault(GenomeKey) ?? trainFile;
                    if (!CommonOptions.Given(parse, heldOut)) heldOutFile = h.Metadata.GetValueOrDefault(HeldOutKey) ?? heldOutFile;
                    return Data(h.Training);
                }, options.ResumeSteps(parse), device, CommonOptions.Environment);
                using (trainer)
                using (trainer.Model)
                    TrainingRun.Continue(trainer, header, file, run);
                return 0;
            }
            var tokenizer = NucleotideTokenizer.Instance;
            TitansConfig config = options.Model(parse, tokenizer);
            var training = options.Training(parse, new TrainingConfig().ValidationFraction);
            string folder = parse.GetValue(options.Output) ?? Path.Combine("runs", "dna", $"pretrain-{TrainingRun.FolderName(config.Architecture)}-{parse.GetValue(options.Preset)}");
            TrainingRun.Start(config, training, tokenizer, Data(training), $"{Path.GetFileName(trainFile)} (held out: {Path.GetFileName(heldOutFile)})",
                run with { Directory = folder, Metadata = new Dictionary<string, string> { [GenomeKey] = Path.GetFullPath(trainFile), [HeldOutKey] = Path.GetFullPath(heldOutFile) } });
            return 0;
        }));
        return command;
    }

    static Command Evaluate()
    {
        var checkpoint = new Option<string>("--checkpoint", "-c") { Description = "a `dna pretrain` run folder or checkpoint file", Required = true };
        var genomes = new Option<string>("--genomes")
        {
            Description = "comma-separated FASTA/FASTA.gz files to score",
            DefaultValueFactory = _ => string.Join(",", new[] { "DH1", "VCholerae-H1", "SAureus-COL" }.Select(g => Path.Combine(GenomeFolder, g + ".fasta.gz"))),
        };
        var reference = new Option<string>("--markov-genome") { Description = "genome the Markov references are fitted on (the pretraining genome)", DefaultValueFactory = _ => Path.Combine(GenomeFolder, "MG1655-K12.fasta.gz") };
        var orders = new Option<string>("--markov-orders") { Description = $"comma-separated Markov orders (0 to {MarkovModel.MaxOrder})", DefaultValueFactory = _ => "0,2,4,6,8" };
        var limit = new Option<int>("--nucleotides") { Description = "nucleotides scored from the start of each genome", DefaultValueFactory = _ => 500_000 };
        var report = new Option<string?>("--report") { Description = "also write the table here" };
        var command = new Command("eval",
            "Bits per nucleotide of a pretrained checkpoint on genomes, streamed through its state, beside order-k Markov references fitted on the pretraining genome.")
            { checkpoint, genomes, reference, orders, limit, report };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var (model, header) = Checkpoint.LoadModel(TrainingOptions.CheckpointPath(parse.GetValue(checkpoint)!), device);
            using (model)
            {
                if (header.Tokenizer.Name != NucleotideTokenizer.Instance.Name)
                    throw new ArgumentException($"The checkpoint was trained with the {header.Tokenizer.Name} tokenizer; `dna eval` needs a `dna pretrain` checkpoint.");
                int count = parse.GetValue(limit);
                if (count < 1) throw new ArgumentException($"--nucleotides must be at least 1, got {count}.");
                var markovOrders = Lists.Parse(parse.GetValue(orders), "--markov-orders", $"integers from 0 to {MarkovModel.MaxOrder}",
                    x => int.TryParse(x, out int k) && k is >= 0 and <= MarkovModel.MaxOrder ? k : (int?)null);
                var referenceTokens = GenomeTokens(parse.GetValue(reference)!);
                var markov = markovOrders.Select(k => MarkovModel.Fit(referenceTokens, k)).ToList();
                string described = $"{ArchitectureNames.Display(header.Model)} step {header.Step}";
                var rows = new List<IReadOnlyList<string>>();
                foreach (string genome in Lists.Items(parse.GetValue(genomes)))
                {
                    var tokens = GenomeTokens(genome);
                    long[] scored = tokens[..Math.Min(count, tokens.Length)];
                    var watch = Stopwatch.StartNew();
                    var result = Evaluation.Run(model, scored, header.Tokenizer, chunk: 512, maxContext: header.Training.SequenceLength,
                        shareCores: Titans.Runtime.CoreShare.Rebalance);
                    var markovBits = markov.Select(m => m.BitsPerNucleotide(scored)).ToList();
                    rows.Add(new[] { Path.GetFileName(genome), $"{result.Bytes:N0}", $"**{result.BitsPerByte:F4}**" }.Concat(markovBits.Select(b => $"{b:F4}")).ToList());
                    Console.WriteLine($"{Path.GetFileName(genome)}: {described} {result.BitsPerByte:F4} bits/nucleotide over {result.Bytes:N0} nucleotides " +
                                      $"({result.Tokens / watch.Elapsed.TotalSeconds:N0} tok/s); Markov " +
                                      string.Join(", ", markov.Zip(markovBits, (m, b) => $"order {m.Order} {b:F4}")));
                }
                if (parse.GetValue(report) is string path)
                    new MarkdownReport("Bits per nucleotide", CommonOptions.CommandLine(parse))
                        .Paragraph($"{described}, pretrained on {header.Training.SequenceLength}-nucleotide sequences; the first {count:N0} nucleotides of each genome " +
                                   $"streamed through its state in chunks of 512 (Transformer++ restarts every {header.Training.SequenceLength}); Markov references " +
                                   $"of order k fitted on {Path.GetFileName(parse.GetValue(reference)!)} (add-half smoothing). 2 bits is a uniform guess over four bases.")
                        .Table(new[] { "genome", "nucleotides", "model" }.Concat(markov.Select(m => $"Markov order {m.Order}")).ToList(), rows)
                        .Save(path);
            }
            return 0;
        }));
        return command;
    }

    static Command Classify()
    {
        var data = new Option<string>("--data")
        {
            Description = "TSV with 'seq' and 'label' columns", DefaultValueFactory = _ => Path.Combine("data", "genomic-benchmarks", "human_enhancers_cohn.tsv"),
        };
        var models = new Option<string>("--models") { Description = "comma-separated: lmm, mac, mag, mal, transformer++, swa, cnn", DefaultValueFactory = _ => "lmm,mac,transformer++,cnn" };
        var preset = new Option<string>("--preset") { Description = "model size of the sequence models (the CNN is sized to match)", DefaultValueFactory = _ => "tiny" };
        var layers = new Option<int?>("--layers") { Description = "override the preset's layer count" };
        var pretrained = new Option<string?>("--pretrained") { Description = "a `dna pretrain` checkpoint: the model of its architecture starts from it" };
        var optimizer = new OptimizerOptions(new TrainingConfig { Steps = 1000, BatchSize = 32, LearningRate = 1e-3, WarmupSteps = 50, WeightDecay = 0.05 },
            steps: "most optimizer steps per model", batch: "sequences per micro-batch");
        var evalEvery = new Option<int>("--eval-every") { Description = "steps between validations", DefaultValueFactory = _ => 100 };
        var patience = new Option<int>("--patience") { Description = "validations without a new best before stopping", DefaultValueFactory = _ => 4 };
        var splitSeed = new Option<long>("--split-seed") { Description = "seed of the stratified 70/10/20 re-split", DefaultValueFactory = _ => 1 };
        var output = new Option<string?>("--out") { Description = "folder of results.md and results.json (default: runs/dna/<data set>)" };
        var report = new Option<string?>("--report") { Description = "also write the table here (e.g. docs/dna/enhancers.md)" };
        var force = CommonOptions.Force();
        var command = new Command("classify",
            "Top-1 accuracy of sequence models and a CNN at equal size on labelled sequences, re-split seeded and stratified.")
            { data, models, preset, layers, pretrained, optimizer.Steps, optimizer.Batch, optimizer.Accumulate, optimizer.LearningRate, optimizer.Warmup,
              optimizer.Decay, evalEvery, patience, optimizer.Seed, splitSeed, output, force, report };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var training = optimizer.Apply(parse, new TrainingConfig { SequenceLength = 1, Beta2 = 0.999 }).Validate();
            string file = parse.GetValue(data)!;
            var names = Lists.NonEmpty(Lists.Items(parse.GetValue(models)), "--models");
            foreach (var n in names.Where(n => !n.Equals("cnn", StringComparison.OrdinalIgnoreCase))) ArchitectureNames.Parse(n);
            string? start = parse.GetValue(pretrained) is string given ? TrainingOptions.CheckpointPath(given) : null;   // a run folder names its checkpoint
            DnaClassificationRun.Run(new DnaClassificationRun.Options
            {
                Data = file, SplitSeed = parse.GetValue(splitSeed), Models = names, Preset = parse.GetValue(preset)!, Layers = parse.GetValue(layers),
                Pretrained = start, Training = training, EvaluateEvery = parse.GetValue(evalEvery), Patience = parse.GetValue(patience),
                Directory = parse.GetValue(output) ?? Path.Combine("runs", "dna", Path.GetFileNameWithoutExtension(file)), Force = parse.GetValue(force),
                Report = parse.GetValue(report), CommandLine = CommonOptions.CommandLine(parse),
            }, device);
            return 0;
        }));
        return command;
    }
}
