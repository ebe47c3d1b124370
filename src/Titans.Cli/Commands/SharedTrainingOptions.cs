using System.CommandLine;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>
/// The memory and stream options `train`, `task train`, `bench lm` and `bench tasks` share: α₀ and any other field of every
/// memory model's configuration,
/// the weight decay of the memories' W₀, and the stream prefix (truncated backpropagation through time).
/// </summary>
public sealed class SharedTrainingOptions
{
    public readonly Option<double?> InitialForgetting = new("--initial-forgetting")
    {
        Description = "the memory's forgetting gate α at the start of training, in (0, 1) (default: the preset's, 0.01)",
    };
    public readonly Option<string?> Memory = new("--memory")
    {
        Description = "JSON fields set over every memory's configuration, e.g. '{\"RetainTowardInitial\": false}' (the paper's plain memory)",
    };
    public readonly Option<double?> InitialMemoryDecay = new("--initial-memory-decay")
    {
        Description = "AdamW weight decay of the memories' initial weights W₀ (default: --weight-decay; 0 keeps W₀ out of it)",
    };
    public readonly Option<int> StreamPrefix = new("--stream-prefix")
    {
        Description = "run up to this many tokens of the same stream (uniform per micro-batch) through the model without gradient " +
                      "before each training sequence, so training sees the memory late in a stream (0: off)",
        DefaultValueFactory = _ => 0,
    };
    public readonly Option<int> MinStreamPrefix = new("--stream-prefix-min")
    {
        Description = "the shortest stream prefix (prefixes are uniform in [this, --stream-prefix]; default 0)",
        DefaultValueFactory = _ => 0,
    };

    public IEnumerable<Option> All => new Option[] { InitialForgetting, Memory, InitialMemoryDecay, StreamPrefix, MinStreamPrefix };

    /// <summary>A model configuration with --initial-forgetting and --memory applied to its memory (not yet validated).</summary>
    public Models.TitansConfig ApplyTo(ParseResult parse, Models.TitansConfig model) =>
        model.WithInitialForgetting(parse.GetValue(InitialForgetting)).WithMemory(parse.GetValue(Memory));

    /// <summary>The training configuration with these options' values in it (not yet validated).</summary>
    public TrainingConfig Apply(ParseResult parse, TrainingConfig training) => training with
    {
        InitialMemoryWeightDecay = parse.GetValue(InitialMemoryDecay),
        StreamPrefix = parse.GetValue(StreamPrefix),
        MinStreamPrefix = parse.GetValue(MinStreamPrefix),
    };
}
