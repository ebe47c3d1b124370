using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Titans.Layers;

/// <summary>
/// What attention keeps between streaming calls: rotated keys and values of the last tokens, [B, H, L, d_h], and the
/// absolute position of the next token. Full attention keeps every token; sliding-window attention at most w − 1.
/// </summary>
public sealed record AttentionCache(Tensor Keys, Tensor Values, long Position) : IDisposable
{
    public void Dispose()
    {
        Keys.Dispose();
        Values.Dispose();
    }
}

/// <summary>
/// Multi-head causal self-attention with rotary positions (the short-term memory of TITANS.md §4). With a window w,
/// query t sees keys t−w+1..t only, computed block by block: queries in blocks of w attend to a 2w-key slice, so
/// time and memory are O(T·w), never a T×T mask. Without a window it is full causal attention through libtorch's
/// scaled-dot-product attention. A cache makes pieces of a stream equal the whole.
/// </summary>
public sealed class CausalAttention : StreamingModule<AttentionCache>
{
    readonly Linear q_proj, k_proj, v_proj, o_proj;
    public int Heads { get; }
    public int HeadDim { get; }
    /// <summary>Keys visible to each query, itself included; null for full attention.</summary>
    public int? Window { get; }

    public CausalAttention(string name, int dim, int heads, int? window = null) : base(name)
    {
        if (heads < 1 || dim % heads != 0)
            throw new ArgumentException($"{heads} attention heads do not divide the width {dim}.", nameof(heads));
        if (window is < 1) throw new ArgumentException($"The attention window must be at least 1 token, got {window}.", nameof(window));
        Heads = heads;
        HeadDim = dim / heads;
        Window = window;
        q_proj = nn.Linear(dim, dim, hasBias: false);
        k_proj = nn.Linear(dim, dim, hasBias: false);
        v_proj = nn.Linear(dim, dim, hasBias: false);
        o_proj = nn.Linear(dim, dim, hasBias: false);
        RegisterComponents();
    }

    /// <summary>x: [B, T, d] continuing <paramref name="cache"/> (null: a sequence start). The cache is not modified.</summary>
    public override (Tensor Output, AttentionCache State) Forward(Tensor x, AttentionCache? cache)
    {
        using var scope = NewDisposeScope();
        long batch = x.shape[0], length = x.shape[1], offset = cache?.Position ?? 0;
        Tensor Heads_(Linear proj) => proj.forward(x).view(batch, length, Heads, HeadDim).transpose(1, 2);
        Tensor q = RotaryEmbedding.Apply(Heads_(q_proj), offset);
        Tensor k = RotaryEmbedding.Apply(Heads_(k_proj), offset);
        Tensor v = Heads_(v_proj);
        Tensor keys = cache is null ? k : cat(new[] { cache.Keys, k }, 2);
        Tensor values = cache is null ? v : cat(new[] { cache.Values, v }, 2);

        Tensor attended = Window is int w
            ? WindowAttention(q, keys, values, w)
            : cache is null
                ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true)
                : nn.functional.scaled_dot_product_attention(q, keys, values, CausalMask(length, keys.shape[2], q));
        Tensor y = o_proj.forward(attended.transpose(1, 2).reshape(batch, length, Heads * HeadDim));

        long keep = Window is int window ? Math.Min(window - 1, keys.shape[2]) : keys.shape[2];
        var next = new AttentionCache(keys.narrow(2, keys.shape[2] - keep, keep).clone(),
            values.narrow(2, values.shape[2] - keep, keep).clone(), offset + length);
        scope.MoveToOuter(y, next.Keys, next.Values);
        return (y, next);
    }

    /// <summary>Additive mask for T new queries over L keys whose last T are the queries' own: key j ≤ query's position.</summary>
    static Tensor CausalMask(long queries, long keys, Tensor like)
    {
        Tensor allowed = ones(queries, keys, dtype: ScalarType.Bool, device: like.device).tril(keys - queries);
        return zeros(queries, keys, dtype: like.dtype, device: like.device).masked_fill(allowed.logical_not(), double.NegativeInfinity);
    }

    /// <summary>
    /// q: [B, H, T, d_h]; keys/values: [B, H, p + T, d_h] where the first p (&lt; w) come from the cache. Queries are cut
    /// into blocks of w; block j needs keys from w − 1 before its first query to its last query, which lie in a slice
    /// of 2w keys. A band mask keeps 0 ≤ q − k &lt; w, and keys before the stream's start are masked out.
    /// </summary>
    internal static Tensor WindowAttention(Tensor q, Tensor keys, Tensor values, int w)
    {
        long batch = q.shape[0], heads = q.shape[1], length = q.shape[2], dim = q.shape[3];
        long prefix = keys.shape[2] - length;
        long blocks = (length + w - 1) / w;
        // Extended key index e ↔ position (first query's position) − w + e: w slots before the first query, then keys.
        Tensor Extend(Tensor t) => nn.functional.pad(t, new long[] { 0, 0, w - prefix, blocks * w - length });
        Tensor Windows(Tensor t) => Extend(t).unfold(2, 2 * w, w).transpose(-1, -2);    // [B, H, blocks, 2w, d_h]
        Tensor qBlocks = nn.functional.pad(q, new long[] { 0, 0, 0, blocks * w - length }).view(batch, heads, blocks, w, dim);

        Tensor scores = qBlocks.matmul(Windows(keys).transpose(-1, -2)) / Math.Sqrt(dim); // [B, H, blocks, w, 2w]
        Tensor i = arange(w, device: q.device).view(w, 1), e = arange(2 * w, device: q.device).view(1, 2 * w);
        Tensor band = (e > i).logical_and(e <= i + w);                                   // 0 ≤ q − k < w
        Tensor j = arange(blocks, device: q.device).view(blocks, 1, 1);
        Tensor started = (e.unsqueeze(0) + j * w) >= (w - prefix);                          // no key before the stream
        Tensor allowed = band.unsqueeze(0).logical_and(started);                           // [blocks, w, 2w]
        Tensor weights = scores.masked_fill(allowed.logical_not(), double.NegativeInfinity).softmax(-1);
        Tensor output = weights.matmul(Windows(values));                                   // [B, H, blocks, w, d_h]
        return output.view(batch, heads, blocks * w, dim).narrow(2, 0, length);
    }
}
