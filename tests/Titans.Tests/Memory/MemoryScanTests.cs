using TorchSharp;
using Titans.Memory;
using Titans.Memory.Scans;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Memory;

/// <summary>The memory's math (docs/method.md §2–3): analytic gradients, and the chunked dual form against the reference.</summary>
public class MemoryScanTests
{
    const long Batch = 2, Heads = 2, Dim = 6;

    public static TheoryData<int, bool, MemoryActivation> Forms()
    {
        var data = new TheoryData<int, bool, MemoryActivation>();
        foreach (int depth in new[] { 1, 2, 3 })
            foreach (bool ln in new[] { false, true })
                data.Add(depth, ln, depth == 3 ? MemoryActivation.Silu : MemoryActivation.Gelu);
        data.Add(2, true, MemoryActivation.Silu);
        return data;
    }

    /// <summary>A memory form, random inputs of the given length and a random starting state, all seeded.</summary>
    sealed record Case(MemoryMlp Mlp, Tensor Q, Tensor K, Tensor V, MemoryGates Gates, MemoryWeights State);

    static Case Setup(long seed, long length, int depth = 2, bool layerNorm = true,
        MemoryActivation activation = MemoryActivation.Gelu, double momentumScale = 0.01)
    {
        var (q, k, v, gates) = ScanInputs(seed + 1, Batch, Heads, length, Dim);
        return new Case(Mlp(seed, Heads, Dim, activation, layerNorm), q, k, v, gates,
            State(seed + 2, Batch, Heads, Shapes(depth, (int)Dim), momentumScale));
    }

    [Fact]
    public void LibTorchLoadsAndComputesAGradient()
    {
        using var scope = NewDisposeScope();
        var x = tensor(new[] { 1.0, 2.0, 3.0 }, requires_grad: true);
        (x * x).sum().backward();
        Assert.Equal(new[] { 2.0, 4.0, 6.0 }, x.grad!.data<double>().ToArray());
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void AnalyticInnerGradientEqualsAutogradPerToken(int depth, bool layerNorm, MemoryActivation activation)
    {
        using var scope = NewDisposeScope();
        const long length = 5;
        var mlp = Mlp(1, Heads, Dim, activation, layerNorm);
        var (_, k, v, _) = ScanInputs(2, Batch, Heads, length, Dim);
        var weights = State(3, Batch, Heads, Shapes(depth, (int)Dim)).Weights;

        Tensor[] analytic = MemoryMlp.PerTokenGradients(mlp.GradientFactors(weights, k, v));
        for (long t = 0; t < length; t++)
        {
            var leaves = weights.Select(w => w.detach().requires_grad_(true)).ToArray();
            var loss = mlp.Loss(leaves, k.narrow(2, t, 1), v.narrow(2, t, 1)).sum();
            var grads = torch.autograd.grad(new[] { loss }, leaves);
            for (int l = 0; l < depth; l++)
                AssertClose(grads[l], analytic[l].select(2, t), 1e-12, $"token {t}, layer {l + 1}");
        }
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void ChunkedWithChunkOneEqualsSequentialReference(int depth, bool layerNorm, MemoryActivation activation)
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(4, 11, depth, layerNorm, activation);

        var reference = SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, 1);
        var chunked = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 1);
        AssertClose(reference.Outputs, chunked.Outputs, 1e-12, "outputs");
        AssertClose(reference.Final, chunked.Final, 1e-12, "final state");
    }

    [Theory]
    [MemberData(nameof(Forms))]
    public void ChunkedEqualsMiniBatchReferenceForAnyLength(int depth, bool layerNorm, MemoryActivation activation)
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(7, 37, depth, layerNorm, activation); // 37 = 7 chunks of 5 + 2

        var reference = SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, 5);
        var chunked = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 5);
        AssertClose(reference.Outputs, chunked.Outputs, 1e-12, "outputs");
        AssertClose(reference.Final, chunked.Final, 1e-12, "final state");
        AssertClose(reference.Boundary, chunked.Boundary, 1e-12, "state at the last chunk boundary");
        Assert.Equal(35, chunked.BoundaryTokens);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(2, 5)]
    [InlineData(3, 5)]
    public void ChannelwiseForgettingChunkedEqualsReference(int depth, int chunk)
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(30, 23, depth);
        gates = gates with { ChannelLogDecay = ChannelDecay(33, Batch, Heads, 23, Shapes(depth, (int)Dim)) };
        var reference = SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, chunk);
        var chunked = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, chunk);
        AssertClose(reference.Outputs, chunked.Outputs, 1e-12, "outputs");
        AssertClose(reference.Final, chunked.Final, 1e-12, "final state");
        AssertClose(reference.Boundary, chunked.Boundary, 1e-12, "boundary state");
    }

    [Fact]
    public void ChannelwiseForgettingWithEqualChannelsIsTheScalarGate()
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(34, 13);
        var channels = Shapes(2, (int)Dim).Select(s => gates.LogDecay.unsqueeze(-1).expand(-1, -1, -1, s.Out).clone()).ToArray();
        var channelwise = gates with { LogDecay = zeros_like(gates.LogDecay), ChannelLogDecay = channels };
        var scalar = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 4);
        var perChannel = ChunkedMemoryScan.Scan(mlp, q, k, v, channelwise, state, 4);
        AssertClose(scalar.Outputs, perChannel.Outputs, 1e-12, "outputs");
        AssertClose(scalar.Final, perChannel.Final, 1e-12, "final state");
    }

    [Fact]
    public void ChunkedMiniBatchDiffersFromTokenByToken()
    {
        // Guards the test above: mini-batch gradients at M_0 are a different function from b = 1, not a no-op.
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(7, 20);
        var one = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 1).Outputs;
        var five = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 5).Outputs;
        Assert.True((one - five).abs().max().item<double>() > 1e-6);
    }

    [Fact]
    public void SequenceShorterThanAChunkStillUpdatesTheMemory()
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(10, 3);
        var chunked = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 16);
        var reference = SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, 16);
        AssertClose(reference.Final, chunked.Final, 1e-12, "final state");
        Assert.True((chunked.Final.Weights[0] - state.Weights[0]).abs().max().item<double>() > 1e-4, "the memory did not move");
        Assert.Equal(0, chunked.BoundaryTokens);
    }

    [Fact]
    public void RetrievalUsesTheStateAfterEachToken()
    {
        // y_t = M_t(q_t): the last output equals a plain read of the final memory.
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(13, 9);
        var scan = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 4);
        AssertClose(mlp.Forward(scan.Final.Weights, q.narrow(2, 8, 1)), scan.Outputs.narrow(2, 8, 1), 1e-12, "last output");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void ForgettingEverythingWipesTheMemory(int chunk)
    {
        // α = 1: M_t = 0 · M_{t−1} + S_t, so the weights are the momentum alone.
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(16, 10);
        gates = gates with { LogDecay = full_like(gates.LogDecay, double.NegativeInfinity) };
        var scan = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, chunk);
        for (int l = 0; l < 2; l++)
            AssertClose(scan.Final.Momentum[l], scan.Final.Weights[l], 1e-12, $"layer {l + 1}");
        AssertClose(SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, chunk).Outputs, scan.Outputs, 1e-12, "outputs");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void ZeroMomentumKeepsOnlyTheCurrentSurprise(int chunk)
    {
        // η = 0: S_t = −θ_t u_t; the chunk's end momentum is the last token's scaled gradient, nothing carried.
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(19, 6, layerNorm: false, momentumScale: 1.0);
        gates = gates with { LogEta = full_like(gates.LogEta, double.NegativeInfinity) };
        var scan = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, chunk);
        var reference = SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, chunk);
        AssertClose(reference.Outputs, scan.Outputs, 1e-12, "outputs");
        AssertClose(reference.Final, scan.Final, 1e-12, "final state");

        // The last chunk starts at token 6 − chunk; its end momentum is −θ_6 ∇ℓ(M_0; k_6, v_6).
        var chunkStart = SequentialMemoryScan.Scan(mlp, q.narrow(2, 0, 6 - chunk), k.narrow(2, 0, 6 - chunk),
            v.narrow(2, 0, 6 - chunk), gates.Slice(0, 6 - chunk), state, chunk).Final;
        var u = MemoryMlp.PerTokenGradients(mlp.GradientFactors(chunkStart.Weights, k.narrow(2, 5, 1), v.narrow(2, 5, 1)));
        var theta = gates.Theta.narrow(2, 5, 1).unsqueeze(-1);
        for (int l = 0; l < 2; l++)
            AssertClose(-theta * u[l].squeeze(2), scan.Final.Momentum[l], 1e-12, $"momentum of layer {l + 1}");
    }

    [Fact]
    public void LinearMemoryWithoutMomentumOrForgettingIsTheDeltaRule()
    {
        // L_M = 1, η = 0, α = 0: M_t = M_{t−1} − θ_t · 2 (M_{t−1} k_t − v_t) k_tᵀ and y_t = M_t q_t, written by hand.
        using var scope = NewDisposeScope();
        const long length = 8;
        var (mlp, q, k, v, gates, state) = Setup(22, length, depth: 1, layerNorm: false, momentumScale: 0);
        gates = gates with { LogEta = full_like(gates.LogEta, double.NegativeInfinity), LogDecay = zeros_like(gates.LogDecay) };

        Tensor m = state.Weights[0];
        var expected = new List<Tensor>();
        for (long t = 0; t < length; t++)
        {
            Tensor kt = k.select(2, t).unsqueeze(-1), vt = v.select(2, t).unsqueeze(-1), qt = q.select(2, t).unsqueeze(-1);
            Tensor theta = gates.Theta.select(2, t).unsqueeze(-1).unsqueeze(-1);
            m = m - theta * 2 * (m.matmul(kt) - vt).matmul(kt.transpose(-1, -2));
            expected.Add(m.matmul(qt).transpose(-1, -2));
        }
        var scan = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 1);
        AssertClose(cat(expected, 2), scan.Outputs, 1e-12, "delta-rule outputs");
        AssertClose(m, scan.Final.Weights[0], 1e-12, "delta-rule memory");
    }

    [Fact]
    public void OuterGradientsOfChunkedPathEqualThoseOfTheReference()
    {
        // Autograd through the dual form == autograd through autograd (create_graph) in the reference.
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(24, 9);
        gates = gates with { ChannelLogDecay = ChannelDecay(28, Batch, Heads, 9, Shapes(2, (int)Dim)) };
        var leaves = gates.Tensors.Concat(new[] { q, k, v }).Concat(state.Tensors).Concat(new[] { mlp.LnWeight!, mlp.LnBias! })
            .Select(t => t.requires_grad_(true)).ToArray();
        var probe = Normal(Seeded(27), Batch, Heads, 9, Dim);

        Tensor[] Grads(Func<MemoryScanResult> run)
        {
            var result = run();
            var loss = (result.Outputs * probe).sum() + result.Final.Weights.Select(w => w.square().sum()).Aggregate((a, b) => a + b);
            return torch.autograd.grad(new[] { loss }, leaves).ToArray();
        }
        var reference = Grads(() => SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, 4));
        var chunked = Grads(() => ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 4));
        for (int i = 0; i < leaves.Length; i++)
            AssertClose(reference[i], chunked[i], 1e-10, $"gradient of input {i}");
    }

    /// <summary>Each stabilizer alone and all together, with targets drawn like W₀ (a different draw from the state).</summary>
    public static TheoryData<string, int, bool> StabilizerCases()
    {
        var data = new TheoryData<string, int, bool>();
        foreach (string kind in new[] { "retention", "rows", "layers", "clip", "all" })
            foreach (var (depth, ln) in new[] { (1, false), (2, true), (2, false), (3, true) })
                data.Add(kind, depth, ln);
        return data;
    }

    static MemoryStabilizers Stabilizers(string kind, int depth, long seed)
    {
        var target = State(seed, 1, Heads, Shapes(depth, (int)Dim)).Weights;   // [1, H, out, in], like W₀
        var rows = new MemoryStabilizers { RowNorms = true };
        return kind switch
        {
            "retention" => new MemoryStabilizers { RetentionTarget = target },
            "rows" => rows with { NormTarget = target.Select(rows.Norm).ToArray() },
            "layers" => new MemoryStabilizers { RowNorms = false, NormTarget = target.Select(w => w.square().sum(new long[] { -2, -1 }, keepdim: true).sqrt()).ToArray() },
            "clip" => new MemoryStabilizers { GradientClip = 0.3 },
            "all" => new MemoryStabilizers { RetentionTarget = target, NormTarget = target.Select(rows.Norm).ToArray(), GradientClip = 0.3 },
            "presets" => new MemoryStabilizers { RetentionTarget = target, GradientClip = 0.3 },   // what the model presets use
            "none" => MemoryStabilizers.None,
            _ => throw new ArgumentException(kind),
        };
    }

    [Theory]
    [MemberData(nameof(StabilizerCases))]
    public void StabilizedChunkedEqualsStabilizedReference(string kind, int depth, bool layerNorm)
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(40, 37, depth, layerNorm); // 7 chunks of 5 + 2
        var stabilizers = Stabilizers(kind, depth, 41);
        foreach (int chunk in new[] { 1, 5 })
        {
            var reference = SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, chunk, stabilizers);
            var chunked = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, chunk, stabilizers);
            // 1e-10: the paths agree to 1e-15 at the first token; with a norm fixed every token (chunk 1) at depth 3 the inner
            // loop amplifies that rounding along the 37 tokens (to about 1e-11), as it would any perturbation.
            AssertClose(reference.Outputs, chunked.Outputs, 1e-10, $"{kind}, chunk {chunk}: outputs");
            AssertClose(reference.Final, chunked.Final, 1e-10, $"{kind}, chunk {chunk}: final state");
            AssertClose(reference.Boundary, chunked.Boundary, 1e-10, $"{kind}, chunk {chunk}: boundary state");
            // Guard: the stabilizer changed the recurrence.
            var plain = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, chunk);
            Assert.True((plain.Outputs - chunked.Outputs).abs().max().item<double>() > 1e-6, $"{kind}: no effect");
        }
    }

    [Theory]
    [InlineData("retention")]
    [InlineData("rows")]
    [InlineData("layers")]
    [InlineData("clip")]
    [InlineData("all")]
    public void StabilizedOuterGradientsEqualThoseOfTheReference(string kind)
    {
        // Through the dual form and through autograd of autograd, with channel-wise forgetting and the targets as leaves.
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(42, 11);
        gates = gates with { ChannelLogDecay = ChannelDecay(43, Batch, Heads, 11, Shapes(2, (int)Dim)) };
        var stabilizers = Stabilizers(kind, 2, 44);
        var targets = (stabilizers.RetentionTarget ?? Array.Empty<Tensor>()).Concat(stabilizers.NormTarget ?? Array.Empty<Tensor>());
        var leaves = gates.Tensors.Concat(new[] { q, k, v }).Concat(state.Tensors).Concat(new[] { mlp.LnWeight!, mlp.LnBias! })
            .Concat(targets).Select(t => t.requires_grad_(true)).ToArray();
        var probe = Normal(Seeded(45), Batch, Heads, 11, Dim);

        Tensor[] Grads(Func<MemoryScanResult> run)
        {
            var result = run();
            var loss = (result.Outputs * probe).sum() + result.Final.Tensors.Select(w => w.square().sum()).Aggregate((a, b) => a + b);
            return torch.autograd.grad(new[] { loss }, leaves).ToArray();
        }
        var reference = Grads(() => SequentialMemoryScan.Scan(mlp, q, k, v, gates, state, 4, stabilizers));
        var chunked = Grads(() => ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 4, stabilizers));
        for (int i = 0; i < leaves.Length; i++)
            AssertClose(reference[i], chunked[i], 1e-10, $"{kind}: gradient of input {i}");
    }

    [Fact]
    public void RetentionTowardATargetIsForgettingOfTheDifference()
    {
        // M_t − W₀ follows the plain recurrence from M_0 − W₀ when the inner gradient is taken at M (a linear memory
        // without LayerNorm has ∇ℓ(M) = ∇ℓ(M − W₀) + 2 W₀ k kᵀ, so check the defining identity on the linear part only:
        // with θ = 0 nothing is written, and M_t = W₀ + A_t (M_0 − W₀), S_t = E_t S_0 folded in).
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(46, 9);
        gates = gates with { Theta = zeros_like(gates.Theta) };
        var target = State(47, 1, Heads, Shapes(2, (int)Dim)).Weights;
        var anchored = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 3, new MemoryStabilizers { RetentionTarget = target });
        var shifted = new MemoryWeights(state.Weights.Zip(target, (w, t) => w - t).ToArray(), state.Momentum);
        var plain = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, shifted, 3);
        for (int l = 0; l < 2; l++)
            AssertClose(plain.Final.Weights[l] + target[l], anchored.Final.Weights[l], 1e-12, $"layer {l + 1}");
    }

    /// <summary>Every memory form with and without channel-wise forgetting, then each stabilizer on the default form.</summary>
    public static TheoryData<int, bool, bool, string> RecomputeCases()
    {
        var data = new TheoryData<int, bool, bool, string>();
        foreach (int depth in new[] { 1, 2, 3 })
            foreach (bool ln in new[] { false, true })
                data.Add(depth, ln, depth == 2, "none");
        foreach (string kind in new[] { "retention", "rows", "layers", "clip", "all" })
            data.Add(2, true, true, kind);
        return data;
    }

    [Theory]
    [MemberData(nameof(RecomputeCases))]
    public void RecomputedGroupsGiveTheGradientsOfTheChunkedPathAndTheReference(int depth, bool layerNorm, bool channelwise, string kind)
    {
        // 23 tokens, chunk 4, groups of 2 chunks: two full groups, a group of one chunk, and a trailing partial chunk of 3.
        using var scope = NewDisposeScope();
        const long length = 23;
        var (mlp, q, k, v, gates, state) = Setup(50, length, depth, layerNorm, depth == 3 ? MemoryActivation.Silu : MemoryActivation.Gelu);
        if (channelwise) gates = gates with { ChannelLogDecay = ChannelDecay(51, Batch, Heads, length, Shapes(depth, (int)Dim)) };
        var stabilizers = Stabilizers(kind, depth, 52);
        var targets = (stabilizers.RetentionTarget ?? Array.Empty<Tensor>()).Concat(stabilizers.NormTarget ?? Array.Empty<Tensor>());
        var ln = layerNorm ? new[] { mlp.LnWeight!, mlp.LnBias! } : Array.Empty<Tensor>();
        var leaves = gates.Tensors.Concat(new[] { q, k, v }).Concat(state.Tensors).Concat(ln).Concat(targets)
            .Select(t => t.requires_grad_(true)).ToArray();
        var probe = Normal(Seeded(53), Batch, Heads, length, Dim);
        AssertLikeChunkedAndReference(() => RecomputedMemoryScan.Scan(mlp, q, k, v, gates, state, 4, 2, stabilizers),
            new Case(mlp, q, k, v, gates, state), stabilizers, leaves,
            r => (r.Outputs * probe).sum() + r.Final.Tensors.Concat(r.Boundary.Tensors).Select(w => w.square().sum()).Aggregate((a, b) => a + b),
            1e-12);
    }

    /// <summary>
    /// A scan path against the chunked path and the sequential reference (chunk 4) on one case: outputs and states to
    /// <paramref name="stateTolerance"/>, and the gradient of <paramref name="loss"/> with respect to every leaf to 1e-9
    /// (each leaf must get one).
    /// </summary>
    static void AssertLikeChunkedAndReference(Func<MemoryScanResult> candidate, Case c, MemoryStabilizers stabilizers, Tensor[] leaves,
        Func<MemoryScanResult, Tensor> loss, double stateTolerance)
    {
        (MemoryScanResult, Tensor[]) Run(Func<MemoryScanResult> scan)
        {
            var result = scan();
            return (result, torch.autograd.grad(new[] { loss(result) }, leaves).ToArray());
        }
        var (tested, fromTested) = Run(candidate);
        var (chunked, fromChunks) = Run(() => ChunkedMemoryScan.Scan(c.Mlp, c.Q, c.K, c.V, c.Gates, c.State, 4, stabilizers));
        var (_, fromReference) = Run(() => SequentialMemoryScan.Scan(c.Mlp, c.Q, c.K, c.V, c.Gates, c.State, 4, stabilizers));
        AssertClose(chunked.Outputs, tested.Outputs, stateTolerance, "outputs");
        AssertClose(chunked.Boundary, tested.Boundary, stateTolerance, "boundary state");
        AssertClose(chunked.Final, tested.Final, stateTolerance, "final state");
        Assert.Equal(chunked.BoundaryTokens, tested.BoundaryTokens);
        for (int i = 0; i < leaves.Length; i++)
        {
            Assert.True(fromTested[i].abs().max().item<double>() > 0, $"input {i} got no gradient");
            AssertClose(fromChunks[i], fromTested[i], 1e-9, $"gradient of input {i} against autograd through the chunked path");
            AssertClose(fromReference[i], fromTested[i], 1e-9, $"gradient of input {i} against the reference");
        }
    }

    [Fact]
    public void RecomputedGroupsWithoutGradientAreThePlainChunkedScan()
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(54, 10);
        var plain = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 4);
        using (no_grad())
        {
            var recomputed = RecomputedMemoryScan.Scan(mlp, q, k, v, gates, state, 4, 1);
            AssertClose(plain.Outputs, recomputed.Outputs, 0, "outputs");
            AssertClose(plain.Final, recomputed.Final, 0, "final state");
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => RecomputedMemoryScan.Scan(mlp, q, k, v, gates, state, 4, 0));
    }

    /// <summary>Every memory form without stabilizers and with the presets' (retention toward W₀ and the soft clamp), each alone,
    /// LayerNorm with and without affine, lengths ragged and short, groups of 1, 2, 17 and all chunks.</summary>
    public static TheoryData<int, bool, bool, long, int, string> HandWrittenCases()
    {
        var data = new TheoryData<int, bool, bool, long, int, string>();
        foreach (string kind in new[] { "none", "presets" })
            foreach (int depth in new[] { 1, 2, 3 })
                foreach (bool ln in new[] { false, true })
                    data.Add(depth, ln, ln, 23, 2, kind);
        data.Add(2, true, true, 23, 2, "retention");
        data.Add(2, true, true, 23, 2, "clip");
        data.Add(2, true, false, 23, 2, "presets");   // LayerNorm without affine
        data.Add(2, true, true, 24, 1, "presets");    // whole chunks only
        data.Add(2, true, true, 3, 2, "presets");     // shorter than one chunk
        data.Add(2, true, true, 23, int.MaxValue, "none");  // one group
        data.Add(3, true, true, 9, 1, "presets");
        data.Add(2, true, true, 75, int.MaxValue, "presets");  // 19 chunks: retrieval in two batches
        data.Add(1, false, false, 70, 17, "none");            // two groups, the first in two retrieval batches
        return data;
    }

    [Theory]
    [MemberData(nameof(HandWrittenCases))]
    public void HandWrittenBackwardGivesTheGradientsOfAutogradAndTheReference(int depth, bool layerNorm, bool affine, long length, int group,
        string kind) => AssertHandWrittenNode(depth, layerNorm, affine, length, group, kind, fused: false);

    /// <summary>The same node computed by the fused C# kernel: the same cases, the same tolerances.</summary>
    [Theory]
    [MemberData(nameof(HandWrittenCases))]
    public void FusedBackwardGivesTheGradientsOfAutogradAndTheReference(int depth, bool layerNorm, bool affine, long length, int group,
        string kind) => AssertHandWrittenNode(depth, layerNorm, affine, length, group, kind, fused: true);

    static void AssertHandWrittenNode(int depth, bool layerNorm, bool affine, long length, int group, string kind, bool fused)
    {
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(60 + depth, length, depth, layerNorm, depth == 3 ? MemoryActivation.Silu : MemoryActivation.Gelu);
        if (layerNorm && !affine) mlp = new MemoryMlp(mlp.Activation, true);
        var stabilizers = Stabilizers(kind, depth, 64);
        var ln = affine ? new[] { mlp.LnWeight!, mlp.LnBias! } : Array.Empty<Tensor>();
        var leaves = gates.Tensors.Concat(new[] { q, k, v }).Concat(state.Tensors).Concat(ln).Concat(stabilizers.RetentionTarget ?? Array.Empty<Tensor>())
            .Select(t => t.requires_grad_(true)).ToArray();
        var probe = Normal(Seeded(63), Batch, Heads, length, Dim);
        // States to 1e-10: the same math in another order, and float64 rounding drifts a little over 19 chunks.
        AssertLikeChunkedAndReference(() => HandWrittenScan.Scan(mlp, q, k, v, gates, state, 4, group, stabilizers, fused),
            new Case(mlp, q, k, v, gates, state), stabilizers, leaves,
            r => (r.Outputs * probe).sum() + r.Final.Tensors.Concat(r.Boundary.Tensors).Select(w => (w * w.detach().cos()).sum()).Aggregate((a, b) => a + b),
            1e-10);
    }

    [Theory]
    [InlineData("none", 3)]
    [InlineData("presets", 75)]
    [InlineData("presets", 64)]
    public void HandWrittenScanWithoutGradientIsTheChunkedScan(string kind, long length)
    {
        // The node's forward without autograd (inference keeps the chunked path, which is faster there: docs/fast-memory.md).
        using var scope = NewDisposeScope();
        var (mlp, q, k, v, gates, state) = Setup(70, length);
        var stabilizers = Stabilizers(kind, 2, 71);
        var chunked = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, 4, stabilizers);
        using (no_grad())
        {
            var manual = HandWrittenScan.Scan(mlp, q, k, v, gates, state, 4, 2, stabilizers);
            AssertClose(chunked.Outputs, manual.Outputs, 1e-10, "outputs");
            AssertClose(chunked.Boundary, manual.Boundary, 1e-10, "boundary state");
            AssertClose(chunked.Final, manual.Final, 1e-10, "final state");
            Assert.Equal(chunked.BoundaryTokens, manual.BoundaryTokens);
        }
    }
    /// <summary>The one decision of which scan runs a call: every branch, with the reason it gives.</summary>
    [Theory]
    [InlineData("{\"Algorithm\": \"Sequential\"}", true, 100, ScanKind.Sequential, "token-by-token reference", 0)]
    [InlineData("{}", false, 100, ScanKind.Fused, "no gradient is needed: the fused C# kernel", 0)]
    [InlineData("{\"FusedKernel\": false}", false, 100, ScanKind.Chunked, "no gradient is needed (FusedKernel is off): the chunked scan", 0)]
    [InlineData("{\"ChannelwiseForgetting\": true}", false, 100, ScanKind.Chunked, "(the kernel does not cover channel-wise forgetting): the chunked scan", 0)]
    [InlineData("{}", true, 100, ScanKind.FusedTraining, "hand-written backward covers this form, computed by the fused C# kernel", 16)]
    [InlineData("{\"FusedKernel\": false}", true, 100, ScanKind.HandWritten, "hand-written backward covers this form (FusedKernel is off: libtorch calls)", 16)]
    [InlineData("{\"RecomputeGroup\": 0}", true, 100_000, ScanKind.FusedTraining, "hand-written backward covers this form", int.MaxValue)]
    [InlineData("{\"ChannelwiseForgetting\": true}", true, 1000, ScanKind.Recomputed, "does not cover channel-wise forgetting): autograd over recomputed groups of 16", 16)]
    [InlineData("{\"FixedNorm\": \"Rows\"}", true, 256, ScanKind.Chunked, "does not cover the fixed-norm stabilizer): plain autograd through the chunked scan (the call fits one recomputed group)", 0)]
    [InlineData("{\"HandWrittenBackward\": false, \"RecomputeGroup\": 0}", true, 1000, ScanKind.Chunked, "HandWrittenBackward is off): plain autograd through the chunked scan (RecomputeGroup = 0)", 0)]
    public void OneFunctionChoosesTheScanAndSaysWhy(string patch, bool needsGraph, long length, ScanKind kind, string reason, int group)
    {
        var config = NeuralMemoryConfig.Patch(new NeuralMemoryConfig(), patch);
        var choice = MemoryScan.Choose(config, needsGraph, length);
        Assert.Equal(kind, choice.Kind);
        Assert.Contains(reason, choice.Reason);
        Assert.Equal(group, choice.GroupChunks);
    }

    [Fact]
    public void AMemoryAsksTheOneFunctionForItsScan()
    {
        manual_seed(1);
        using var memory = new NeuralMemory("memory", new NeuralMemoryConfig { ModelDim = 16, Heads = 2 });
        using var scope = NewDisposeScope();
        var inputs = memory.Project(randn(1, 20, 16), null);
        var start = memory.InitialState(1);
        Assert.Equal(ScanKind.FusedTraining, memory.ScanFor(inputs.Queries, inputs.Keys, inputs.Values, inputs.Gates, start.Memory).Kind);
        using (no_grad())
        {
            var read = memory.Project(randn(1, 20, 16), null);
            Assert.Equal(ScanKind.Fused, memory.ScanFor(read.Queries, read.Keys, read.Values, read.Gates, start.Memory).Kind);
            // A dtype the kernel does not compute in falls back to the chunked scan.
            var half = read.Keys.to(ScalarType.BFloat16);
            Assert.Equal(ScanKind.Chunked, memory.ScanFor(half, half, half, read.Gates, start.Memory).Kind);
        }
    }
}
