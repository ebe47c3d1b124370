using TorchSharp;
using Titans.Memory;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Memory;

/// <summary>The memory's input path as one C# call (FusedProjection) equals libtorch's, its oracle: q, k, v, the gates and the convolution cache.</summary>
public class FusedProjectionTests
{
    public static TheoryData<int, bool, bool, bool, bool> Forms() => new()
    {
        { 4, true, true, true, true },      // the presets' form, continuing a convolution cache
        { 4, true, true, true, false },     // a sequence start: the cache is zeros
        { 0, true, true, true, false },     // no convolution
        { 3, false, true, true, true },     // fixed gates: the bias alone
        { 4, true, false, true, true },     // no momentum: log η = −∞
        { 2, true, true, false, true },     // no forgetting: log(1 − α) = 0
    };

    [Theory]
    [MemberData(nameof(Forms))]
    public void TheFusedProjectionIsLibtorchs(int convKernel, bool dataDependentGates, bool momentum, bool forgetting, bool withCache)
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var memory = new NeuralMemory("memory", new NeuralMemoryConfig
        {
            ModelDim = 24, Heads = 2, ConvKernel = convKernel, DataDependentGates = dataDependentGates, Momentum = momentum, Forgetting = forgetting,
        });
        memory.to(F64);
        using var noGrad = no_grad();
        // Larger logits than a fresh gate projection gives, so the sigmoids' tails are exercised too.
        foreach (var (name, p) in memory.named_parameters()) if (name == "gate_bias") p.mul_(8);
        Tensor x = Normal(Seeded(6), 2, 13, 24) * 3;
        Tensor? cache = withCache && convKernel > 0 ? Normal(Seeded(7), 2, convKernel - 1, 3 * 24) : null;
        MemoryInputs expected = memory.ProjectByLibtorch(x, cache), fused = memory.Project(x, cache);
        AssertClose(expected.Queries, fused.Queries, 1e-12, "q");
        AssertClose(expected.Keys, fused.Keys, 1e-12, "k");
        AssertClose(expected.Values, fused.Values, 1e-12, "v");
        AssertClose(expected.Gates.Theta, fused.Gates.Theta, 1e-12, "θ");
        AssertClose(expected.Gates.LogDecay, fused.Gates.LogDecay, 1e-12, "log(1 − α)");
        if (momentum) AssertClose(expected.Gates.LogEta, fused.Gates.LogEta, 1e-12, "log η");
        else Assert.True(fused.Gates.LogEta.isneginf().all().item<bool>(), "no momentum: log η = −∞");
        Assert.Equal(expected.ConvCache is null, fused.ConvCache is null);
        if (expected.ConvCache is not null) AssertClose(expected.ConvCache, fused.ConvCache!, 1e-12, "convolution cache");

        // float32 within its own precision, through the vectorized SiLU.
        memory.to(ScalarType.Float32);
        Tensor x32 = x.to(ScalarType.Float32);
        Tensor? cache32 = cache?.to(ScalarType.Float32);
        MemoryInputs expected32 = memory.ProjectByLibtorch(x32, cache32), fused32 = memory.Project(x32, cache32);
        AssertClose(expected32.Queries.to(F64), fused32.Queries.to(F64), 1e-5, "float32 q");
        AssertClose(expected32.Keys.to(F64), fused32.Keys.to(F64), 1e-5, "float32 k");
        AssertClose(expected32.Values.to(F64), fused32.Values.to(F64), 1e-5, "float32 v");
        AssertClose(expected32.Gates.Theta.to(F64), fused32.Gates.Theta.to(F64), 1e-6, "float32 θ");
    }

    [Fact]
    public void WithAGradientTheLibtorchPathRuns()
    {
        using var scope = NewDisposeScope();
        var memory = new NeuralMemory("memory", new NeuralMemoryConfig { ModelDim = 16, Heads = 2 });
        Tensor x = randn(1, 5, 16).requires_grad_(true);
        MemoryInputs inputs = memory.Project(x, null);
        Assert.True(inputs.Keys.requires_grad, "training needs autograd's path");
    }
}
