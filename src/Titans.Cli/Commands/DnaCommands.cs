using System.CommandLine;
using Titans.Cli.Training;
using Titans.Dna;
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
            var run = new RunOptions("", TrainingOptions.Positive(parse, options.LogEvery), TrainingOptions.Positive(parse, options.EvalEvery),
                TrainingOptions.Positive(parse, evalTokens), TrainingOptions.Positive(parse, options.SaveEvery)) { Device = device };
            string trainFile = parse.GetValue(genome)!, heldOutFile = parse.GetValue(heldOut)!;
            TokenData Data(TrainingConfig training) =>
                new(GenomeTokens(trainFile), GenomeTokens(heldOutFile), training.SequenceLength, training.StreamPrefix);
            if (parse.GetValue(options.Resume) is string from)
            {
                string file = TrainingOptions.CheckpointPath(from);
                var (trainer, header) = Checkpoint.Resume(file, h => Data(h.Training), options.ResumeSteps(parse), device);
                using (trainer)
                using (trainer.Model)
                {
                    Console.WriteLine($"Resuming {ArchitectureNames.Display(trainer.Model.Config)} at step {trainer.Step} of {trainer.Config.Steps} from {file}");
                    TrainingRun.Run(trainer, header.Tokenizer, run with { Directory = Path.GetDirectoryName(Path.GetFullPath(file))! }, header.ElapsedMilliseconds);
                }
                return 0;
            }
            var tokenizer = NucleotideTokenizer.Instance;
            TitansConfig config = options.Model(parse, tokenizer);
            var training = options.Training(parse, new TrainingConfig().ValidationFraction);
            string folder = parse.GetValue(options.Output) ?? Path.Combine("runs", "dna", $"pretrain-{TrainingRun.FolderName(config.Architecture)}-{parse.GetValue(options.Preset)}");
            TrainingRun.Start(config, training, tokenizer, Data(training), $"{Path.GetFileName(trainFile)} (held out: {Path.GetFileName(heldOutFile)})",
                run with { Directory = folder });
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
        var models = new Option<string>("-a", "--models") { Description = "comma-separated: lmm, mac, mag, mal, transformer++, swa, cnn", DefaultValueFactory = _ => "lmm,mac,transformer++,cnn" };
        var preset = new Option<string>("--preset") { Description = "model size of the sequence models (the CNN is sized to match)", DefaultValueFactory = _ => "tiny" };
        var layers = new Option<int?>("--layers") { Description = "override the preset's layer count" };
        var pretrained = new Option<string?>("--pretrained") { Description = "a `dna pretrain` checkpoint: the model of its architecture starts from it" };
        var steps = new Option<int>("--steps") { Description = "most optimizer steps per model", DefaultValueFactory = _ => 1000 };
        var batch = new Option<int>("--batch-size") { Description = "sequences per step", DefaultValueFactory = _ => 32 };
        var lr = new Option<double>("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => 1e-3 };
        var warmup = new Option<int>("--warmup") { Description = "linear warmup steps", DefaultValueFactory = _ => 50 };
        var evalEvery = new Option<int>("--eval-every") { Description = "steps between validations", DefaultValueFactory = _ => 100 };
        var patience = new Option<int>("--patience") { Description = "validations without a new best before stopping", DefaultValueFactory = _ => 4 };
        var seed = new Option<long>("--seed") { Description = "seed of the weights and batches", DefaultValueFactory = _ => 1 };
        var splitSeed = new Option<long>("--split-seed") { Description = "seed of the stratified 70/10/20 re-split", DefaultValueFactory = _ => 1 };
        var output = new Option<string?>("--out") { Description = "folder of results.md and results.json (default: runs/dna/<data set>)" };
        var report = new Option<string?>("--report") { Description = "also write the table here (e.g. docs/dna/enhancers.md)" };
        var command = new Command("classify",
            "Top-1 accuracy of sequence models and a CNN at equal size on labelled sequences, re-split seeded and stratified.")
            { data, models, preset, layers, pretrained, steps, batch, lr, warmup, evalEvery, patience, seed, splitSeed, output, report };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var training = new TrainingConfig
            {
                Steps = parse.GetValue(steps), BatchSize = parse.GetValue(batch), SequenceLength = 1, LearningRate = parse.GetValue(lr),
                WarmupSteps = parse.GetValue(warmup), WeightDecay = 0.05, Beta2 = 0.999, Seed = parse.GetValue(seed),
            }.Validate();
            string file = parse.GetValue(data)!;
            var names = parse.GetValue(models)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (names.Length == 0) throw new ArgumentException("-a needs at least one model.");
            foreach (var n in names.Where(n => !n.Equals("cnn", StringComparison.OrdinalIgnoreCase))) ArchitectureNames.Parse(n);
            DnaClassificationRun.Run(new DnaClassificationRun.Options(file, names, parse.GetValue(preset)!, parse.GetValue(layers), parse.GetValue(pretrained),
                training, parse.GetValue(evalEvery), parse.GetValue(patience), parse.GetValue(splitSeed),
                parse.GetValue(output) ?? Path.Combine("runs", "dna", Path.GetFileNameWithoutExtension(file)), parse.GetValue(report),
                CommonOptions.CommandLine(parse)), device);
            return 0;
        }));
        return command;
    }
}
