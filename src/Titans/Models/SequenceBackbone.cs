using TorchSharp;
using TorchSharp.Modules;
using Titans.Memory;
using Titans.Layers;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// The part of every model that is not tied to tokens: <see cref="TitansConfig.Layers"/> blocks of the configured
/// architecture and a final RMSNorm, [B, T, d] → [B, T, d]. Heads sit on top of it: a language model
/// (<see cref="TitansLanguageModel"/>), a forecaster (<see cref="Forecasting.Forecaster"/>), a sequence classifier
/// (<see cref="SequenceClassifier"/>). A model registers the backbone's <c>blocks</c> and <c>norm</c> as its own children
/// (<see cref="RegisterInto"/>), so every model's weights are named <c>blocks.{i}.…</c> and <c>norm.weight</c>, as
/// language-model checkpoints always were, and a pretrained backbone moves between heads by name.
/// </summary>
public sealed class SequenceBackbone : StreamingModule<ModelState>
{
    public TitansConfig Config { get; }
    readonly ModuleList<Block> blocks;
    readonly RmsNorm norm;

    internal IList<Block> Blocks => blocks;

    public SequenceBackbone(string name, TitansConfig config) : base(name)
    {
        Config = config.Validate();
        blocks = new ModuleList<Block>(Enumerable.Range(0, config.Layers).Select(i => Block.Create($"block{i}", config)).ToArray());
        norm = new RmsNorm("norm", config.ModelDim);
        RecomputeTokens = config.UsesMemory && config.Memory.RecomputeBlocks != RecomputeBlocksMode.Never
            ? (long)config.Memory.RecomputeGroup * config.Memory.ChunkSize : 0;
        RecomputeWhen = config.UsesMemory ? config.Memory.RecomputeBlocks : RecomputeBlocksMode.Never;
        RegisterComponents();
    }

    /// <summary>
    /// Training recomputes each memory block over groups of about this many tokens (<see cref="BlockRecomputation"/>):
    /// autograd keeps a block's state per group, not per chunk. By default the memory's RecomputeGroup × ChunkSize (0 where
    /// its RecomputeBlocks is Never); 0 off. <see cref="RecomputeWhen"/> says whether a call recomputes.
    /// Values and gradients are the same either way.
    /// </summary>
    public long RecomputeTokens { get; set; }

    /// <summary>Whether training recomputes at all (Auto: where the blocks' activations would not fit the budget).</summary>
    public RecomputeBlocksMode RecomputeWhen { get; set; }

    /// <summary>
    /// Bytes autograd would keep for the blocks' activations over <paramref name="tokens"/> tokens without recomputation:
    /// <see cref="ActivationWidths"/> values of the model's width per token and block.
    /// </summary>
    public long ActivationBytes(long tokens, long elementBytes) =>
        tokens * Config.Layers * ActivationWidths(Config.Architecture) * Config.ModelDim * elementBytes;

    /// <summary>
    /// Activations per token and block in units of the model's width: at least the larger of two presets' measurements
    /// at 32K (peak memory without block recomputation less with it; docs/fast-memory.md): MAC 60–67 in `small`'s
    /// 2-layer models and 173 in `tiny`, whose segments keep more per token beside its narrow width; MAG and MAL 60–67 and
    /// 71–74; LMM 10 and 38 (80 for it too: an estimate too high only recomputes sooner).
    /// </summary>
    internal static long ActivationWidths(Architecture architecture) => architecture == Architecture.Mac ? 180 : 80;

    /// <summary>The memory Auto lets the activations take: a quarter of what this process may use (container limits included).</summary>
    public static long ActivationBudget => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4;

    /// <summary>Whether a training call over <paramref name="tokens"/> tokens recomputes its memory blocks.</summary>
    public bool Recomputes(long tokens, long elementBytes, long budget) => RecomputeTokens > 0 && RecomputeWhen switch
    {
        RecomputeBlocksMode.Always => true,
        RecomputeBlocksMode.Auto => ActivationBytes(tokens, elementBytes) > budget,
        _ => false,
    };

    /// <summary>Registers the blocks and the final norm as children of <paramref name="owner"/> (names <c>blocks</c>, <c>norm</c>).</summary>
    public void RegisterInto(nn.Module owner)
    {
        owner.register_module("blocks", blocks);
        owner.register_module("norm", norm);
    }

    /// <summary>x: [B, T, d] → the normed output [B, T, d], and the state to continue from.</summary>
    public override (Tensor Output, ModelState State) Forward(Tensor x, ModelState? state)
    {
        var (output, next) = Run(x, state, normed: true);
        return (output!, next);
    }

    /// <summary>The state after <paramref name="x"/>, without the final norm (for input that is only read).</summary>
    public ModelState Advance(Tensor x, ModelState? state) => Run(x, state, normed: false).State;

    /// <summary>
    /// A state reached without gradient (a training stream's prefix) with every memory tied back to the gradient path of
    /// its starting state (<see cref="Memory.NeuralMemory.WithGradientToStart"/>). Values are unchanged; the given
    /// state is left as it is.
    /// </summary>
    public ModelState WithGradientToStart(ModelState state)
    {
        CheckState(state);
        return new ModelState(blocks.Select((b, i) => b.WithGradientToStart(state.Blocks[i])).ToArray(), state.Position);
    }

    (Tensor? Output, ModelState State) Run(Tensor x, ModelState? state, bool normed)
    {
        if (x.dim() != 3 || x.shape[2] != Config.ModelDim)
            throw new ArgumentException($"The backbone takes [batch, time, {Config.ModelDim}], got [{string.Join(", ", x.shape)}].", nameof(x));
        if (state is not null) CheckState(state);
        using var scope = NewDisposeScope();
        var states = new BlockState[blocks.Count];
        bool recompute = is_grad_enabled() && Recomputes(x.shape[0] * x.shape[1], x.element_size(), ActivationBudget);
        for (int i = 0; i < blocks.Count; i++)
            (x, states[i]) = recompute && blocks[i].Memory is not null
                ? BlockRecomputation.Forward(blocks[i], x, state?.Blocks[i], RecomputeTokens)
                : blocks[i].Forward(x, state?.Blocks[i]);
        Tensor? output = normed ? norm.forward(x) : null;
        var next = new ModelState(states, (state?.Position ?? 0) + x.shape[1]);
        scope.MoveToOuter(output is null ? next.Tensors : next.Tensors.Append(output));
        return (output, next);
    }

    void CheckState(ModelState state)
    {
        if (state.Blocks.Count != blocks.Count)
            throw new ArgumentException($"The state has {state.Blocks.Count} blocks, the model {blocks.Count}.", nameof(state));
    }
}
