using Titans.Layers;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>Transformer++ (full causal attention) and SWA (a sliding window): h = x + attention(RMSNorm(x)).</summary>
public sealed class AttentionBlock : Block
{
    readonly CausalAttention attention;

    public AttentionBlock(string name, TitansConfig config) : base(name, config)
    {
        attention = new CausalAttention("attention", config.ModelDim, config.Heads, config.UsesWindow ? config.Window : null);
        Register(config, ("attention", attention));
    }

    internal override CausalAttention Attention => attention;

    protected override (Tensor Output, BlockState State) Mix(Tensor x, BlockState? state)
    {
        var (mixed, cache) = attention.Forward(mixer_norm.forward(x), StateOf<AttentionBlockState>(state)?.Attention);
        return (x + mixed, new AttentionBlockState(cache));
    }

    internal override BlockState WithGradientToStart(BlockState state) => new AttentionBlockState(OwnCopy(StateOf<AttentionBlockState>(state)!.Attention));
}
