using Titans.Runtime;
using TorchSharp;
using Titans.Layers;
using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// Pre-norm residual block: h = x + mixer(RMSNorm(x)); y = h + SwiGLU(RMSNorm(h)). The mixer is the architecture
/// (docs/method.md §4), one class each with its own state: <see cref="AttentionBlock"/> (Transformer++, SWA),
/// <see cref="MemoryBlock"/> (LMM), <see cref="MacBlock"/>, <see cref="MagBlock"/>, <see cref="MalBlock"/>.
/// <see cref="Create"/> is the one place that maps an architecture to its block. Weights are named as they always
/// were (<c>mixer_norm</c>, <c>attention</c>, <c>memory</c>, …, <c>ffn</c>), whichever class holds them.
/// </summary>
public abstract class Block : StreamingModule<BlockState>
{
    // Field names are the checkpoint's tensor names.
    protected readonly RmsNorm mixer_norm, ffn_norm;
    SwiGlu? ffn;

    protected Block(string name, TitansConfig config) : base(name)
    {
        mixer_norm = new RmsNorm("mixer_norm", config.ModelDim);
        ffn_norm = new RmsNorm("ffn_norm", config.ModelDim);
    }

    /// <summary>The block of <paramref name="config"/>'s architecture.</summary>
    public static Block Create(string name, TitansConfig config) => config.Architecture switch
    {
        Architecture.TransformerPlusPlus or Architecture.SlidingWindow => new AttentionBlock(name, config),
        Architecture.Lmm => new MemoryBlock(name, config),
        Architecture.Mac => new MacBlock(name, config),
        Architecture.Mag => new MagBlock(name, config),
        Architecture.Mal => new MalBlock(name, config),
        _ => throw new ArgumentOutOfRangeException(nameof(config), $"Architecture {config.Architecture} has no block."),
    };

    /// <summary>
    /// Called by each block's constructor after it built its mixer's modules: builds the feed-forward (last, so the
    /// weights drawn for a seed are the same as ever) and registers every module in the order weights were always listed.
    /// </summary>
    protected void Register(TitansConfig config, params (string Name, nn.Module? Module)[] mixer)
    {
        ffn = new SwiGlu("ffn", config.ModelDim, config.FeedForwardWidth);
        register_module("mixer_norm", mixer_norm);
        register_module("ffn_norm", ffn_norm);
        foreach (var (name, module) in mixer)
            if (module is not null) register_module(name, module);
        register_module("ffn", ffn);
    }

    /// <summary>The block's neural memory; null in attention blocks.</summary>
    internal virtual NeuralMemory? Memory => null;

    /// <summary>The block's attention; null in LMM.</summary>
    internal virtual CausalAttention? Attention => null;

    /// <summary>h = the input plus the mixer's output(s), and the state to continue from: everything before the feed-forward.</summary>
    protected abstract (Tensor Output, BlockState State) Mix(Tensor x, BlockState? state);

    /// <summary>
    /// <paramref name="state"/>, reached without gradient, with its memory tied to the gradient path of the state a stream
    /// starts from (<see cref="NeuralMemory.WithGradientToStart"/>); blocks without memory return their state with
    /// handles of their own.
    /// </summary>
    internal abstract BlockState WithGradientToStart(BlockState state);

    /// <summary>Memory blocks: the memory state a stream starts from, for the batch and dtype of <paramref name="like"/> (W₀ by default).</summary>
    protected virtual NeuralMemoryState StartState(Tensor like) => Memory!.InitialState(like.shape[0], like.dtype, like.device);

    /// <summary>
    /// <see cref="WithGradientToStart"/> for memory blocks: <paramref name="tie"/> builds the tied state from the given
    /// one and the start state (<see cref="StartState"/>); what it builds outlives the scope it is built in.
    /// </summary>
    protected BlockState TiedToStart<T>(BlockState state, Func<T, NeuralMemoryState, BlockState> tie) where T : BlockState
    {
        var given = StateOf<T>(state)!;
        Tensor like = given.Memory!.Memory.Weights[0];
        using var scope = NewDisposeScope();
        var next = tie(given, StartState(like));
        scope.MoveToOuter(next.Tensors);
        return next;
    }

    /// <summary>Memory blocks: a recomputed group of about <paramref name="tokens"/> tokens, aligned as the block needs (MAC: whole segments).</summary>
    internal virtual long AlignedGroupTokens(long tokens) => tokens;

    /// <summary>Memory blocks: the memory's position after <paramref name="state"/> (at a start, after what it reads first).</summary>
    internal virtual long MemoryPosition(BlockState? state) => state?.Memory?.Position ?? 0;

    /// <summary><paramref name="state"/> as this block's own kind of state; another kind is an error.</summary>
    protected T? StateOf<T>(BlockState? state) where T : BlockState => state switch
    {
        null => null,
        T own => own,
        _ => throw new ArgumentException($"A {state.GetType().Name} was given to a {GetType().Name}, which carries a {typeof(T).Name}.", nameof(state)),
    };

    public override (Tensor Output, BlockState State) Forward(Tensor x, BlockState? state)
    {
        var (h, next) = Mix(x, state);
        return (h + ffn!.forward(ffn_norm.forward(h)), next);
    }

    /// <summary>An attention cache with handles of its own (null stays null).</summary>
    protected static AttentionCache? OwnCopy(AttentionCache? cache) =>
        cache is null ? null : cache with { Keys = cache.Keys.alias(), Values = cache.Values.alias() };
}
