using Titans.Runtime;

namespace Titans.Training;

/// <summary>
/// How a language model is trained: AdamW with decoupled weight decay, linear warmup then cosine decay to
/// <see cref="MinLearningRateRatio"/> × peak, gradient clipping, gradient accumulation. Serialized into checkpoints.
/// </summary>
public sealed record TrainingConfig
{
    public int Steps { get; init; } = 1000;
    /// <summary>Sequences per micro-batch; an optimizer step sees BatchSize × AccumulationSteps sequences.</summary>
    public int BatchSize { get; init; } = 16;
    public int AccumulationSteps { get; init; } = 1;
    public int SequenceLength { get; init; } = 256;
    /// <summary>
    /// At most this many tokens of the same stream come before each micro-batch's sequences (uniform in [0, max] per
    /// micro-batch); the model runs them without gradient and trains from the state they leave, so training sees the
    /// memory as it is late in a stream (truncated backpropagation through time). 0: every sequence starts afresh.
    /// </summary>
    public int StreamPrefix { get; init; }
    /// <summary>
    /// The shortest prefix (uniform in [min, <see cref="StreamPrefix"/>]); raising it trains more often on a memory that
    /// wrote a far needle and then much noise. 0: prefixes from none at all.
    /// </summary>
    public int MinStreamPrefix { get; init; }
    public double LearningRate { get; init; } = 3e-3;
    public double MinLearningRateRatio { get; init; } = 0.1;
    public int WarmupSteps { get; init; } = 50;
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>
    /// Weight decay of the memories' initial weights W₀ (null: <see cref="WeightDecay"/>). Decay pulls W₀ small, so the
    /// first chunk's write replaces it (docs/mac-memory-write.md); 0 leaves W₀ to the data.
    /// </summary>
    public double? InitialMemoryWeightDecay { get; init; }
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    /// <summary>Maximum global gradient norm; 0 turns clipping off.</summary>
    public double GradientClip { get; init; } = 1.0;
    public long Seed { get; init; } = 1;
    /// <summary>The last fraction of the corpus, held out for validation.</summary>
    public double ValidationFraction { get; init; } = 0.05;

    /// <summary>Learning rate of optimizer step <paramref name="step"/> (0-based).</summary>
    public double LearningRateAt(int step)
    {
        if (step < WarmupSteps) return LearningRate * (step + 1) / WarmupSteps;
        double progress = Steps <= WarmupSteps ? 1 : Math.Min(1.0, (step - WarmupSteps) / (double)(Steps - WarmupSteps));
        double floor = LearningRate * MinLearningRateRatio;
        return floor + (LearningRate - floor) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    public long TokensPerStep => (long)BatchSize * AccumulationSteps * SequenceLength;

    /// <summary>The most tokens a micro-batch (with its stream prefix) may hold: 2^27, a gibibyte of token ids, far above a CPU batch.</summary>
    public const long MaxMicroBatchTokens = 1L << 27;

    public TrainingConfig Validate()
    {
        Require(Steps >= 1, nameof(Steps), $"must be at least 1, got {Steps}");
        Require(BatchSize >= 1, nameof(BatchSize), $"must be at least 1, got {BatchSize}");
        Require(AccumulationSteps >= 1, nameof(AccumulationSteps), $"must be at least 1, got {AccumulationSteps}");
        Require(SequenceLength >= 1, nameof(SequenceLength), $"must be at least 1, got {SequenceLength}");
        Require((long)BatchSize * (SequenceLength + (long)StreamPrefix) <= MaxMicroBatchTokens, nameof(BatchSize),
            $"× (SequenceLength + StreamPrefix) is {(long)BatchSize * (SequenceLength + (long)StreamPrefix):N0} tokens per micro-batch " +
            $"({BatchSize:N0} × {SequenceLength + (long)StreamPrefix:N0}); at most {MaxMicroBatchTokens:N0}");
        Require(StreamPrefix >= 0, nameof(StreamPrefix), $"must not be negative, got {StreamPrefix}");
        Require(MinStreamPrefix >= 0 && MinStreamPrefix <= StreamPrefix, nameof(MinStreamPrefix),
            $"must lie in [0, StreamPrefix = {StreamPrefix}], got {MinStreamPrefix}");
        Require(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), $"must be positive, got {LearningRate}");
        Require(MinLearningRateRatio is >= 0 and <= 1, nameof(MinLearningRateRatio), $"must lie in [0, 1], got {MinLearningRateRatio}");
        Require(WarmupSteps >= 0, nameof(WarmupSteps), $"must not be negative, got {WarmupSteps}");
        Require(WeightDecay >= 0, nameof(WeightDecay), $"must not be negative, got {WeightDecay}");
        Require(InitialMemoryWeightDecay is null or >= 0, nameof(InitialMemoryWeightDecay), $"must not be negative, got {InitialMemoryWeightDecay}");
        Require(Beta1 is >= 0 and < 1, nameof(Beta1), $"must lie in [0, 1), got {Beta1}");
        Require(Beta2 is >= 0 and < 1, nameof(Beta2), $"must lie in [0, 1), got {Beta2}");
        Require(GradientClip >= 0, nameof(GradientClip), $"must not be negative (0 turns clipping off), got {GradientClip}");
        Require(ValidationFraction is > 0 and < 1, nameof(ValidationFraction), $"must lie in (0, 1), got {ValidationFraction}");
        return this;
    }

    /// <summary>This configuration with fields set by path (<c>WarmupSteps=20</c>), validated.</summary>
    public TrainingConfig With(IEnumerable<string> assignments) => ConfigJson.Set(this, assignments, FromJson);

    public string ToJson() => ConfigJson.Serialize(this);
    public static TrainingConfig FromJson(string json) => ConfigJson.Parse<TrainingConfig>(json, c => c.Validate());
    static void Require(bool ok, string field, string problem) => ConfigJson.Require<TrainingConfig>(ok, field, problem);
}
