using System.CommandLine;
using Titans.Cli.Runs;
using Titans.Models;
using Titans.Runtime;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>The options `train` and `task train` share: the model, the tokenizer, the optimizer and the run folder.</summary>
public sealed class TrainingOptions
{
    static readonly TrainingConfig Defaults = new();
    public readonly Option<string> Preset = new("--preset") { Description = $"model size ({string.Join(", ", Presets.Names)})", DefaultValueFactory = _ => "tiny" };
    public readonly Option<string> Architecture = new("--architecture", "-a") { Description = "transformer++, swa, lmm, mac, mag or mal", DefaultValueFactory = _ => "mac" };
    public readonly Option<string> MacWrite = MacWriteOption();
    public readonly SharedTrainingOptions Shared = new();
    public readonly Option<string?> ModelConfig = new("--model-config") { Description = "a model configuration JSON file (as `titans models --json` prints) instead of a preset" };
    public readonly Option<string> Tokenizer = new("--tokenizer") { Description = "bytes, o200k_base, cl100k_base (tiktoken BPE) or a SentencePiece .model file", DefaultValueFactory = _ => "bytes" };
    public readonly OptimizerOptions Optimizer = new(Defaults);
    public Option<int> Steps => Optimizer.Steps;
    public readonly Option<int> Length;
    public readonly Option<double> Clip = new("--clip") { Description = "maximum gradient norm (0: off)", DefaultValueFactory = _ => Defaults.GradientClip };
    public readonly Option<string?> Output = new("--out") { Description = "run folder (default: runs/<architecture>-<preset>)" };
    public readonly Option<bool> Force = CommonOptions.Force();
    public readonly Option<string?> Resume = new("--resume") { Description = "continue the run in this folder (or checkpoint file) bit for bit; --steps may extend it" };
    public readonly Option<int> LogEvery = new("--log-every") { Description = "steps between progress lines", DefaultValueFactory = _ => 10 };
    public readonly Option<int> EvalEvery = new("--eval-every") { Description = "steps between validations", DefaultValueFactory = _ => 100 };
    public readonly Option<int> SaveEvery = new("--checkpoint-every") { Description = "steps between checkpoints", DefaultValueFactory = _ => 100 };
    public readonly Option<string[]> Set = new("--set")
    {
        Description = "set any field of the model or training configuration by path, after the other options: " +
                      "--set Memory.InitialForgetting=0.001 --set WarmupSteps=20 (repeatable; `titans models --json` shows the model's fields)",
    };

    /// <param name="lengthAlias">A command's own older name for --seq-len (task commands: --length), still read.</param>
    public TrainingOptions(string lengthDescription = "tokens per training sequence", string? lengthAlias = null) =>
        Length = new Option<int>("--seq-len", lengthAlias is null ? [] : [lengthAlias]) { Description = lengthDescription, DefaultValueFactory = _ => Defaults.SequenceLength };

    public IEnumerable<Option> All => new Option[] { Preset, Architecture, MacWrite, ModelConfig, Tokenizer, Optimizer.Steps, Optimizer.Batch, Optimizer.Accumulate, Length }
        .Concat(Shared.All).Concat(new Option[] { Optimizer.LearningRate, Optimizer.Warmup, Optimizer.Decay, Clip, Optimizer.Seed, Set, Output, Force, Resume, LogEvery, EvalEvery, SaveEvery });

    /// <summary>Where and how often a run reports, validates and saves (its folder is set by the command), and on which device it trains.</summary>
    public RunOptions Run(ParseResult parse, int evalTokens, TorchSharp.torch.Device device) =>
        new(Directory: "", Positive(parse, LogEvery), Positive(parse, EvalEvery), evalTokens, Positive(parse, SaveEvery))
            { Device = device, Force = parse.GetValue(Force) };

    /// <summary>The model the options describe: a configuration file, or a preset sized to the tokenizer.</summary>
    public TitansConfig Model(ParseResult parse, ITokenizer tokenizer)
    {
        if (parse.GetValue(ModelConfig) is string path)
        {
            var beside = new Option[] { Preset, Architecture, MacWrite }.Where(o => CommonOptions.Given(parse, o)).Select(o => o.Name).ToList();
            if (beside.Count > 0)
                throw new ArgumentException($"--model-config sets the whole model; {string.Join(", ", beside)} cannot be given beside it (set it in the file).");
            return Shared.ApplyTo(parse, ReadModelConfig(path)).With(Assignments(parse).Model).Validate();
        }
        return Shared.ApplyTo(parse, Presets.Get(parse.GetValue(Preset)!, ArchitectureNames.Parse(parse.GetValue(Architecture)!), vocabulary: tokenizer.VocabularySize)
            .WithMacWrite(ArchitectureNames.ParseMacWrite(parse.GetValue(MacWrite)!))).With(Assignments(parse).Model).Validate();
    }

    /// <summary>The --set assignments, split by the configuration whose field each names; a field of neither is an error.</summary>
    (List<string> Model, List<string> Training) Assignments(ParseResult parse)
    {
        var model = new List<string>();
        var training = new List<string>();
        foreach (string assignment in parse.GetValue(Set) ?? [])
        {
            string path = assignment.Split('=')[0].Trim();
            if (ConfigJson.HasField(new TitansConfig(), path)) model.Add(assignment);
            else if (ConfigJson.HasField(new TrainingConfig(), path)) training.Add(assignment);
            else throw new ArgumentException($"--set {assignment}: '{path.Split('.')[0]}' is a field of neither the model (TitansConfig) nor the training " +
                                             "(TrainingConfig) configuration; `titans models --json` and a run's training.json list them.");
        }
        return (model, training);
    }

    /// <summary>A --model-config file's configuration; every problem names the file.</summary>
    static TitansConfig ReadModelConfig(string path)
    {
        if (Directory.Exists(path)) throw new ArgumentException($"--model-config '{path}' is a folder; give a JSON file (`titans models --json` prints one).");
        if (!File.Exists(path)) throw new FileNotFoundException($"No model configuration at '{path}'.", path);
        try { return TitansConfig.FromJson(TextCorpus.Decode(path, TextCorpus.ReadBounded(path), requireText: false)); }
        catch (ArgumentException e) { throw new ArgumentException($"'{path}': {CommonOptions.PlainMessage(e)}", e); }
    }

    public TrainingConfig Training(ParseResult parse, double validationFraction) => Shared.Apply(parse, Optimizer.Apply(parse, new TrainingConfig
    {
        SequenceLength = parse.GetValue(Length), GradientClip = parse.GetValue(Clip), ValidationFraction = validationFraction,
    })).With(Assignments(parse).Training).Validate();

    /// <summary>--mac-write, which `train`, `task train` and `bench tasks` share; <see cref="ArchitectureNames.ParseMacWrite"/> reads it.</summary>
    public static Option<string> MacWriteOption() => new("--mac-write")
    {
        Description = "what MAC writes into its memory: attention (the attention output, the paper's) or segment (the segment's input)",
        DefaultValueFactory = _ => "attention",
    };

    /// <summary>An option's value, refused below 1.</summary>
    public static int Positive(ParseResult parse, Option<int> option) => Positive(parse.GetValue(option), option.Name);

    /// <summary>A value given for the named option, refused below 1.</summary>
    public static int Positive(int value, string option) =>
        value > 0 ? value : throw new ArgumentException($"{option} must be at least 1, got {value}.");

    /// <summary>The total step count to resume to, if --steps was given on the command line (its default is not a request).</summary>
    public int? ResumeSteps(ParseResult parse) => CommonOptions.Given(parse, Steps) ? parse.GetValue(Steps) : null;

    /// <summary>
    /// --resume continues a run with the settings it started with (its model.json, training.json and data): an option that
    /// would set them is an error naming it, not silently ignored. Allowed: --steps (to extend the run), the reporting
    /// intervals, and the command's <paramref name="mayChange"/> (its data, which the run checks is the same).
    /// </summary>
    public void RefuseSettingsOnResume(ParseResult parse, params Option[] mayChange)
    {
        var allowed = new HashSet<Option>(mayChange) { Steps, Resume, LogEvery, EvalEvery, SaveEvery, Force };
        var given = parse.CommandResult.Command.Options.Where(o => !allowed.Contains(o) && CommonOptions.Given(parse, o))
            .Select(o => o.Name).ToList();
        if (given.Count > 0)
            throw new ArgumentException($"--resume continues the run with its own settings; {string.Join(", ", given)} cannot be given with it " +
                                        $"(what may be: {string.Join(", ", allowed.Where(o => o != Resume).Select(o => o.Name))}).");
    }

    /// <summary>The checkpoint file of a run folder (or the weights of an export folder), or the file itself.</summary>
    public static string CheckpointPath(string path)
    {
        string file = path;
        if (Directory.Exists(path))
        {
            file = Path.Combine(path, Cli.Runs.TrainingRun.CheckpointFile);
            string weights = Path.Combine(path, Checkpoint.WeightsFile);
            if (!File.Exists(file) && File.Exists(weights)) file = weights;
        }
        return File.Exists(file) ? file : throw new ArgumentException($"No checkpoint at '{file}'.");
    }
}
