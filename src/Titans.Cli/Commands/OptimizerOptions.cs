using System.CommandLine;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>
/// The optimizer's settings, read the same way by every command that trains (`train`, `task train`, `dna pretrain`,
/// `forecast train`, `dna classify`): --steps, --batch-size, --accumulate, --lr, --warmup, --weight-decay, --seed, each
/// command with its own defaults (<paramref name="defaults"/>) and words for what a step and a batch are.
/// </summary>
public sealed class OptimizerOptions(TrainingConfig defaults, string steps = "optimizer steps", string batch = "sequences per micro-batch",
    string warmup = "linear warmup steps (then cosine decay to 10% of the peak)")
{
    public readonly Option<int> Steps = new("--steps") { Description = steps, DefaultValueFactory = _ => defaults.Steps };
    public readonly Option<int> Batch = new("--batch-size") { Description = batch, DefaultValueFactory = _ => defaults.BatchSize };
    public readonly Option<int> Accumulate = new("--accumulate")
        { Description = "micro-batches per optimizer step (gradient accumulation; under mpirun, shared among the ranks)", DefaultValueFactory = _ => defaults.AccumulationSteps };
    public readonly Option<double> LearningRate = new("--lr") { Description = "peak learning rate", DefaultValueFactory = _ => defaults.LearningRate };
    public readonly Option<int> Warmup = new("--warmup") { Description = warmup, DefaultValueFactory = _ => defaults.WarmupSteps };
    public readonly Option<double> Decay = new("--weight-decay") { Description = "AdamW weight decay (matrices and embeddings)", DefaultValueFactory = _ => defaults.WeightDecay };
    public readonly Option<long> Seed = new("--seed") { Description = "seed of the weights and of the batches", DefaultValueFactory = _ => defaults.Seed };

    /// <summary>Every option, in the order --help lists them.</summary>
    public IEnumerable<Option> All => new Option[] { Steps, Batch, Accumulate, LearningRate, Warmup, Decay, Seed };

    /// <summary><paramref name="config"/> with these options' values set over it (not yet validated).</summary>
    public TrainingConfig Apply(ParseResult parse, TrainingConfig config) => config with
    {
        Steps = parse.GetValue(Steps), BatchSize = parse.GetValue(Batch), AccumulationSteps = parse.GetValue(Accumulate),
        LearningRate = parse.GetValue(LearningRate), WarmupSteps = parse.GetValue(Warmup), WeightDecay = parse.GetValue(Decay), Seed = parse.GetValue(Seed),
    };
}
