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
/// Multi-head causal self-attention with rotary positions (the short-term memory of docs/method.md §4). With a window w,
/// query t sees keys t−w+1..t only, computed block by block: queries in blocks of w attend to a 2w-key slice, so
/// time and memory are O(T·w), never a T×T mask. Without a window it is full causal attention through libtorch's
/// scaled-dot-product attention. A cache makes pieces of a stream equal the whole.
/// <para>
/// Persistent memory (docs/method.md §4): N_p learned, input-independent tokens in the attention's input space. Their keys and values
/// carry no rotary position and every query sees them, so a sliding window never drops them (the attention masks of
/// the paper's Figure 3). They are recomputed from the parameters on every call, never cached.
/// </para>
/// </summary>
public sealed class CausalAttention : StreamingModule<AttentionCache>
{
    readonly Linear q_proj, k_proj, v_proj, o_proj;
    readonly Parameter? persistent_memory; // [N_p, d]
    readonly RotaryTables rotary = new();   // not a tensor field: never registered, never in a checkpoint
    public int Heads { get; }
    public int HeadDim { get; }
    /// <summary>Keys visible to each query, itself included; null for full attention.</summary>
    public int? Window { get; }
    /// <summary>The persistent memory tokens p_1..p_Np, [N_p, d]; null when there are none.</summary>
    public Tensor? PersistentMemory => persistent_memory;

    protected override void Dispose(bool disposing)
    {
        if (disposing) rotary.Dispose();
        base.Dispose(disposing);
    }

    public CausalAttention(string name, int dim, int heads, int? window = null, int persistentTokens = 0) : base(name)
    {
        if (heads < 1 || dim % heads != 0)
            throw new ArgumentException($"{heads} attention heads do not divide the width {dim}.", nameof(heads));
        if (window is < 1) throw new ArgumentException($"The attention window must be at least 1 token, got {window}.", nameof(window));
        if (persistentTokens < 0) throw new ArgumentException($"Persistent tokens cannot be negative, got {persistentTokens}.", nameof(persistentTokens));
        Heads = heads;
        HeadDim = dim / heads;
        Window = window;
        q_proj = nn.Linear(dim, dim, hasBias: false);
        k_proj = nn.Linear(dim, dim, hasBias: false);
        v_proj = nn.Linear(dim, dim, hasBias: false);
        o_proj = nn.Linear(dim, dim, hasBias: false);
        // Unit scale, like the RMS-normalized inputs they sit beside.
        if (persistentTokens > 0) persistent_memory = new Parameter(randn(persistentTokens, dim));
        RegisterComponents();
    }

    /// <summary>x: [B, T, d] continuing <paramref name="cache"/> (null: a sequence start). The cache is not modified.</summary>
    public override (Tensor Output, AttentionCache State) Forward(Tensor x, AttentionCache? cache) => Forward(x, null, cache);

    /// <summary>
    /// As <see cref="Forward(Tensor, AttentionCache?)"/>, with one extra context token per position ([B, T, d], MAC's
    /// retrieved memory): it has the rotary position of its own token, and query t sees context tokens 1..t. Only for
    /// full attention; the cache then holds the context's keys and values too.
    /// </summary>
    public (Tensor Output, AttentionCache State) Forward(Tensor x, Tensor? context, AttentionCache? cache)
    {
        using var scope = NewDisposeScope();
        long offset = cache?.Position ?? 0;
        var (cos, sin) = RotaryTables(offset, x.shape[1], x.dtype, x.device);
        var (q, k, v) = Project(x, cos, sin);
        var (y, keys, values) = Attend(q, k, v, context, cache, Persistent(x.shape[0], x.dtype), cos, sin);
        var next = new AttentionCache(keys.clone(), values.clone(), offset + x.shape[1]);
        scope.MoveToOuter(y, next.Keys, next.Values);
        return (y, next);
    }

    /// <summary>cos and sin of the rotary angles at positions offset..offset+length−1, [length, d_h] (kept while the same are asked for).</summary>
    internal (Tensor Cos, Tensor Sin) RotaryTables(long offset, long length, ScalarType dtype, Device device) =>
        rotary.For(offset, length, HeadDim, dtype, device, RotaryEmbedding.DefaultTheta);

    /// <summary>Queries, keys and values of x ([B, T, d]) as [B, H, T, d_h], queries and keys rotated by the given tables ([T, d_h]).</summary>
    internal (Tensor Queries, Tensor Keys, Tensor Values) Project(Tensor x, Tensor cos, Tensor sin) =>
        (RotaryEmbedding.Apply(SplitHeads(q_proj, x), cos, sin), RotaryEmbedding.Apply(SplitHeads(k_proj, x), cos, sin), SplitHeads(v_proj, x));

    /// <summary>
    /// Attention of projected queries, keys and values ([B, H, T, d_h], from <see cref="Project"/>) continuing
    /// <paramref name="cache"/>, with the context tokens of <see cref="Forward(Tensor, Tensor?, AttentionCache?)"/> (their keys
    /// rotated by the same tables as the queries') and the persistent memory's keys and values (<see cref="Persistent"/>).
    /// Returns the output [B, T, d] and the keys and values a cache keeps after it (views; the caller owns them).
    /// </summary>
    internal (Tensor Output, Tensor Keys, Tensor Values) Attend(Tensor q, Tensor k, Tensor v, Tensor? context, AttentionCache? cache,
        (Tensor? Keys, Tensor? Values) persistent, Tensor cos, Tensor sin)
    {
        if (context is not null && Window is not null)
            throw new InvalidOperationException("Per-position context tokens need full attention, not a sliding window.");
        long batch = q.shape[0], length = q.shape[2];
        if (context is not null)
        {
            k = cat(new[] { RotaryEmbedding.Apply(SplitHeads(k_proj, context), cos, sin), k }, 2);
            v = cat(new[] { SplitHeads(v_proj, context), v }, 2);
        }
        Tensor keys = cache is null ? k : cat(new[] { cache.Keys, k }, 2);
        Tensor values = cache is null ? v : cat(new[] { cache.Values, v }, 2);
        var (sinkKeys, sinkValues) = persistent;

        Tensor attended;
        // A window that covers every key (a short sequence) is plain causal attention: take the fused kernel.
        if (Window is int w && keys.shape[2] > w)
            attended = WindowAttention(q, keys, values, w, sinkKeys, sinkValues);
        else if (cache is null && context is null && sinkKeys is null)
            attended = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        else
        {
            long cached = keys.shape[2] - k.shape[2], sinks = sinkKeys?.shape[2] ?? 0;
            Tensor mask = CausalMask(length, sinks + cached, context is null ? 1 : 2, q);
            attended = sinkKeys is null
                ? nn.functional.scaled_dot_product_attention(q, keys, values, mask)
                : nn.functional.scaled_dot_product_attention(q, cat(new[] { sinkKeys, keys }, 2), cat(new[] { sinkValues!, values }, 2), mask);
        }
        Tensor y = o_proj.forward(attended.transpose(1, 2).reshape(batch, length, Heads * HeadDim));

        long keep = Window is int window ? Math.Min(window - 1, keys.shape[2]) : keys.shape[2];
        return (y, keys.narrow(2, keys.shape[2] - keep, keep), values.narrow(2, values.shape[2] - keep, keep));
    }

    /// <summary>input [B, T, d] through a projection, split into heads: [B, H, T, d_h].</summary>
    Tensor SplitHeads(Linear proj, Tensor input) =>
        proj.forward(input).view(input.shape[0], input.shape[1], Heads, HeadDim).transpose(1, 2);

    /// <summary>Keys and values of the persistent memory, [B, H, N_p, d_h], without rotation; nulls when there is none.</summary>
    internal (Tensor? Keys, Tensor? Values) Persistent(long batch, ScalarType dtype)
    {
        if (persistent_memory is null) return (null, null);
        Tensor tokens = persistent_memory.to(dtype).unsqueeze(0);
        return (SplitHeads(k_proj, tokens).expand(batch, -1, -1, -1), SplitHeads(v_proj, tokens).expand(batch, -1, -1, -1));
    }

    /// <summary>
    /// Additive mask for T new queries over <paramref name="visible"/> keys every query sees (persistent memory, cache),
    /// then <paramref name="streams"/> groups of T keys aligned with the queries (context, then the queries' own),
    /// each visible up to the query's position.
    /// </summary>
    static Tensor CausalMask(long queries, long visible, int streams, Tensor like)
    {
        Tensor causal = ones(queries, queries, dtype: ScalarType.Bool, device: like.device).tril();
        var parts = new List<Tensor> { ones(queries, visible, dtype: ScalarType.Bool, device: like.device) };
        for (int s = 0; s < streams; s++) parts.Add(causal);
        Tensor allowed = cat(parts, 1);
        return zeros(allowed.shape, dtype: like.dtype, device: like.device).masked_fill(allowed.logical_not(), double.NegativeInfinity);
    }

    /// <summary>
    /// q: [B, H, T, d_h]; keys/values: [B, H, p + T, d_h] where the first p (&lt; w) come from the cache. Queries are cut
    /// into blocks of w; block j needs keys from w − 1 before its first query to its last query, which lie in a slice
    /// of 2w keys. A band mask keeps 0 ≤ q − k &lt; w, and keys before the stream's start are masked out. Sink keys and
    /// values ([B, H, N_p, d_h], the persistent memory) are visible to every query and share its softmax.
    /// </summary>
    internal static Tensor WindowAttention(Tensor q, Tensor keys, Tensor values, int w, Tensor? sinkKeys = null, Tensor? sinkValues = null)
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
        scores = scores.masked_fill(allowed.logical_not(), double.NegativeInfinity);
        Tensor output;
        if (sinkKeys is null)
            output = scores.softmax(-1).matmul(Windows(values));                           // [B, H, blocks, w, d_h]
        else
        {
            long sinks = sinkKeys.shape[2];
            Tensor sinkScores = qBlocks.matmul(sinkKeys.unsqueeze(2).transpose(-1, -2)) / Math.Sqrt(dim); // [B, H, blocks, w, N_p]
            Tensor weights = cat(new[] { sinkScores, scores }, -1).softmax(-1);
            output = weights.narrow(-1, 0, sinks).matmul(sinkValues!.unsqueeze(2))
                + weights.narrow(-1, sinks, 2 * w).matmul(Windows(values));
        }
        return output.view(batch, heads, blocks * w, dim).narrow(2, 0, length);
    }
}
