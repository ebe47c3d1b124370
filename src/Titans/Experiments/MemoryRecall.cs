using Titans.Memory;
using Titans.Memory.Scans;
using static TorchSharp.torch;

namespace Titans.Experiments;

/// <summary>One memory form in the recall experiment: linear or deep, with or without momentum and forgetting.</summary>
public sealed record RecallVariant(string Name, int Depth, bool Momentum, bool Forgetting)
{
    public static IReadOnlyList<RecallVariant> Standard { get; } = new RecallVariant[]
    {
        new("linear", 1, false, false),
        new("linear+mom", 1, true, false),
        new("linear+mom+fgt", 1, true, true),
        new("deep", 2, false, false),
        new("deep+mom", 2, true, false),
        new("deep+mom+fgt", 2, true, true),
    };
}

/// <summary>Settings of the recall experiment; defaults run in seconds on 2 cores.</summary>
public sealed record RecallOptions
{
    public int Dim { get; init; } = 32;
    public int Expansion { get; init; } = 4;
    public IReadOnlyList<int> PairCounts { get; init; } = new[] { 8, 16, 32, 64, 128, 256 };
    /// <summary>How many times the stream of pairs is shown (1: each pair once, as in a document).</summary>
    public int Passes { get; init; } = 1;
    /// <summary>Inner learning rates tried per variant and count; the best is reported (with its value).</summary>
    public IReadOnlyList<double> LearningRates { get; init; } = new[] { 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5 };
    public double Momentum { get; init; } = 0.9;
    public double Forgetting { get; init; } = 0.002;
    public int ChunkSize { get; init; } = 1;
    public int Seeds { get; init; } = 3;
}

/// <summary>Recall error of one variant at one number of pairs, with the inner learning rate that achieved it.</summary>
public sealed record RecallResult(RecallVariant Variant, int Pairs, double RelativeError, double LearningRate);

/// <summary>
/// The core idea on its own (docs/method.md §1–2): a freshly initialized memory is trained at test time on a stream of
/// random key→value pairs (unit-norm keys), then asked to recall every value from its key. Reports the relative
/// recall error Σ||M(k) − v||² / Σ||v||² (1.0 = remembers nothing, 0 = perfect) against the number of pairs.
/// No outer-loop training is involved: only the inner loop, with fixed gates.
/// </summary>
public static class MemoryRecall
{
    public static IEnumerable<RecallResult> Run(RecallOptions options, IEnumerable<RecallVariant>? variants = null)
    {
        foreach (var variant in variants ?? RecallVariant.Standard)
            foreach (int pairs in options.PairCounts)
            {
                var (error, rate) = options.LearningRates
                    .Select(lr => (Error: Enumerable.Range(0, options.Seeds).Average(s => RecallError(variant, pairs, lr, options, s)), Rate: lr))
                    .MinBy(r => double.IsFinite(r.Error) ? r.Error : double.MaxValue);
                yield return new RecallResult(variant, pairs, error, rate);
            }
    }

    /// <summary>Streams <paramref name="pairs"/> random pairs into a fresh memory and measures recall.</summary>
    public static double RecallError(RecallVariant variant, int pairs, double learningRate, RecallOptions options, long seed)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var g = new Generator((ulong)(1000 * seed + pairs));
        int d = options.Dim;
        Tensor keys = nn.functional.normalize(randn(new long[] { 1, 1, pairs, d }, generator: g), dim: -1);
        Tensor values = randn(new long[] { 1, 1, pairs, d }, generator: g) / Math.Sqrt(d);

        // Fresh memory: linear starts at zero; a deep one has random first layers and a zero last layer (outputs 0).
        // Hidden layers use unit-variance weights: keys have unit norm, so pre-activations are ~N(0, 1), where the
        // nonlinearity matters (with N(0, 1/in) they would be ~0.2 and the deep memory nearly linear).
        var shapes = new NeuralMemoryConfig { ModelDim = d, Heads = 1, Depth = variant.Depth, Expansion = options.Expansion }.LayerShapes;
        var weights = shapes.Select((s, l) => l == shapes.Count - 1
            ? zeros(1, 1, s.Out, s.In)
            : randn(new long[] { 1, 1, s.Out, s.In }, generator: g) * (l == 0 ? 1.0 : 1.0 / Math.Sqrt(s.In))).ToArray();
        var state = new MemoryWeights(weights, weights.Select(w => zeros_like(w)).ToArray());

        long length = (long)pairs * options.Passes;
        Tensor streamKeys = keys.repeat(1, 1, options.Passes, 1), streamValues = values.repeat(1, 1, options.Passes, 1);
        var gates = new MemoryGates(
            full(1, 1, length, learningRate),
            full(1, 1, length, variant.Forgetting ? Math.Log(1 - options.Forgetting) : 0.0),
            full(1, 1, length, variant.Momentum ? Math.Log(options.Momentum) : double.NegativeInfinity));
        var mlp = new MemoryMlp(MemoryActivation.Gelu, residualLayerNorm: false);
        var final = ChunkedMemoryScan.Scan(mlp, streamKeys, streamKeys, streamValues, gates, state, options.ChunkSize).Final;

        Tensor recalled = mlp.Forward(final.Weights, keys);
        double error = ((recalled - values).square().sum() / values.square().sum()).item<float>();
        return double.IsFinite(error) ? error : double.PositiveInfinity;
    }
}
