using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// Per-token gates of the memory (docs/method.md §2), each [B, H, T]: θ_t the inner learning rate, log(1 − α_t) the log of
/// the retention after forgetting, log η_t the log of the surprise decay. Logs keep products of many gates stable
/// (docs/method.md §3); −∞ is allowed and means a gate of exactly 0 (α = 1 or η = 0).
/// Channel-wise forgetting (the later revision's option) adds <see cref="ChannelLogDecay"/>: per memory layer l a
/// log-retention for each output channel (row) of W^(l), [B, H, T, out_l], which multiplies the scalar retention.
/// </summary>
public sealed record MemoryGates(Tensor Theta, Tensor LogDecay, Tensor LogEta)
{
    public Tensor[]? ChannelLogDecay { get; init; }

    public long Length => Theta.shape[^1];

    /// <summary>log(1 − α) of layer l per output channel, [B, H, T, C] with C = 1 (scalar gates) or out_l.</summary>
    public Tensor LayerLogDecay(int layer) =>
        ChannelLogDecay is null ? LogDecay.unsqueeze(-1) : LogDecay.unsqueeze(-1) + ChannelLogDecay[layer];

    public MemoryGates Slice(long start, long length) =>
        new(Theta.narrow(-1, start, length), LogDecay.narrow(-1, start, length), LogEta.narrow(-1, start, length))
        {
            ChannelLogDecay = ChannelLogDecay?.Select(c => c.narrow(2, start, length)).ToArray(),
        };

    /// <summary>Copies (not views), so a slice kept in a state does not pin the whole sequence's tensors.</summary>
    public MemoryGates Copy() => new(Theta.clone(), LogDecay.clone(), LogEta.clone())
    {
        ChannelLogDecay = ChannelLogDecay?.Select(c => c.clone()).ToArray(),
    };

    public static MemoryGates Concat(MemoryGates a, MemoryGates b)
    {
        if ((a.ChannelLogDecay is null) != (b.ChannelLogDecay is null))
            throw new ArgumentException("Cannot join gates with and without channel-wise forgetting.");
        return new(cat(new[] { a.Theta, b.Theta }, -1), cat(new[] { a.LogDecay, b.LogDecay }, -1), cat(new[] { a.LogEta, b.LogEta }, -1))
        {
            ChannelLogDecay = a.ChannelLogDecay?.Zip(b.ChannelLogDecay!, (x, y) => cat(new[] { x, y }, 2)).ToArray(),
        };
    }

    /// <summary>
    /// Pads to <paramref name="length"/> with finite filler (θ = 0, α = 0, η = 1). Padding only fills the last chunk to
    /// its full shape; no output or state is ever read at a padded position (the recurrence is causal).
    /// </summary>
    public MemoryGates PadTo(long length)
    {
        long extra = length - Length;
        if (extra == 0) return this;
        return new(nn.functional.pad(Theta, new long[] { 0, extra }), nn.functional.pad(LogDecay, new long[] { 0, extra }),
            nn.functional.pad(LogEta, new long[] { 0, extra }))
        {
            ChannelLogDecay = ChannelLogDecay?.Select(c => nn.functional.pad(c, new long[] { 0, 0, 0, extra })).ToArray(),
        };
    }

    /// <summary>Every tensor of the gates (for disposal and comparisons).</summary>
    public IEnumerable<Tensor> Tensors =>
        new[] { Theta, LogDecay, LogEta }.Concat(ChannelLogDecay ?? Array.Empty<Tensor>());
}

/// <summary>The recurrent state of the memory (docs/method.md §2): weights W^(l) and surprise momentum S^(l), each [B, H, out, in].</summary>
public sealed record MemoryWeights(Tensor[] Weights, Tensor[] Momentum)
{
    public int Depth => Weights.Length;

    public MemoryWeights Detach() => new(Weights.Select(w => w.detach()).ToArray(), Momentum.Select(s => s.detach()).ToArray());

    /// <summary>All tensors of the state, weights first, for bulk operations (dispose scopes, finiteness checks).</summary>
    public IEnumerable<Tensor> Tensors => Weights.Concat(Momentum);
}
