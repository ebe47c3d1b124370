using TorchSharp;
using Titans.Layers;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Layers;

/// <summary>Short-term memory (TITANS.md §4): sliding-window and full causal attention, rotary positions, streaming.</summary>
public class AttentionTests
{
    static CausalAttention Build(int? window, long seed = 1)
    {
        manual_seed(seed);
        var attention = new CausalAttention("attention", 16, 2, window);
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

    [Fact]
    public void BadShapesAreRejected()
    {
        Assert.Throws<ArgumentException>(() => new CausalAttention("a", 10, 3));
        Assert.Throws<ArgumentException>(() => new CausalAttention("a", 16, 2, window: 0));
    }
}
