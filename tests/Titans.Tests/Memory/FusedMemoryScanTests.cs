using Titans.Memory;
using Titans.Memory.Scans;
using TorchSharp;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Memory;

/// <summary>
/// The fused C# kernel against its oracle, the libtorch chunked scan (itself pinned to the sequential reference): outputs,
/// the boundary state and the final state, in float64 to 1e-10 and float32 to a relative 1e-4, over the forms the kernel
/// covers.
/// </summary>
public class FusedMemoryScanTests
{
    public static TheoryData<int, bool, MemoryActivation, string, int, long, long> Cases()
    {
        var data = new TheoryData<int, bool, MemoryActivation, string, int, long, long>();
        // depth, LayerNorm wrapper, activation, stabilizers, chunk, length, width (6, 12, 20: not multiples of a vector)
        data.Add(1, false, MemoryActivation.Gelu, "none", 4, 11, 6);
        data.Add(2, true, MemoryActivation.Gelu, "none", 5, 23, 6);
        data.Add(2, true, MemoryActivation.Gelu, "presets", 16, 75, 12);
        data.Add(2, false, MemoryActivation.Silu, "retention", 16, 64, 20);
        data.Add(3, true, MemoryActivation.Silu, "clip", 1, 9, 6);
        data.Add(3, true, MemoryActivation.Gelu, "presets", 64, 130, 12);
        data.Add(2, true, MemoryActivation.Gelu, "presets", 16, 7, 6);      // shorter than a chunk: no boundary moves
        data.Add(4, true, MemoryActivation.Gelu, "presets", 8, 40, 20);
        return data;
    }

    static MemoryStabilizers Stabilizers(string kind, int depth, long dim, long heads) => kind switch
    {
        "none" => MemoryStabilizers.None,
        "retention" => new MemoryStabilizers { RetentionTarget = State(90, 1, heads, Shapes(depth, (int)dim)).Weights },
        "clip" => new MemoryStabilizers { GradientClip = 0.3 },
        "presets" => new MemoryStabilizers { RetentionTarget = State(90, 1, heads, Shapes(depth, (int)dim)).Weights, GradientClip = 0.3 },
        _ => throw new ArgumentException(kind),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheKernelComputesTheChunkedScan(int depth, bool layerNorm, MemoryActivation activation, string kind, int chunk, long length, long dim)
    {
        using var scope = NewDisposeScope();
        const long batch = 3, heads = 2;                                  // six streams on two cores
        var (q, k, v, gates) = ScanInputs(depth * 100 + chunk, batch, heads, length, dim);
        var mlp = Mlp(7, heads, dim, activation, layerNorm);
        var state = State(8, batch, heads, Shapes(depth, (int)dim));
        var stabilizers = Stabilizers(kind, depth, dim, heads);
        using var noGrad = no_grad();
        var oracle = ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, chunk, stabilizers);
        var fused = FusedMemoryScan.Scan(mlp, q, k, v, gates, state, chunk, stabilizers);
        AssertClose(oracle.Outputs, fused.Outputs, 1e-10, "outputs");
        AssertClose(oracle.Boundary, fused.Boundary, 1e-10, "boundary state");
        AssertClose(oracle.Final, fused.Final, 1e-10, "final state");
        Assert.Equal(oracle.BoundaryTokens, fused.BoundaryTokens);

        // float32: the same function to float32's precision.
        MemoryWeights Single(MemoryWeights w) => new(w.Weights.Select(t => t.to(ScalarType.Float32)).ToArray(), w.Momentum.Select(t => t.to(ScalarType.Float32)).ToArray());
        var mlp32 = new MemoryMlp(activation, layerNorm, mlp.LnWeight?.to(ScalarType.Float32), mlp.LnBias?.to(ScalarType.Float32));
        var gates32 = new MemoryGates(gates.Theta.to(ScalarType.Float32), gates.LogDecay.to(ScalarType.Float32), gates.LogEta.to(ScalarType.Float32));
        var stabilizers32 = stabilizers with { RetentionTarget = stabilizers.RetentionTarget?.Select(t => t.to(ScalarType.Float32)).ToArray() };
        var single = FusedMemoryScan.Scan(mlp32, q.to(ScalarType.Float32), k.to(ScalarType.Float32), v.to(ScalarType.Float32), gates32,
            Single(state), chunk, stabilizers32);
        Assert.Equal(ScalarType.Float32, single.Outputs.dtype);
        AssertClose(oracle.Outputs, single.Outputs.to(F64), 1e-4, "float32 outputs");
        AssertClose(oracle.Final, new MemoryWeights(single.Final.Weights.Select(t => t.to(F64)).ToArray(), single.Final.Momentum.Select(t => t.to(F64)).ToArray()),
            1e-4, "float32 final state");
    }

    [Fact]
    public void TheResultDoesNotDependOnTheThreadCount()
    {
        using var scope = NewDisposeScope();
        var (q, k, v, gates) = ScanInputs(5, 4, 2, 50, 12);
        var mlp = Mlp(6, 2, 12, MemoryActivation.Gelu, true);
        var state = State(7, 4, 2, Shapes(2, 12));
        var stabilizers = Stabilizers("presets", 2, 12, 2);
        int threads = get_num_threads();
        try
        {
            set_num_threads(1);
            var one = FusedMemoryScan.Scan(mlp, q, k, v, gates, state, 16, stabilizers);
            set_num_threads(Math.Max(2, Environment.ProcessorCount));
            var many = FusedMemoryScan.Scan(mlp, q, k, v, gates, state, 16, stabilizers);
            Assert.True(one.Outputs.eq(many.Outputs).all().item<bool>());
            Assert.True(one.Final.Tensors.Zip(many.Final.Tensors).All(p => p.First.eq(p.Second).all().item<bool>()));
        }
        finally { set_num_threads(threads); }
    }

    [Fact]
    public void ThePortablePathComputesWhatTheVectorPathDoes()
    {
        // Other CPUs take plain loops where this one takes Vector256 and FMA; forced on here, both must agree.
        using var scope = NewDisposeScope();
        var (q, k, v, gates) = ScanInputs(21, 2, 2, 45, 20);
        var mlp = Mlp(22, 2, 20, MemoryActivation.Gelu, true);
        var state = State(23, 2, 2, Shapes(3, 20));
        var stabilizers = Stabilizers("presets", 3, 20, 2);
        var vector = FusedMemoryScan.Scan(mlp, q, k, v, gates, state, 8, stabilizers);
        try
        {
            SmallGemm<double>.Portable = true;
            var portable = FusedMemoryScan.Scan(mlp, q, k, v, gates, state, 8, stabilizers);
            AssertClose(vector.Outputs, portable.Outputs, 1e-12, "outputs");
            AssertClose(vector.Final, portable.Final, 1e-12, "final state");
        }
        finally { SmallGemm<double>.Portable = false; }
    }

    /// <summary>One call's inputs as leaves, the kernel's or the libtorch node's outputs and the gradients of a loss of every
    /// output (retrieved values, boundary and final states) with respect to each leaf.</summary>
    sealed record Gradients(MemoryScanResult Result, Tensor[] Grads);

    static Gradients Train(int depth, bool layerNorm, MemoryActivation activation, string kind, int chunk, long length, long dim, bool fused,
        ScalarType dtype = ScalarType.Float64, long batch = 3, long heads = 2, int group = 2)
    {
        var (q, k, v, gates) = ScanInputs(depth * 100 + chunk, batch, heads, length, dim);
        var mlp = Mlp(7, heads, dim, activation, layerNorm);
        var state = State(8, batch, heads, Shapes(depth, (int)dim));
        var stabilizers = Stabilizers(kind, depth, dim, heads);
        Tensor Leaf(Tensor t) => t.to(dtype).detach().requires_grad_(true);
        (q, k, v) = (Leaf(q), Leaf(k), Leaf(v));
        gates = new MemoryGates(Leaf(gates.Theta), Leaf(gates.LogDecay), Leaf(gates.LogEta));
        state = new MemoryWeights(state.Weights.Select(Leaf).ToArray(), state.Momentum.Select(Leaf).ToArray());
        if (layerNorm) mlp = new MemoryMlp(activation, true, Leaf(mlp.LnWeight!), Leaf(mlp.LnBias!));
        if (stabilizers.RetentionTarget is { } target) stabilizers = stabilizers with { RetentionTarget = target.Select(Leaf).ToArray() };
        var leaves = new[] { q, k, v }.Concat(gates.Tensors).Concat(state.Tensors).Concat(layerNorm ? new[] { mlp.LnWeight!, mlp.LnBias! } : [])
            .Concat(stabilizers.RetentionTarget ?? []).ToArray();
        var result = HandWrittenScan.Scan(mlp, q, k, v, gates, state, chunk, group, stabilizers, fused);
        var probe = Normal(Seeded(9), batch, heads, length, dim).to(dtype);
        Tensor loss = (result.Outputs * probe).sum() + result.Final.Tensors.Concat(result.Boundary.Tensors)
            .Select(w => (w * w.detach().cos()).sum()).Aggregate((a, b) => a + b);
        return new Gradients(result, autograd.grad(new[] { loss }, leaves).ToArray());
    }

    /// <summary>
    /// Training: the kernel's forward and backward against the hand-written node by libtorch calls (pinned to autograd and
    /// the sequential reference in MemoryScanTests), over the same forms and widths as above: outputs, states and the
    /// gradient of every input in float64 to 1e-9, and in float32 to a relative 2e-3.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void TheKernelsBackwardComputesTheHandWrittenOne(int depth, bool layerNorm, MemoryActivation activation, string kind, int chunk, long length, long dim)
    {
        using var scope = NewDisposeScope();
        var oracle = Train(depth, layerNorm, activation, kind, chunk, length, dim, fused: false);
        var fused = Train(depth, layerNorm, activation, kind, chunk, length, dim, fused: true);
        AssertClose(oracle.Result.Outputs, fused.Result.Outputs, 1e-10, "outputs");
        AssertClose(oracle.Result.Final, fused.Result.Final, 1e-10, "final state");
        AssertClose(oracle.Result.Boundary, fused.Result.Boundary, 1e-10, "boundary state");
        for (int i = 0; i < oracle.Grads.Length; i++)
        {
            Assert.True(fused.Grads[i].abs().max().item<double>() > 0, $"input {i} got no gradient");
            AssertClose(oracle.Grads[i], fused.Grads[i], 1e-9, $"gradient of input {i}");
        }
        var single = Train(depth, layerNorm, activation, kind, chunk, length, dim, fused: true, dtype: ScalarType.Float32);
        for (int i = 0; i < oracle.Grads.Length; i++)
        {
            Assert.Equal(ScalarType.Float32, single.Grads[i].dtype);
            AssertClose(oracle.Grads[i], single.Grads[i].to(F64), 2e-3, $"float32 gradient of input {i}");
        }
    }

    [Fact]
    public void TheBackwardDoesNotDependOnTheThreadCountAndThePortablePathAgrees()
    {
        using var scope = NewDisposeScope();
        int threads = get_num_threads();
        Gradients Run() => Train(2, true, MemoryActivation.Gelu, "presets", 16, 240, 12, fused: true, batch: 4, heads: 2, group: 4);   // enough work to share threads
        try
        {
            set_num_threads(1);
            var one = Run();
            set_num_threads(Math.Max(2, Environment.ProcessorCount));
            var many = Run();
            Assert.True(one.Result.Outputs.eq(many.Result.Outputs).all().item<bool>());
            for (int i = 0; i < one.Grads.Length; i++)
                Assert.True(one.Grads[i].eq(many.Grads[i]).all().item<bool>(), $"gradient of input {i} differs between 1 and many threads");
            SmallGemm<double>.Portable = true;
            var portable = Run();
            for (int i = 0; i < one.Grads.Length; i++) AssertClose(one.Grads[i], portable.Grads[i], 1e-12, $"portable gradient of input {i}");
        }
        finally
        {
            set_num_threads(threads);
            SmallGemm<double>.Portable = false;
        }
    }

    [Fact]
    public void GatesOfZeroAreExact()
    {
        // η = 0 (log −∞) drops all past surprise, α = 1 (log −∞) forgets everything: products of gates, no NaN.
        using var scope = NewDisposeScope();
        var (q, k, v, gates) = ScanInputs(11, 1, 2, 20, 6);
        var edge = new MemoryGates(gates.Theta, gates.LogDecay.index_put_(tensor(double.NegativeInfinity), TensorIndex.Ellipsis, TensorIndex.Single(7)),
            gates.LogEta.index_put_(tensor(double.NegativeInfinity), TensorIndex.Ellipsis, TensorIndex.Single(3)));
        var mlp = Mlp(12, 2, 6, MemoryActivation.Gelu, true);
        var state = State(13, 1, 2, Shapes(2, 6));
        var oracle = ChunkedMemoryScan.Scan(mlp, q, k, v, edge, state, 4);
        var fused = FusedMemoryScan.Scan(mlp, q, k, v, edge, state, 4);
        Assert.True(fused.Outputs.isfinite().all().item<bool>());
        AssertClose(oracle.Outputs, fused.Outputs, 1e-10, "outputs");
        AssertClose(oracle.Final, fused.Final, 1e-10, "final state");
    }
}
