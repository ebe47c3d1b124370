using System.Text.Json.Serialization;
using Titans.Runtime;

using Titans.Memory.Scans;

namespace Titans.Memory;

/// <summary>Nonlinearity between the layers of the memory MLP (docs/method.md §2).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<MemoryActivation>))]
public enum MemoryActivation { Gelu, Silu }

/// <summary>How the normalized memory read-out is gated by the input before the output projection.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<OutputGate>))]
public enum OutputGate { None, Sigmoid, Silu }

/// <summary>Which computation path runs the memory recurrence. Both mean the same thing; tests pin them together.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<MemoryAlgorithm>))]
public enum MemoryAlgorithm
{
    /// <summary>docs/method.md §3: analytic inner gradients, dual form inside a chunk, sequential over chunks. Fast.</summary>
    Chunked,
    /// <summary>Token-by-token reference; the inner gradient comes from autograd. Slow; the oracle.</summary>
    Sequential,
}

/// <summary>Whether and how the memory's weights are rescaled after each chunk's update (<see cref="NeuralMemoryConfig.FixedNorm"/>).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<FastWeightNorm>))]
public enum FastWeightNorm
{
    /// <summary>No rescaling (the paper).</summary>
    None,
    /// <summary>Every row (output channel) of every layer back to the norm of the same row of W₀ (LaCT's fast-weight norm).</summary>
    Rows,
    /// <summary>Every layer of every head as a whole back to the Frobenius norm of its W₀ (for the last layer under the
    /// LayerNorm wrapper this leaves the memory's function unchanged).</summary>
    Layers,
}

/// <summary>When models recompute their memory blocks in training (<see cref="NeuralMemoryConfig.RecomputeBlocks"/>).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<RecomputeBlocksMode>))]
public enum RecomputeBlocksMode
{
    /// <summary>Where the blocks' activations would not fit a quarter of the memory at hand.</summary>
    Auto,
    /// <summary>Always (the bound on memory, whatever the length).</summary>
    Always,
    /// <summary>Never (every block's forward runs once).</summary>
    Never,
}

/// <summary>
/// Named special cases of the memory (docs/method.md §4.5), each nothing but a setting of the switches below
/// (<see cref="NeuralMemoryConfig.As"/>).
/// </summary>
[JsonConverter(typeof(JsonStringEnumConverter<MemoryVariant>))]
public enum MemoryVariant
{
    /// <summary>The Titans memory: a deep MLP with momentum and forgetting (the configuration as given).</summary>
    Titans,
    /// <summary>A linear memory (L_M = 1, no LayerNorm wrapper) that keeps momentum and forgetting.</summary>
    Linear,
    /// <summary>The delta rule: linear memory, no momentum, no forgetting: M_t = M_{t−1} − θ_t ∇ℓ.</summary>
    DeltaRule,
    /// <summary>The gated delta rule: linear memory with forgetting, no momentum: M_t = (1 − α_t) M_{t−1} − θ_t ∇ℓ.</summary>
    GatedDeltaRule,
    /// <summary>TTT-MLP-like: a deep MLP memory trained by plain mini-batch gradient descent, no momentum, no forgetting.</summary>
    TttMlp,
}

/// <summary>
/// Configuration of one neural long-term memory module (docs/method.md §2). Every ablation of the paper is a switch here:
/// linear memory (<see cref="Depth"/> = 1), no momentum, no forgetting, no convolution, fixed gates.
/// </summary>
public sealed record NeuralMemoryConfig
{
    /// <summary>Width d of the tokens entering and leaving the module.</summary>
    public int ModelDim { get; init; } = 64;
    /// <summary>Number of memory heads; each has its own memory MLP of width d_h = ModelDim / Heads.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>L_M: layers of the memory MLP. 1 = linear (matrix) memory.</summary>
    public int Depth { get; init; } = 2;
    /// <summary>Hidden width of the memory MLP as a multiple of d_h (used when Depth ≥ 2).</summary>
    public int Expansion { get; init; } = 4;
    public MemoryActivation Activation { get; init; } = MemoryActivation.Gelu;
    /// <summary>M(x) = x + LN(MLP(x)) (TTT-style wrapper of the later revision) instead of M(x) = MLP(x).</summary>
    public bool ResidualLayerNorm { get; init; } = true;
    /// <summary>b: tokens per mini-batch of the inner gradient descent (docs/method.md §3).</summary>
    public int ChunkSize { get; init; } = 16;
    /// <summary>Kernel of the causal depthwise convolution after the q/k/v projections; 0 turns it off.</summary>
    public int ConvKernel { get; init; } = 4;
    /// <summary>Surprise momentum η. Off: η = 0, S_t = -θ_t ∇ℓ.</summary>
    public bool Momentum { get; init; } = true;
    /// <summary>Forgetting α (weight decay of the memory). Off: α = 0, nothing is forgotten.</summary>
    public bool Forgetting { get; init; } = true;
    /// <summary>
    /// α per output channel of each memory layer (one forgetting rate per row of W^(l)) instead of one per head; the
    /// later revision's option. Needs <see cref="Forgetting"/>.
    /// </summary>
    public bool ChannelwiseForgetting { get; init; }
    /// <summary>θ, η, α computed from each token (true) or learned constants per head, independent of the input.</summary>
    public bool DataDependentGates { get; init; } = true;
    /// <summary>Upper bound of the inner learning rate: θ_t = θ_max σ(x_t w_θ).</summary>
    public double MaxInnerLearningRate { get; init; } = 0.1;
    /// <summary>Initial gate values (before training moves them): σ⁻¹ of these seed the gate biases.</summary>
    public double InitialInnerLearningRate { get; init; } = 0.05;
    public double InitialMomentum { get; init; } = 0.9;
    public double InitialForgetting { get; init; } = 0.01;
    /// <summary>
    /// Multi-timescale heads: the last head's initial α and θ. Head h of H starts at the first head's value times
    /// (last / first)^(h / (H − 1)), log-spaced, so some heads begin as slow long-term stores (little written, little
    /// forgotten) and others as fast ones. Null: every head starts at <see cref="InitialForgetting"/> and
    /// <see cref="InitialInnerLearningRate"/>.
    /// </summary>
    public double? LastHeadInitialForgetting { get; init; }
    public double? LastHeadInitialInnerLearningRate { get; init; }
    /// <summary>
    /// Stabilizer (docs/memory-stability.md): forgetting returns the memory toward its initial weights instead of toward 0,
    /// M_t = W₀ + (1 − α_t)(M_{t−1} − W₀) + S_t. Needs <see cref="Forgetting"/>.
    /// </summary>
    public bool RetainTowardInitial { get; init; }
    /// <summary>Stabilizer: after each chunk's update the weights' rows (or layers) are rescaled to W₀'s norms, momentum alike.</summary>
    public FastWeightNorm FixedNorm { get; init; } = FastWeightNorm.None;
    /// <summary>
    /// Stabilizer: soft limit c on each token's inner gradient per layer, u ← u · c·tanh(‖u‖/c)/‖u‖ (titans-pytorch's
    /// max_grad_norm); 0 turns it off.
    /// </summary>
    public double InnerGradientClip { get; init; }
    public OutputGate OutputGate { get; init; } = OutputGate.Silu;
    public MemoryAlgorithm Algorithm { get; init; } = MemoryAlgorithm.Chunked;
    /// <summary>
    /// Chunks per recomputed group in training (<see cref="RecomputedMemoryScan"/>): backward recomputes each group from
    /// its starting state instead of keeping every chunk's state, so training memory no longer grows by several states
    /// per chunk (sequences of one group or less take plain autograd; <see cref="Scans.MemoryScan.Choose"/>). In models it is
    /// also the default of <see cref="Models.SequenceBackbone.RecomputeTokens"/>: every memory block runs over groups of
    /// G·b tokens (MAC: whole segments), each recomputed from the block state at its start. Measured in models: the same
    /// speed at 16K with a third of the memory, 0.8× at 2K; nothing changes at or below G·b tokens. 0: plain autograd.
    /// Same values and gradients either way (docs/fast-memory.md).
    /// </summary>
    public int RecomputeGroup { get; init; } = 16;
    /// <summary>
    /// When models recompute their memory blocks in training (<see cref="Models.SequenceBackbone"/>): over groups of
    /// RecomputeGroup × ChunkSize tokens, so that autograd keeps a block's state per group instead of its activations
    /// for the whole micro-batch, at the cost of running every block's forward twice. Auto (the default) recomputes
    /// only where those activations would not fit a quarter of the memory this process may use; with the fused kernel,
    /// not recomputing trained small's 2-layer models 1.2–1.7× faster at 8K (docs/fast-memory.md). Same values and
    /// gradients either way.
    /// </summary>
    public RecomputeBlocksMode RecomputeBlocks { get; init; } = RecomputeBlocksMode.Auto;
    /// <summary>
    /// Training back-propagates through the chunked scan with its hand-written backward (<see cref="HandWrittenScan"/>),
    /// where it covers the form (scalar forgetting, no fixed norm); false: autograd through the chunked path, the oracle
    /// it is tested against. Same values and gradients either way.
    /// </summary>
    public bool HandWrittenBackward { get; init; } = true;
    /// <summary>
    /// The memory's chunk chain runs as C# kernel calls on the CPU where they cover the form (scalar forgetting, no fixed
    /// norm, float32 or float64): calls that need no gradient (inference, streaming, evaluation) as one kernel call
    /// (<see cref="FusedMemoryScan"/>), training's hand-written backward as the kernel's forward and backward
    /// (<see cref="ScanKind.FusedTraining"/>); without a gradient, the memory's input path (projections, short convolution,
    /// gates) too (<see cref="FusedProjection"/>). false: the libtorch chunked scan, hand-written node and projections,
    /// their oracles. Same values and gradients either way (tests to 1e-10 and 1e-9 in float64).
    /// </summary>
    public bool FusedKernel { get; init; } = true;

    [JsonIgnore] public int HeadDim => ModelDim / Heads;
    [JsonIgnore] public int HiddenDim => Depth == 1 ? HeadDim : Expansion * HeadDim;
    /// <summary>Forgetting gates per head and token: 1, or Σ_l out_l with channel-wise forgetting.</summary>
    [JsonIgnore] public int ForgettingChannels => ChannelwiseForgetting ? LayerShapes.Sum(s => s.Out) : 1;

    /// <summary>(out, in) of each memory layer W^(l), l = 1..L_M.</summary>
    [JsonIgnore]
    public IReadOnlyList<(int Out, int In)> LayerShapes
    {
        get
        {
            var shapes = new List<(int, int)>();
            for (int l = 0; l < Depth; l++)
                shapes.Add((l == Depth - 1 ? HeadDim : HiddenDim, l == 0 ? HeadDim : HiddenDim));
            return shapes;
        }
    }

    /// <summary>This configuration turned into one of the named special cases; other settings are kept.</summary>
    public NeuralMemoryConfig As(MemoryVariant variant) => variant switch
    {
        MemoryVariant.Titans => this,
        MemoryVariant.Linear => this with { Depth = 1, ResidualLayerNorm = false },
        MemoryVariant.DeltaRule => this with { Depth = 1, ResidualLayerNorm = false, Momentum = false, Forgetting = false, ChannelwiseForgetting = false },
        MemoryVariant.GatedDeltaRule => this with { Depth = 1, ResidualLayerNorm = false, Momentum = false, Forgetting = true },
        MemoryVariant.TttMlp => this with { Depth = Math.Max(Depth, 2), Momentum = false, Forgetting = false, ChannelwiseForgetting = false },
        _ => throw new ArgumentOutOfRangeException(nameof(variant), $"unknown memory variant {variant}"),
    };

    /// <summary>
    /// Outer-loop parameters of one module, counted from the configuration (a test pins it to the instantiated module):
    /// q/k/v projections, convolution, gate projection and biases, W_0, the wrapper's LayerNorm, the output norm, gate
    /// and projection.
    /// </summary>
    [JsonIgnore]
    public long ParameterCount
    {
        get
        {
            long d = ModelDim, inner = (long)Heads * HeadDim, gates = (2L + ForgettingChannels) * Heads;
            long count = 3 * d * inner + (ConvKernel > 0 ? ConvKernel * 3 * inner : 0)
                + (DataDependentGates ? d * gates : 0) + gates
                + Heads * LayerShapes.Sum(s => (long)s.Out * s.In)
                + (ResidualLayerNorm ? 2L * Heads * HeadDim : 0)
                + HeadDim + (OutputGate != OutputGate.None ? d * inner : 0) + inner * d;
            return count;
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first impossible value.</summary>
    public NeuralMemoryConfig Validate()
    {
        Require(ModelDim is >= 1 and <= 1 << 16, nameof(ModelDim), $"must lie in [1, 65,536], got {ModelDim}");
        Require(Heads >= 1, nameof(Heads), $"must be at least 1, got {Heads}");
        Require(ModelDim % Heads == 0, nameof(Heads), $"{Heads} heads do not divide the model width {ModelDim}");
        Require(Depth is >= 1 and <= 16, nameof(Depth), $"the memory needs from 1 to 16 layers (L_M), got {Depth}");
        Require(Expansion is >= 1 and <= 64, nameof(Expansion), $"must lie in [1, 64], got {Expansion}");
        Require(ChunkSize is >= 1 and <= 1 << 16, nameof(ChunkSize), $"must lie in [1, 65,536] tokens, got {ChunkSize}");
        Require(ConvKernel is >= 0 and <= 1024, nameof(ConvKernel), $"must be 0 (off) or a kernel width up to 1,024, got {ConvKernel}");
        Require(double.IsFinite(MaxInnerLearningRate) && MaxInnerLearningRate > 0, nameof(MaxInnerLearningRate),
            $"must be a positive number, got {MaxInnerLearningRate}");
        Require(InitialInnerLearningRate > 0 && InitialInnerLearningRate < MaxInnerLearningRate, nameof(InitialInnerLearningRate),
            $"must lie strictly between 0 and MaxInnerLearningRate ({MaxInnerLearningRate}), got {InitialInnerLearningRate}");
        Require(InitialMomentum > 0 && InitialMomentum < 1, nameof(InitialMomentum), $"must lie in (0, 1), got {InitialMomentum}");
        Require(InitialForgetting > 0 && InitialForgetting < 1, nameof(InitialForgetting), $"must lie in (0, 1), got {InitialForgetting}");
        Require(LastHeadInitialForgetting is null or > 0 and < 1, nameof(LastHeadInitialForgetting), $"must lie in (0, 1), got {LastHeadInitialForgetting}");
        Require(LastHeadInitialInnerLearningRate is null || (LastHeadInitialInnerLearningRate > 0 && LastHeadInitialInnerLearningRate < MaxInnerLearningRate),
            nameof(LastHeadInitialInnerLearningRate), $"must lie strictly between 0 and MaxInnerLearningRate ({MaxInnerLearningRate}), got {LastHeadInitialInnerLearningRate}");
        Require(!ChannelwiseForgetting || Forgetting, nameof(ChannelwiseForgetting),
            "asks for per-channel forgetting while Forgetting is off; turn Forgetting on or ChannelwiseForgetting off");
        Require(!RetainTowardInitial || Forgetting, nameof(RetainTowardInitial),
            "asks forgetting to return toward W₀ while Forgetting is off; turn Forgetting on or RetainTowardInitial off");
        Require(double.IsFinite(InnerGradientClip) && InnerGradientClip >= 0, nameof(InnerGradientClip),
            $"must be 0 (off) or a positive gradient norm, got {InnerGradientClip}");
        Require(Enum.IsDefined(FixedNorm), nameof(FixedNorm), $"unknown value {FixedNorm}");
        Require(Enum.IsDefined(Activation), nameof(Activation), $"unknown value {Activation}");
        Require(Enum.IsDefined(OutputGate), nameof(OutputGate), $"unknown value {OutputGate}");
        Require(Enum.IsDefined(Algorithm), nameof(Algorithm), $"unknown value {Algorithm}");
        Require(RecomputeGroup >= 0, nameof(RecomputeGroup), $"must be 0 (off) or a number of chunks, got {RecomputeGroup}");
        return this;
    }

    static void Require(bool ok, string name, string problem) => ConfigJson.Require<NeuralMemoryConfig>(ok, name, problem);

    public string ToJson() => ConfigJson.Serialize(this);

    /// <summary>Parses and validates; a malformed document or an impossible value throws with the reason.</summary>
    public static NeuralMemoryConfig FromJson(string json) => ConfigJson.Parse<NeuralMemoryConfig>(json, c => c.Validate());

    /// <summary>This configuration with the fields of a JSON object set over it; an unknown field or impossible value throws naming it.</summary>
    public static NeuralMemoryConfig Patch(NeuralMemoryConfig config, string json) => ConfigJson.Patch(config, json, c => c.Validate());
}
