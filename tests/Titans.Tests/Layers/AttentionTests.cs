using TorchSharp;
using Titans.Layers;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Layers;

/// <summary>Short-term memory (docs/method.md §4): sliding-window and full causal attention, rotary positions, streaming.</summary>
public class AttentionTests
{
    static CausalAttention Build(int? window, long seed = 1, int persistent = 0)
    {
        manual_seed(seed);
        var attention = new CausalAttention("attention", 16, 2, window, persistent);
        attention.to(F64);
        return attention;
    }

    /// <summary>softmax(q kᵀ/√d + mask) v with an explicit T×L mask: key j visible to query i iff 0 ≤ pos_i − pos_j &lt; w.</summary>
    static Tensor NaiveBand(Tensor q, Tensor k, Tensor v, int w)
    {
        long t = q.shape[2], l = k.shape[2], prefix = l - t;
        Tensor qi = arange(t, dtype: ScalarType.Int64).view(t, 1) + prefix, kj = arange(l, dtype: ScalarType.Int64).view(1, l);
        Tensor allowed = (qi - kj >= 0).logical_and(qi - kj < w);
        Tensor scores = q.matmul(k.transpose(-1, -2)) / Math.Sqrt(q.shape[3]);
        return scores.masked_fill(allowed.logical_not(), double.NegativeInfinity).softmax(-1).matmul(v);
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(3, 0)]
    [InlineData(5, 4)]
    [InlineData(8, 2)]
    [InlineData(30, 0)]
    public void BlockwiseWindowEqualsBandMaskedAttention(int window, int cached)
    {
        using var scope = NewDisposeScope();
        var g = Seeded(2);
        long length = 21, total = cached + length;
        Tensor q = Normal(g, 2, 3, length, 4), k = Normal(g, 2, 3, total, 4), v = Normal(g, 2, 3, total, 4);
        AssertClose(NaiveBand(q, k, v, window), CausalAttention.WindowAttention(q, k, v, window), 1e-12, "attention output");
    }

    [Fact]
    public void WindowCoveringTheSequenceIsFullAttention()
    {
        using var scope = NewDisposeScope();
        Tensor x = Normal(Seeded(3), 2, 13, 16);
        AssertClose(Build(null).forward(x), Build(13).forward(x), 1e-12, "outputs");
    }

    [Theory]
    [InlineData(null)]
    [InlineData(4)]
    [InlineData(1)]
    public void StreamingInPiecesEqualsWhole(int? window)
    {
        using var scope = NewDisposeScope();
        var attention = Build(window);
        Tensor x = Normal(Seeded(4), 2, 29, 16);
        Tensor whole = attention.forward(x);
        var random = new Random(5);
        var pieces = new List<Tensor>();
        AttentionCache? cache = null;
        for (long start = 0; start < 29;)
        {
            long size = Math.Min(random.Next(1, 7), 29 - start);
            var (y, next) = attention.Forward(x.narrow(1, start, size), cache);
            cache?.Dispose();
            pieces.Add(y);
            cache = next;
            start += size;
        }
        AssertClose(whole, cat(pieces, 1), 1e-12, "outputs");
        if (window is int w) Assert.Equal(w - 1, cache!.Keys.shape[2]); // the cache stays bounded by the window
    }

    [Theory]
    [InlineData(null)]
    [InlineData(4)]
    public void OutputAtTDoesNotDependOnLaterInputs(int? window)
    {
        using var scope = NewDisposeScope();
        var attention = Build(window);
        Tensor x = Normal(Seeded(6), 1, 17, 16), changed = x.clone();
        changed[.., 9..] = Normal(Seeded(7), 1, 8, 16);
        Tensor a = attention.forward(x), b = attention.forward(changed);
        AssertClose(a.narrow(1, 0, 9), b.narrow(1, 0, 9), 1e-13, "outputs before the change");
        Assert.True((a.narrow(1, 9, 8) - b.narrow(1, 9, 8)).abs().max().item<double>() > 1e-6);
    }

    [Fact]
    public void WindowHidesKeysOlderThanW()
    {
        // With w = 4, the output at t = 10 must not change when token 6 changes, and must when token 7 does.
        using var scope = NewDisposeScope();
        var attention = Build(4);
        Tensor x = Normal(Seeded(8), 1, 11, 16);
        Tensor Output(int changedToken)
        {
            Tensor y = x.clone();
            y[0, changedToken] = Normal(Seeded(9), 16);
            return attention.forward(y).select(1, 10);
        }
        Tensor baseline = attention.forward(x).select(1, 10);
        AssertClose(baseline, Output(6), 1e-13, "token outside the window");
        Assert.True((baseline - Output(7)).abs().max().item<double>() > 1e-6, "token inside the window must matter");
    }

    [Fact]
    public void RotaryScoresDependOnlyOnRelativePosition()
    {
        using var scope = NewDisposeScope();
        var g = Seeded(10);
        Tensor q = Normal(g, 1, 1, 1, 8), k = Normal(g, 1, 1, 1, 8);
        double Score(long qPos, long kPos) =>
            (RotaryEmbedding.Apply(q, qPos) * RotaryEmbedding.Apply(k, kPos)).sum().item<double>();
        Assert.Equal(Score(7, 3), Score(1_000_007, 1_000_003), 9);
        Assert.NotEqual(Score(7, 3), Score(7, 4), 6);
    }

    /// <summary>
    /// The whole module written out with an explicit mask over [persistent ‖ context ‖ x]: persistent keys (no rotation)
    /// visible to all, context token i and input token i (rotated at position i) visible to query j iff 0 ≤ j − i &lt; w.
    /// </summary>
    static Tensor NaiveModule(CausalAttention attention, Tensor x, Tensor? context, int? window)
    {
        var p = attention.named_parameters().ToDictionary(n => n.name, n => n.parameter);
        long b = x.shape[0], t = x.shape[1], h = attention.Heads, dh = attention.HeadDim;
        Tensor Split(Tensor input, string proj) => input.matmul(p[proj + ".weight"].t()).view(input.shape[0], -1, h, dh).transpose(1, 2);
        Tensor q = RotaryEmbedding.Apply(Split(x, "q_proj"), 0);
        var keys = new List<Tensor>();
        var values = new List<Tensor>();
        var masks = new List<Tensor>();
        Tensor j = arange(t, dtype: ScalarType.Int64).view(t, 1), i = arange(t, dtype: ScalarType.Int64).view(1, t);
        Tensor band = (j - i >= 0).logical_and(j - i < (window ?? int.MaxValue));
        if (p.TryGetValue("persistent_memory", out var persistent))
        {
            keys.Add(Split(persistent.unsqueeze(0), "k_proj").expand(b, -1, -1, -1));
            values.Add(Split(persistent.unsqueeze(0), "v_proj").expand(b, -1, -1, -1));
            masks.Add(ones(t, persistent.shape[0], dtype: ScalarType.Bool));
        }
        foreach (var input in context is null ? new[] { x } : new[] { context, x })
        {
            keys.Add(RotaryEmbedding.Apply(Split(input, "k_proj"), 0));
            values.Add(Split(input, "v_proj"));
            masks.Add(band);
        }
        Tensor scores = q.matmul(cat(keys, 2).transpose(-1, -2)) / Math.Sqrt(dh);
        Tensor attended = scores.masked_fill(cat(masks, 1).logical_not(), double.NegativeInfinity).softmax(-1).matmul(cat(values, 2));
        return attended.transpose(1, 2).reshape(b, t, h * dh).matmul(p["o_proj.weight"].t());
    }

    [Theory]
    [InlineData(null, 0)]
    [InlineData(null, 3)]
    [InlineData(1, 2)]
    [InlineData(4, 3)]
    [InlineData(30, 5)]
    public void PersistentMemoryIsVisibleToEveryQuery(int? window, int persistent)
    {
        using var scope = NewDisposeScope();
        var attention = Build(window, 11, persistent);
        Tensor x = Normal(Seeded(12), 2, 19, 16);
        AssertClose(NaiveModule(attention, x, null, window), attention.forward(x), 1e-12, "outputs");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void ContextTokenIsVisibleFromItsOwnPosition(int persistent)
    {
        using var scope = NewDisposeScope();
        var attention = Build(null, 13, persistent);
        var g = Seeded(14);
        Tensor x = Normal(g, 2, 17, 16), context = Normal(g, 2, 17, 16);
        AssertClose(NaiveModule(attention, x, context, null), attention.Forward(x, context, null).Output, 1e-12, "outputs");
    }

    [Theory]
    [InlineData(null, false)]
    [InlineData(null, true)]
    [InlineData(4, false)]
    public void PersistentMemoryAndContextStreamInPieces(int? window, bool withContext)
    {
        using var scope = NewDisposeScope();
        var attention = Build(window, 15, 3);
        var g = Seeded(16);
        Tensor x = Normal(g, 2, 23, 16), context = Normal(g, 2, 23, 16);
        Tensor whole = attention.Forward(x, withContext ? context : null, null).Output;
        var pieces = new List<Tensor>();
        AttentionCache? cache = null;
        foreach (var (start, size) in new (long, long)[] { (0, 5), (5, 1), (6, 9), (15, 8) })
        {
            var (y, next) = attention.Forward(x.narrow(1, start, size), withContext ? context.narrow(1, start, size) : null, cache);
            cache?.Dispose();
            pieces.Add(y);
            cache = next;
        }
        AssertClose(whole, cat(pieces, 1), 1e-12, "outputs");
    }

    [Fact]
    public void BadShapesAreRejected()
    {
        Assert.Throws<ArgumentException>(() => new CausalAttention("a", 10, 3));
        Assert.Throws<ArgumentException>(() => new CausalAttention("a", 16, 2, window: 0));
        Assert.Throws<ArgumentException>(() => new CausalAttention("a", 16, 2, persistentTokens: -1));
        using var x = zeros(1, 3, 16);
        Assert.Throws<InvalidOperationException>(() => new CausalAttention("a", 16, 2, window: 4).Forward(x, x, null));
    }
}
