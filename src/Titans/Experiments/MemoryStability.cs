using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Experiments;

/// <summary>Where one memory layer stands at one point of a stream (over all heads, and the spread over heads).</summary>
/// <param name="WeightRatio">‖W‖/‖W₀‖ over all heads (Frobenius).</param>
/// <param name="MinHeadRatio">The smallest ‖W‖/‖W₀‖ of a head.</param>
/// <param name="MaxHeadRatio">The largest.</param>
/// <param name="MomentumNorm">‖S‖ over all heads.</param>
/// <param name="RelativeStep">‖ΔW‖/‖W‖ of one chunk's update, averaged over heads and the measured chunks.</param>
public sealed record LayerStability(double WeightRatio, double MinHeadRatio, double MaxHeadRatio, double MomentumNorm, double RelativeStep);

/// <summary>The memory's layers after <see cref="Tokens"/> tokens of a stream.</summary>
public sealed record StabilityPoint(long Tokens, IReadOnlyList<LayerStability> Layers);

/// <summary>
/// Probes of the memory's stability (docs/memory-stability.md), on one <see cref="NeuralMemory"/> at initialization reading
/// real text: each byte becomes a fixed random vector of unit RMS (as a pre-norm block would hand it over), and a fixed
/// random head turns the memory's output into next-byte logits. Two questions: does the outer gradient (what training
/// sees) grow with the length it runs through, and does the state (‖W‖/‖W₀‖, the relative step per chunk) stay in a band
/// along a long stream?
/// </summary>
public sealed class MemoryStability : IDisposable
{
    const int Vocabulary = 256;
    readonly NeuralMemory memory;
    readonly Tensor embedding, head;

    public NeuralMemoryConfig Config { get; }

    /// <param name="seed">seed of the memory's initialization and of the embedding and head</param>
    public MemoryStability(NeuralMemoryConfig config, long seed)
    {
        Config = config.Validate();
        manual_seed(seed);
        memory = new NeuralMemory("memory", config);
        var generator = new Generator((ulong)seed + 0x9E37);
        embedding = randn(new long[] { Vocabulary, config.ModelDim }, generator: generator);
        head = randn(new long[] { config.ModelDim, Vocabulary }, generator: generator) / Math.Sqrt(config.ModelDim);
    }

    Tensor Embed(ReadOnlySpan<long> tokens)
    {
        using var ids = tensor(tokens.ToArray(), new long[] { 1, tokens.Length });
        return embedding[ids];
    }

    static void CheckBytes(ReadOnlySpan<long> tokens)
    {
        foreach (long t in tokens)
            if (t < 0 || t >= Vocabulary) throw new ArgumentException($"The stability probe reads bytes (0–255), got token {t}.");
    }

    /// <summary>
    /// The global norm of the memory's outer gradients (all its parameters) of the mean next-byte cross-entropy over the
    /// first <paramref name="length"/> tokens, at this initialization.
    /// </summary>
    public double OuterGradientNorm(ReadOnlySpan<long> tokens, int length)
    {
        if (length < 1 || tokens.Length < length + 1)
            throw new ArgumentException($"An outer gradient over {length} tokens needs {length + 1} tokens of text, got {tokens.Length}.");
        CheckBytes(tokens[..(length + 1)]);
        using var scope = NewDisposeScope();
        memory.zero_grad();
        Tensor x = Embed(tokens[..length]);
        using var targets = tensor(tokens.Slice(1, length).ToArray(), new long[] { length });
        Tensor logits = memory.forward(x).matmul(head)[0];
        nn.functional.cross_entropy(logits, targets).backward();
        Runtime.BackwardFailures.ThrowIfAny();
        double sum = 0;
        foreach (var p in memory.parameters())
            if (p.grad is Tensor g) sum += g.to(ScalarType.Float64).square().sum().item<double>();
        memory.zero_grad();
        return Math.Sqrt(sum);
    }

    /// <summary>
    /// Streams the text (repeated if it is shorter than the largest point) through the memory without gradient and reports
    /// the state after each of <paramref name="points"/> tokens (rounded down to whole chunks). The relative step is
    /// measured over the <paramref name="stepChunks"/> chunks that follow each point.
    /// </summary>
    public IReadOnlyList<StabilityPoint> Trace(ReadOnlySpan<long> text, IReadOnlyList<long> points, int stepChunks = 4, int piece = 4096,
        Action<StabilityPoint>? progress = null)
    {
        if (text.Length < 1) throw new ArgumentException("The stream needs at least one token of text.");
        CheckBytes(text);
        if (points.Count == 0 || points.Any(p => p < 1)) throw new ArgumentException("Stability points must be positive token counts.");
        int chunk = Config.ChunkSize;
        var targets = points.Select(p => p / chunk * chunk).Distinct().Order().ToArray();
        piece = Math.Max(chunk, piece / chunk * chunk);
        long[] stream = text.ToArray();
        var result = new List<StabilityPoint>();
        NeuralMemoryState? state = null;
        long position = 0;
        using var noGrad = no_grad();
        double[][] initial;
        using (NewDisposeScope()) initial = HeadNorms(memory.InitialState(1).Memory.Weights);
        void Advance(long count)
        {
            while (count > 0)
            {
                int take = (int)Math.Min(count, chunk * (long)Math.Max(1, piece / chunk));
                using var scope = NewDisposeScope();
                var tokens = new long[take];
                for (int i = 0; i < take; i++) tokens[i] = stream[(position + i) % stream.Length];
                var (_, next) = memory.Forward(Embed(tokens), state);
                state?.Dispose();
                state = next.DetachFromDisposeScope();
                position += take;
                count -= take;
            }
        }
        try
        {
            foreach (long target in targets)
            {
                Advance(target - position);
                using var scope = NewDisposeScope();
                MemoryWeights at = (state ?? memory.InitialState(1)).Memory;
                double[][] norms = HeadNorms(at.Weights);
                double[] momentumNorms = at.Momentum.Select(m => m.to(ScalarType.Float64).norm().item<double>()).ToArray();
                var steps = new double[at.Depth];
                var before = at.Weights.Select(w => w.clone()).ToArray();
                for (int c = 0; c < stepChunks; c++)
                {
                    Advance(chunk);
                    var after = state!.Memory.Weights;
                    for (int l = 0; l < at.Depth; l++)
                        steps[l] += HeadNorms(new[] { after[l] - before[l] })[0].Zip(HeadNorms(new[] { before[l] })[0], (d, w) => d / w).Average() / stepChunks;
                    before = after.Select(w => w.clone()).ToArray();
                }
                var layers = Enumerable.Range(0, at.Depth).Select(l =>
                {
                    var ratios = norms[l].Zip(initial[l], (w, w0) => w / w0).ToArray();
                    double total = Math.Sqrt(norms[l].Sum(n => n * n) / initial[l].Sum(n => n * n));
                    return new LayerStability(total, ratios.Min(), ratios.Max(), momentumNorms[l], steps[l]);
                }).ToList();
                var point = new StabilityPoint(target, layers);
                result.Add(point);
                progress?.Invoke(point);
            }
        }
        finally { state?.Dispose(); }
        return result;
    }

    /// <summary>‖W^(l)‖ per head of a batch-1 state, [layer][head].</summary>
    static double[][] HeadNorms(IReadOnlyList<Tensor> weights) =>
        weights.Select(w => w[0].to(ScalarType.Float64).square().sum(new long[] { -2, -1 }).sqrt().data<double>().ToArray()).ToArray();

    public void Dispose()
    {
        memory.Dispose();
        embedding.Dispose();
        head.Dispose();
    }
}
