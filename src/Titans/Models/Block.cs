using TorchSharp;
using Titans.Layers;
using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>Pre-norm residual block: h = x + mixer(RMSNorm(x)); y = h + SwiGLU(RMSNorm(h)).</summary>
public sealed class Block : StreamingModule<BlockState>
{
    readonly RmsNorm mixer_norm, ffn_norm;
    readonly CausalAttention? attention;
    readonly NeuralMemory? memory;
    readonly SwiGlu ffn;

    public Block(string name, TitansConfig config) : base(name)
    {
        mixer_norm = new RmsNorm("mixer_norm", config.ModelDim);
        ffn_norm = new RmsNorm("ffn_norm", config.ModelDim);
        switch (config.Architecture)
        {
            case Architecture.TransformerPlusPlus:
                attention = new CausalAttention("attention", config.ModelDim, config.Heads);
                break;
            case Architecture.SlidingWindow:
                attention = new CausalAttention("attention", config.ModelDim, config.Heads, config.Window);
                break;
            case Architecture.Lmm:
                memory = new NeuralMemory("memory", config.MemoryConfig);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(config), $"Architecture {config.Architecture} has no block yet.");
        }
        ffn = new SwiGlu("ffn", config.ModelDim, config.FeedForwardWidth);
        RegisterComponents();
    }

    public override (Tensor Output, BlockState State) Forward(Tensor x, BlockState? state)
    {
        Tensor normed = mixer_norm.forward(x);
        Tensor mixed;
        BlockState next;
        if (attention is not null)
        {
            (mixed, var cache) = attention.Forward(normed, state?.Attention);
            next = new BlockState(cache, null);
        }
        else
        {
            (mixed, var memoryState) = memory!.Forward(normed, state?.Memory);
            next = new BlockState(null, memoryState);
        }
        Tensor h = x + mixed;
        return (h + ffn.forward(ffn_norm.forward(h)), next);
    }
}
