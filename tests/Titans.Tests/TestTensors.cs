using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Tests;

/// <summary>Seeded random inputs for the memory, in float64 unless a test says otherwise, and closeness assertions.</summary>
public static class TestTensors
{
    public const ScalarType F64 = ScalarType.Float64;

    public static Generator Seeded(long seed) => new Generator((ulong)seed);

    public static Tensor Uniform(Generator g, double low, double high, params long[] shape) =>
        rand(shape, dtype: F64, generator: g) * (high - low) + low;

    public static Tensor Normal(Generator g, params long[] shape) => randn(shape, dtype: F64, generator: g);

    /// <summary>Random q, k (unit norm), v and gates in a stable regime (θ ≤ 0.1), as the module would produce them.</summary>
    public static (Tensor Q, Tensor K, Tensor V, MemoryGates Gates) ScanInputs(long seed, long batch, long heads, long length, long dim)
    {
        var g = Seeded(seed);
        Tensor q = nn.functional.normalize(Normal(g, batch, heads, length, dim), dim: -1);
        Tensor k = nn.functional.normalize(Normal(g, batch, heads, length, dim), dim: -1);
        Tensor v = Normal(g, batch, heads, length, dim);
        Tensor theta = Uniform(g, 0.01, 0.1, batch, heads, length);
        Tensor logDecay = (1 - Uniform(g, 0.0, 0.2, batch, heads, length)).log();
        Tensor logEta = Uniform(g, 0.5, 0.95, batch, heads, length).log();
        return (q, k, v, new MemoryGates(theta, logDecay, logEta));
    }

    /// <summary>Random per-channel log-retentions log(1 − α) for channel-wise forgetting, [B, H, T, out_l] per layer.</summary>
    public static Tensor[] ChannelDecay(long seed, long batch, long heads, long length, IReadOnlyList<(int Out, int In)> shapes)
    {
        var g = Seeded(seed);
        return shapes.Select(s => (1 - Uniform(g, 0.0, 0.3, batch, heads, length, s.Out)).log()).ToArray();
    }

    /// <summary>Random starting state (weights ~ N(0, 1/in), momentum small) for a memory of the given shapes.</summary>
    public static MemoryWeights State(long seed, long batch, long heads, IReadOnlyList<(int Out, int In)> shapes, double momentumScale = 0.01)
    {
        var g = Seeded(seed);
        var w = shapes.Select(s => Normal(g, batch, heads, s.Out, s.In) / Math.Sqrt(s.In)).ToArray();
        var m = shapes.Select(s => Normal(g, batch, heads, s.Out, s.In) * momentumScale).ToArray();
        return new MemoryWeights(w, m);
    }

    public static MemoryMlp Mlp(long seed, long heads, long dim, MemoryActivation activation, bool layerNorm)
    {
        if (!layerNorm) return new MemoryMlp(activation, false);
        var g = Seeded(seed);
        return new MemoryMlp(activation, true, 1 + 0.1 * Normal(g, heads, 1, dim), 0.1 * Normal(g, heads, 1, dim));
    }

    public static void AssertClose(Tensor expected, Tensor actual, double tolerance, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double scale = Math.Max(1.0, expected.abs().max().item<double>());
        double diff = (expected - actual).abs().max().item<double>();
        Assert.True(diff <= tolerance * scale, $"{what}: max |difference| {diff:E3} exceeds {tolerance:E1} × {scale:G4}");
    }

    /// <summary>Every parameter's gradient by name, detached copies (null where a parameter got none).</summary>
    public static List<(string Name, Tensor? Grad)> Gradients(nn.Module module) =>
        module.named_parameters().Select(p => (p.name, p.parameter.grad?.detach().clone())).ToList();

    /// <summary>Two runs' parameter gradients (<see cref="Gradients"/>): the same parameters got one, and each agrees.</summary>
    public static void AssertClose(IReadOnlyList<(string Name, Tensor? Grad)> expected, IReadOnlyList<(string Name, Tensor? Grad)> actual,
        double tolerance, string what)
    {
        Assert.Equal(expected.Select(g => g.Name), actual.Select(g => g.Name));
        foreach (var ((name, a), (_, b)) in expected.Zip(actual))
        {
            Assert.True((a is null) == (b is null), $"{what}, {name}: a gradient in one run only");
            if (a is not null) AssertClose(a, b!, tolerance, $"{what}, {name}: gradient");
        }
    }

    public static void AssertClose(MemoryWeights expected, MemoryWeights actual, double tolerance, string what)
    {
        for (int l = 0; l < expected.Depth; l++)
        {
            AssertClose(expected.Weights[l], actual.Weights[l], tolerance, $"{what}: weights of layer {l + 1}");
            AssertClose(expected.Momentum[l], actual.Momentum[l], tolerance, $"{what}: momentum of layer {l + 1}");
        }
    }

    public static IReadOnlyList<(int Out, int In)> Shapes(int depth, int dim, int expansion = 2) =>
        new NeuralMemoryConfig { ModelDim = dim, Heads = 1, Depth = depth, Expansion = expansion }.LayerShapes;
}
