using Titans.Memory;

namespace Titans.Models;

/// <summary>
/// Named model sizes. <c>tiny</c> is for tests and CPU demos, <c>small</c> (about 14M parameters) for real runs on a
/// CPU, and <c>170m</c>, <c>340m</c>, <c>760m</c> follow the shapes of the paper's model sizes (docs/method.md §5: chunk 16,
/// MAC segment 512, window 2048, 128 persistent tokens, a 32K vocabulary). Every architecture of a preset has the
/// same width, depth and heads; its feed-forward width is set so its parameter count matches the preset's
/// Transformer++ (equal parameter count, as the paper compares them). Every preset's memory is the stable form chosen in
/// docs/memory-stability.md: retention toward W₀ and small initial inner steps.
/// </summary>
public static class Presets
{
    public static IReadOnlyList<string> Names { get; } = new[] { "tiny", "small", "170m", "340m", "760m" };

    /// <summary>
    /// The preset's configuration for one architecture; an unknown name throws with the known ones. <paramref name="layers"/>
    /// and <paramref name="memoryDepth"/> override the preset's before the sizes are balanced, and so does
    /// <paramref name="vocabulary"/> (a tokenizer's vocabulary size).
    /// </summary>
    public static TitansConfig Get(string name, Architecture architecture, int? layers = null, int? memoryDepth = null, int? vocabulary = null)
    {
        TitansConfig shape = name.ToLowerInvariant() switch
        {
            "tiny" => Shape(vocab: 256, dim: 64, layers: 2, heads: 4, window: 64, segment: 32, persistent: 4, expansion: 2),
            "small" => Shape(vocab: 256, dim: 384, layers: 8, heads: 6, window: 256, segment: 128, persistent: 16, expansion: 2),
            "170m" => Shape(vocab: 32000, dim: 768, layers: 16, heads: 12, window: 2048, segment: 512, persistent: 128, expansion: 4),
            "340m" => Shape(vocab: 32000, dim: 1024, layers: 22, heads: 16, window: 2048, segment: 512, persistent: 128, expansion: 4),
            "760m" => Shape(vocab: 32000, dim: 1536, layers: 24, heads: 24, window: 2048, segment: 512, persistent: 128, expansion: 4),
            _ => throw new ArgumentException($"Unknown preset '{name}'; the presets are {string.Join(", ", Names)}.", nameof(name)),
        };
        if (layers is int l) shape = shape with { Layers = l };
        if (vocabulary is int v) shape = shape with { VocabSize = v };
        if (memoryDepth is int m) shape = shape with { Memory = shape.Memory with { Depth = m } };
        long target = (shape with { Architecture = Architecture.TransformerPlusPlus }).ParameterCount;
        var config = shape with { Architecture = architecture };
        return (architecture == Architecture.TransformerPlusPlus ? config : config.WithParameterBudget(target)).Validate();
    }

    static TitansConfig Shape(int vocab, int dim, int layers, int heads, int window, int segment, int persistent, int expansion) => new()
    {
        VocabSize = vocab, ModelDim = dim, Layers = layers, Heads = heads, Window = window, SegmentLength = segment,
        PersistentTokens = persistent,
        Memory = new NeuralMemoryConfig
        {
            ModelDim = dim, Heads = heads, Depth = 2, Expansion = expansion, ChunkSize = 16, ConvKernel = 4,
            // The stable memory (docs/memory-stability.md): forgetting returns toward W₀, an inner step of θ₀/(1 − η₀) =
            // 0.02 instead of 0.5, and each token's inner gradient soft-clamped to norm 1. Without the first two the state
            // drifts over long streams and the outer gradients explode with length at initialization; without the clamp,
            // training at 4K tokens learns its way back into explosions. The paper's plain form is NeuralMemoryConfig's own
            // default (RetainTowardInitial = false, θ₀ 0.05, η₀ 0.9, no clamp).
            RetainTowardInitial = true, InitialInnerLearningRate = 0.01, InitialMomentum = 0.5, InnerGradientClip = 1,
        },
    };
}

/// <summary>Names of the architectures on the command line and in tables.</summary>
public static class ArchitectureNames
{
    public static string Display(Architecture architecture) => architecture switch
    {
        Architecture.TransformerPlusPlus => "Transformer++",
        Architecture.SlidingWindow => "SWA",
        _ => architecture.ToString().ToUpperInvariant(),
    };

    /// <summary>A model's name in tables: its architecture's, and MAC's write when it is not the paper's.</summary>
    public static string Display(TitansConfig config) =>
        Display(config.Architecture) + (config.Architecture == Architecture.Mac && config.MacWrite == MacWrite.SegmentInput ? " (segment write)" : "");

    /// <summary>MAC's write on the command line: attention (the paper's, the attention output) or segment (the segment input).</summary>
    public static MacWrite ParseMacWrite(string text) => text.Trim().ToLowerInvariant() switch
    {
        "attention" or "attention-output" => MacWrite.AttentionOutput,
        "segment" or "segment-input" => MacWrite.SegmentInput,
        _ => throw new ArgumentException($"Unknown MAC write '{text}'; use attention (the paper's) or segment.", nameof(text)),
    };

    /// <summary>Accepts the display names, the enum names and short forms (tpp, transformer, swa), in any case.</summary>
    public static Architecture Parse(string text)
    {
        string key = text.Trim().ToLowerInvariant();
        foreach (var a in Enum.GetValues<Architecture>())
            if (key == a.ToString().ToLowerInvariant() || key == Display(a).ToLowerInvariant()) return a;
        return key switch
        {
            "tpp" or "transformer" or "llama" => Architecture.TransformerPlusPlus,
            "sliding-window" or "sliding" => Architecture.SlidingWindow,
            _ => throw new ArgumentException(
                $"Unknown architecture '{text}'; use one of {string.Join(", ", Enum.GetValues<Architecture>().Select(Display))}.", nameof(text)),
        };
    }
}
