using Titans.Layers;
using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// What MAG and MAL share: sliding-window attention with persistent memory tokens, and a neural memory that runs over
/// [p ‖ x] (docs/method.md §4.2, §4.3): at a sequence start it first reads the persistent tokens (their outputs are not used), so
/// every sequence starts from W₀ updated on p. Their state is a <see cref="GatedBlockState"/>.
/// </summary>
public abstract class WindowAndMemoryBlock : Block
{
    protected readonly CausalAttention attention;
    protected readonly NeuralMemory memory;

    protected WindowAndMemoryBlock(string name, TitansConfig config) : base(name, config)
    {
        attention = new CausalAttention("attention", config.ModelDim, config.Heads, config.Window, config.PersistentTokens);
        memory = new NeuralMemory("memory", config.Memory);
    }

    internal override CausalAttention Attention => attention;
    internal override NeuralMemory Memory => memory;

    /// <summary>The memory state a sequence starts from: W₀ after the persistent tokens (null without them: W₀ itself).</summary>
    protected NeuralMemoryState? PersistentPrefix(Tensor like)
    {
        if (attention.PersistentMemory is not Tensor p) return null;
        var (_, state) = memory.Forward(p.to(like.dtype).unsqueeze(0).expand(like.shape[0], -1, -1), null);
        return state;
    }

    protected override NeuralMemoryState StartState(Tensor like) => PersistentPrefix(like) ?? base.StartState(like);

    internal override long MemoryPosition(BlockState? state) => state?.Memory?.Position ?? attention.PersistentMemory?.shape[0] ?? 0;

    internal override BlockState WithGradientToStart(BlockState state) =>
        TiedToStart<GatedBlockState>(state, (given, start) => new GatedBlockState(OwnCopy(given.Attention), NeuralMemory.WithGradientToStart(given.Memory, start)));
}

/// <summary>MAG: sliding-window attention and the memory side by side on the same input; RMSNorm(attention) ⊙ σ(RMSNorm(memory)).</summary>
public sealed class MagBlock : WindowAndMemoryBlock
{
    readonly RmsNorm attention_out_norm, memory_out_norm;

    public MagBlock(string name, TitansConfig config) : base(name, config)
    {
        memory_out_norm = new RmsNorm("memory_out_norm", config.ModelDim);
        attention_out_norm = new RmsNorm("attention_out_norm", config.ModelDim);
        Register(config, ("attention_out_norm", attention_out_norm), ("memory_out_norm", memory_out_norm), ("attention", attention), ("memory", memory));
    }

    protected override (Tensor Output, BlockState State) Mix(Tensor x, BlockState? state)
    {
        var given = StateOf<GatedBlockState>(state);
        Tensor normed = mixer_norm.forward(x);
        var (attended, cache) = attention.Forward(normed, given?.Attention);
        var (remembered, memoryState) = memory.Forward(normed, given?.Memory ?? PersistentPrefix(normed));
        Tensor gated = attention_out_norm.forward(attended) * memory_out_norm.forward(remembered).sigmoid();
        return (x + gated, new GatedBlockState(cache, memoryState));
    }
}

/// <summary>MAL: a memory layer, then a sliding-window attention layer, each with its own pre-norm and residual.</summary>
public sealed class MalBlock : WindowAndMemoryBlock
{
    readonly RmsNorm memory_norm;

    public MalBlock(string name, TitansConfig config) : base(name, config)
    {
        memory_norm = new RmsNorm("memory_norm", config.ModelDim);
        Register(config, ("memory_norm", memory_norm), ("attention", attention), ("memory", memory));
    }

    protected override (Tensor Output, BlockState State) Mix(Tensor x, BlockState? state)
    {
        var given = StateOf<GatedBlockState>(state);
        Tensor normed = memory_norm.forward(x);
        var (remembered, memoryState) = memory.Forward(normed, given?.Memory ?? PersistentPrefix(normed));
        Tensor afterMemory = x + remembered;
        var (attended, cache) = attention.Forward(mixer_norm.forward(afterMemory), given?.Attention);
        return (afterMemory + attended, new GatedBlockState(cache, memoryState));
    }
}
