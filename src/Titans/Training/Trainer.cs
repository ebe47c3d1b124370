using TorchSharp;
using TorchSharp.Modules;
using Titans.Memory;
using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>What one optimizer step did.</summary>
public sealed record StepResult(int Step, double Loss, double GradientNorm, double LearningRate, long Tokens)
{
    /// <summary>The parameters with the largest gradient norms before clipping, largest first: where a spike comes from.</summary>
    public IReadOnlyList<(string Parameter, double Norm)> LargestGradients { get; init; } = Array.Empty<(string, double)>();
}

/// <summary>The loss or a gradient became NaN or infinite; the step was not applied, so the weights are the last good ones.</summary>
public sealed class TrainingDivergedException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// What a trainer minimizes: the mean loss of one micro-batch, which must be a function of (seed, step, micro) and
/// the model alone, so that a resumed run sees exactly the batches the uninterrupted run would have. A model that
/// meets a non-finite value may throw <see cref="NonFiniteValueException"/>; the trainer turns it into
/// <see cref="TrainingDivergedException"/> without applying the step.
/// </summary>
public interface ITrainingObjective
{
    /// <summary>The mean loss (a 0-d tensor with gradient) of micro-batch <paramref name="micro"/> of optimizer step <paramref name="step"/>.</summary>
    Tensor MicroBatchLoss(TrainingConfig config, int step, int micro);
}

/// <summary>
/// The one training loop of the library, for any model and objective (language modelling, forecasting,
/// classification): AdamW (weight decay on matrices and embeddings, none on the parameters <see cref="WeightDecay"/>
/// names, the memories' W₀ optionally their own), warmup + cosine schedule, gradient accumulation and clipping, and
/// a clear error instead of a step when the loss or a gradient is not finite. Every micro-batch runs in its own
/// dispose scope. The schedule and the optimizer state are a function of the step count and what the checkpoint
/// saves, and the batches of the objective's (seed, step, micro), so a resumed run continues bit for bit.
/// </summary>
public class Trainer<TModel> : IDisposable where TModel : nn.Module
{
    public TModel Model { get; }
    public TrainingConfig Config { get; }
    public ITrainingObjective Objective { get; }
    /// <summary>The replicas it trains with and the core sharing it calls before each step (<see cref="TrainingEnvironment"/>).</summary>
    public TrainingEnvironment Environment { get; }
    public AdamW Optimizer { get; }
    /// <summary>Optimizer steps taken so far.</summary>
    public int Step { get; internal set; }
    /// <summary>Parameters in the optimizer's order (its state list follows it), with their names.</summary>
    internal IReadOnlyList<(string Name, Parameter Parameter)> Parameters { get; }

    public Trainer(TModel model, TrainingConfig config, ITrainingObjective objective, TrainingEnvironment? environment = null)
    {
        Model = model;
        Config = config.Validate();
        Objective = objective;
        Environment = environment ?? TrainingEnvironment.Alone;
        var named = model.named_parameters().ToList();
        long parameters = named.Sum(p => p.parameter.numel());
        if (named.All(p => p.parameter.device_type == TorchSharp.DeviceType.CPU))   // on a GPU the state lives in the device's memory
            Runtime.MemoryBudget.Require(parameters * 4 * sizeof(float), $"Training a model of {parameters:N0} parameters (weights, gradients and AdamW's two moments)");
        bool separate = config.InitialMemoryWeightDecay is double w0 && w0 != config.WeightDecay;
        var initialMemory = separate ? named.Where(p => NeuralMemory.IsInitialWeight(p.name)).ToList() : new();
        var plain = named.Where(p => WeightDecay.IsExempt(p.name)).ToList();
        var decayed = named.Except(plain).Except(initialMemory).ToList();
        // Without a separate W₀ decay the groups (and so the optimizer's state order) are those of earlier checkpoints.
        Parameters = decayed.Concat(plain).Concat(initialMemory).Select(p => (p.name, p.parameter)).ToList();
        var groups = new List<AdamW.ParamGroup>
        {
            new(decayed.Select(p => p.parameter), config.LearningRate, config.Beta1, config.Beta2, 1e-8, config.WeightDecay),
            new(plain.Select(p => p.parameter), config.LearningRate, config.Beta1, config.Beta2, 1e-8, 0.0),
        };
        if (initialMemory.Count > 0)
            groups.Add(new(initialMemory.Select(p => p.parameter), config.LearningRate, config.Beta1, config.Beta2, 1e-8, config.InitialMemoryWeightDecay!.Value));
        Optimizer = new AdamW(groups, config.LearningRate, config.Beta1, config.Beta2, 1e-8, config.WeightDecay);
    }

    /// <summary>Under mpirun, the replicas' weights are compared every this many steps (and at the last): a hash of each, a few milliseconds.</summary>
    const int ReplicaCheckInterval = 50;

    /// <summary>One optimizer step over <see cref="TrainingConfig.AccumulationSteps"/> micro-batches.</summary>
    public StepResult TrainStep()
    {
        Environment.ShareCores?.Invoke();
        double lr = Config.LearningRateAt(Step);
        foreach (var group in Optimizer.ParamGroups) group.LearningRate = lr;
        Model.train();
        Optimizer.zero_grad();
        double loss = 0;
        var parallel = Environment.Replicas;   // data parallel: this replica's share of the micro-batches
        Exception? failure = null;
        Runtime.BackwardFailures.Clear();
        for (int micro = 0; micro < Config.AccumulationSteps && failure is null; micro++)
        {
            if (parallel is not null && !parallel.Owns(micro)) continue;
            using var scope = NewDisposeScope();
            try
            {
                Tensor microLoss = Objective.MicroBatchLoss(Config, Step, micro);
                (microLoss / Config.AccumulationSteps).backward();
                Runtime.BackwardFailures.ThrowIfAny();   // a backward of ours that failed: its own error, not a NaN "divergence"
                loss += microLoss.to(ScalarType.Float64).item<double>() / Config.AccumulationSteps;
            }
            catch (NonFiniteValueException e)
            {
                failure = new TrainingDivergedException($"Training diverged at step {Step + 1}: {e.Message} The step was not applied; " +
                                                        "lower the learning rate or raise the warmup.", e);
            }
            catch (Exception e) when (parallel is not null) { failure = e; }   // the other ranks must hear of it, not wait
        }
        if (parallel is not null)
        {
            // Collective: every rank learns of the first failure and stops with its message, or all sum their shares.
            if (parallel.FirstFailure(failure?.Message) is var (rank, message))
                throw failure ?? new TrainingDivergedException($"Rank {rank} of {parallel.Size} failed at step {Step + 1}: {message}");
            loss = parallel.Sum(loss);
            SumGradients(parallel);
        }
        else if (failure is not null) throw failure;
        var (norm, largest) = GradientNorms();
        if (parallel is not null)
        {
            // Rank 0's loss and norm decide for all: a norm summed in another order on another rank could clip differently.
            Span<double> decided = [loss, norm];
            parallel.FromRoot(decided);
            (loss, norm) = (decided[0], decided[1]);
        }
        if (!double.IsFinite(loss) || !double.IsFinite(norm))
            throw new TrainingDivergedException(
                $"Training diverged at step {Step + 1}: loss {loss}, gradient norm {norm}. The step was not applied; " +
                "lower the learning rate or raise the warmup.");
        if (Config.GradientClip > 0 && norm > Config.GradientClip)
        {
            using var scope = NewDisposeScope();
            using var factor = (Config.GradientClip / (norm + 1e-6)).ToScalar();
            foreach (var (_, p) in Parameters) p.grad?.mul_(factor);
        }
        Optimizer.step();
        Step++;
        if (parallel is not null && (Step % ReplicaCheckInterval == 0 || Step == Config.Steps) &&
            parallel.DivergedReplicas(Parameters.Select(p => (Tensor)p.Parameter), Step) is string diverged)
            throw new Distributed.ReplicasDivergedException($"Training stopped: {diverged}.");
        return new StepResult(Step, loss, norm, lr, Config.TokensPerStep) { LargestGradients = largest };
    }

    /// <summary>
    /// Sums every parameter's gradient across ranks with one all-reduce over a flat buffer (a rank without micro-batches
    /// this step contributes zeros), and writes the sums back, so every rank holds the gradient of the global batch.
    /// </summary>
    void SumGradients(IGradientReducer parallel)
    {
        var parameters = Parameters.Select(p => p.Parameter).ToList();
        foreach (var p in parameters) p.grad ??= zeros_like(p);   // outside the scope: the parameter keeps it
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var flat = cat(parameters.Select(p => p.grad!.detach().cpu().reshape(-1)).ToList(), 0).contiguous();
        parallel.SumInPlace(flat);
        long offset = 0;
        foreach (var p in parameters)
        {
            p.grad!.copy_(flat.narrow(0, offset, p.numel()).view_as(p));
            offset += p.numel();
        }
    }

    /// <summary>The global L2 norm of the gradients, in float64, and the three parameters with the largest.</summary>
    (double Norm, IReadOnlyList<(string, double)> Largest) GradientNorms()
    {
        using var scope = NewDisposeScope();
        double sum = 0;
        var norms = new List<(string, double)>();
        foreach (var (name, p) in Parameters)
            if (p.grad is Tensor g)
            {
                double square = g.to(ScalarType.Float64).square().sum().item<double>();
                sum += square;
                norms.Add((name, Math.Sqrt(square)));
            }
        return (Math.Sqrt(sum), norms.OrderByDescending(n => n.Item2).Take(3).ToArray());
    }

    public void Dispose() => Optimizer.Dispose();
}

/// <summary>
/// Trains a language model on token windows (<see cref="LanguageModelObjective"/>: next-token cross-entropy, with an
/// optional stream prefix run without gradient before each micro-batch).
/// </summary>
public sealed class Trainer(TitansLanguageModel model, TrainingConfig config, IBatchSource data, TrainingEnvironment? environment = null)
    : Trainer<TitansLanguageModel>(model, config, new LanguageModelObjective(model, data), environment)
{
    /// <summary>Where the batches come from: a corpus (<see cref="TokenData"/>) or a task generator.</summary>
    public IBatchSource Data { get; } = data;
}

/// <summary>
/// Next-token cross-entropy over the scored positions of a batch from <paramref name="data"/>, after streaming the
/// batch's prefix (<see cref="TrainingConfig.StreamPrefix"/>) through the model without gradient; the memories'
/// starting state stays in the gradient path (<see cref="TitansLanguageModel.WithGradientToStart"/>: truncated
/// backpropagation through time).
/// </summary>
public sealed class LanguageModelObjective(TitansLanguageModel model, IBatchSource data) : ITrainingObjective
{
    public Tensor MicroBatchLoss(TrainingConfig config, int step, int micro)
    {
        int prefix = BatchSeed.PrefixLength(config.Seed, step, micro, config.StreamPrefix, config.MinStreamPrefix);
        using var batch = data.Batch(config.Seed, step, micro, config.BatchSize, config.SequenceLength, prefix).To(model.Device);
        return batch.Loss(Logits(batch));
    }

    Tensor Logits(TrainingBatch batch)
    {
        if (batch.Prefix is not Tensor prefix) return model.forward(batch.Tokens);
        ModelState state;
        using (no_grad()) state = model.Advance(prefix, null);
        return model.Forward(batch.Tokens, model.WithGradientToStart(state)).Output;   // states die with the trainer's micro-batch scope
    }
}
