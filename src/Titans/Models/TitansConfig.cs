using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Titans.Runtime;
using Titans.Memory;

namespace Titans.Models;

/// <summary>The sequence mixer of every block (docs/method.md §4).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Architecture>))]
public enum Architecture
{
    /// <summary>Llama-style baseline: full causal attention.</summary>
    TransformerPlusPlus,
    /// <summary>Baseline: sliding-window causal attention only.</summary>
    SlidingWindow,
    /// <summary>Memory only (docs/method.md §4.4): the neural memory in place of attention; a pure recurrent model.</summary>
    Lmm,
    /// <summary>Memory as Context (docs/method.md §4.1): per segment, read the memory, attend over [persistent ‖ read ‖ segment], write the attention output, gate with the updated memory.</summary>
    Mac,
    /// <summary>Memory as Gate (docs/method.md §4.2): sliding-window attention and the memory side by side, combined by a normalized gate.</summary>
    Mag,
    /// <summary>Memory as Layer (docs/method.md §4.3): a memory layer, then a sliding-window attention layer.</summary>
    Mal,
}

/// <summary>What MAC writes into its memory after attending over a segment (docs/method.md §4.1, step 4).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<MacWrite>))]
public enum MacWrite
{
    /// <summary>The paper's: keys and values from the attention output y_t (normalized), M_t = M_{t−1}(y_t).</summary>
    AttentionOutput,
    /// <summary>
    /// Keys and values from the segment's own tokens, as LMM writes, still after attention (the read of step 1 sees
    /// only earlier segments). An ablation: on the pass key the paper's write never learned retrieval, this one does.
    /// </summary>
    SegmentInput,
}

/// <summary>
/// One serializable configuration of a language model: pre-norm residual blocks (RMSNorm), a sequence mixer chosen
/// by <see cref="Architecture"/>, a SwiGLU feed-forward, and a language-model head.
/// </summary>
public sealed record TitansConfig
{
    public Architecture Architecture { get; init; } = Architecture.Lmm;
    public int VocabSize { get; init; } = 256;
    public int ModelDim { get; init; } = 64;
    public int Layers { get; init; } = 2;
    /// <summary>Attention heads (Transformer++ and sliding-window blocks).</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Keys visible to each query in sliding-window attention (SWA, MAG, MAL), itself included.</summary>
    public int Window { get; init; } = 64;
    /// <summary>MAC's segment length C: the span of its attention, a multiple of the memory's chunk size.</summary>
    public int SegmentLength { get; init; } = 32;
    /// <summary>What MAC writes into its memory (step 4 of docs/method.md §4.1): the attention output (the paper) or the segment input.</summary>
    public MacWrite MacWrite { get; init; } = MacWrite.AttentionOutput;
    /// <summary>Persistent memory tokens N_p per block (MAC, MAG, MAL): learned, input independent, seen by every query.</summary>
    public int PersistentTokens { get; init; } = 4;
    /// <summary>SwiGLU hidden width; 0 picks 8/3·d rounded up to a multiple of 16 (Llama).</summary>
    public int FeedForwardDim { get; init; }
    readonly NeuralMemoryConfig memory = new();

    /// <summary>
    /// The neural memory of memory blocks. Its ModelDim is not its own: it always reads as this config's
    /// <see cref="ModelDim"/> (the memory runs at the model's width), whatever the section was given with.
    /// </summary>
    public NeuralMemoryConfig Memory
    {
        get => memory.ModelDim == ModelDim ? memory : memory with { ModelDim = ModelDim };
        init => memory = value;
    }

    /// <summary>Whether the state grows with every token read (full attention: its key-value cache, and quadratic time), so long streams must be cut.</summary>
    [JsonIgnore] public bool CacheGrowsWithContext => Architecture == Architecture.TransformerPlusPlus;
    [JsonIgnore] public int FeedForwardWidth => FeedForwardDim > 0 ? FeedForwardDim : (8 * ModelDim / 3 + 15) / 16 * 16;
    [JsonIgnore] public bool UsesAttention => Architecture != Architecture.Lmm;
    [JsonIgnore] public bool UsesMemory => Architecture is not (Architecture.TransformerPlusPlus or Architecture.SlidingWindow);
    [JsonIgnore] public bool UsesWindow => Architecture is Architecture.SlidingWindow or Architecture.Mag or Architecture.Mal;
    [JsonIgnore] public bool UsesPersistentMemory => Architecture is Architecture.Mac or Architecture.Mag or Architecture.Mal;

    /// <summary>Parameters of the model this configuration builds, counted without building it (a test pins the two).</summary>
    [JsonIgnore]
    public long ParameterCount
    {
        get
        {
            long d = ModelDim;
            long block = 2 * d + 3 * d * FeedForwardWidth
                + (UsesAttention ? 4 * d * d + (UsesPersistentMemory ? PersistentTokens * d : 0) : 0)
                + (UsesMemory ? Memory.ParameterCount : 0)
                + Architecture switch { Architecture.Mac or Architecture.Mal => d, Architecture.Mag => 2 * d, _ => 0 };
            return 2 * VocabSize * d + d + Layers * block;
        }
    }

    /// <summary>
    /// This configuration with the feed-forward width chosen (a multiple of 8, at least 8) so the model's parameter
    /// count comes as close as it can to <paramref name="target"/>: how architectures are compared at equal size.
    /// </summary>
    public TitansConfig WithParameterBudget(long target)
    {
        long at8 = (this with { FeedForwardDim = 8 }).ParameterCount;
        long perUnit = 3L * ModelDim * Layers;
        long width = Math.Max(8, (long)Math.Round((target - at8) / (double)perUnit / 8) * 8 + 8);
        return this with { FeedForwardDim = (int)width };
    }

    /// <summary>MAC with this write; other architectures have no such choice and are returned as they are.</summary>
    public TitansConfig WithMacWrite(MacWrite write) => Architecture == Architecture.Mac ? this with { MacWrite = write } : this;

    /// <summary>
    /// This model with the memory's initial forgetting α₀ (null: unchanged): <c>Memory.InitialForgetting=α₀</c> by the one
    /// merge rule of <see cref="With"/>; models without memory are returned as they are.
    /// </summary>
    public TitansConfig WithInitialForgetting(double? alpha) =>
        alpha is double a && UsesMemory ? With([$"{nameof(Memory)}.{nameof(NeuralMemoryConfig.InitialForgetting)}={a.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}"]) : this;

    /// <summary>
    /// This model with the fields of a JSON object set over its memory's configuration (e.g. <c>{"RetainTowardInitial": false}</c>;
    /// null: unchanged): <c>Memory={…}</c> by the one merge rule of <see cref="With"/>, so the fields it does not name keep
    /// the preset's values; models without memory are returned as they are. An unknown field throws naming it.
    /// </summary>
    public TitansConfig WithMemory(string? patch) =>
        patch is not null && UsesMemory ? With([$"{nameof(Memory)}={ConfigJson.ParseObject<NeuralMemoryConfig>(patch, "JSON patch").ToJsonString()}"]) : this;

    /// <summary>Bounds far above any model this library trains, so sizes and their products never overflow and nonsense is refused before it is built.</summary>
    public const int MaxVocabSize = 1 << 24, MaxModelDim = 1 << 16, MaxLayers = 1024, MaxWidth = 1 << 20, MaxTokens = 1 << 24;
    /// <summary>The most parameters a configuration may describe (2^34, 64 GiB of float32 weights).</summary>
    public const long MaxParameters = 1L << 34;

    public TitansConfig Validate()
    {
        Require(VocabSize is >= 2 and <= MaxVocabSize, nameof(VocabSize), $"must lie in [2, {MaxVocabSize:N0}], got {VocabSize}");
        Require(ModelDim is >= 1 and <= MaxModelDim, nameof(ModelDim), $"must lie in [1, {MaxModelDim:N0}], got {ModelDim}");
        Require(Layers is >= 1 and <= MaxLayers, nameof(Layers), $"must lie in [1, {MaxLayers:N0}], got {Layers}");
        Require(FeedForwardDim is >= 0 and <= MaxWidth, nameof(FeedForwardDim), $"must be 0 (automatic) or a width up to {MaxWidth:N0}, got {FeedForwardDim}");
        Require(Window <= MaxTokens && SegmentLength <= MaxTokens && PersistentTokens <= MaxTokens, nameof(Window),
            $"Window, SegmentLength and PersistentTokens must each be at most {MaxTokens:N0} tokens, got {Window}, {SegmentLength} and {PersistentTokens}");
        Require(Enum.IsDefined(Architecture), nameof(Architecture), $"unknown value {Architecture}");
        if (UsesAttention)
        {
            Require(Heads >= 1 && ModelDim % Heads == 0, nameof(Heads), $"{Heads} heads do not divide the model width {ModelDim}");
            Require(ModelDim / Heads % 2 == 0, nameof(Heads), $"rotary positions need an even head width, got {ModelDim / Heads}");
        }
        if (UsesWindow)
            Require(Window >= 1, nameof(Window), $"must be at least 1 token, got {Window}");
        if (UsesPersistentMemory)
            Require(PersistentTokens >= 0, nameof(PersistentTokens), $"must be 0 or more, got {PersistentTokens}");
        if (UsesMemory) Memory.Validate();
        Require(Enum.IsDefined(MacWrite), nameof(MacWrite), $"unknown value {MacWrite}");
        if (Architecture == Architecture.Mac)
            Require(SegmentLength >= 1 && SegmentLength % Memory.ChunkSize == 0, nameof(SegmentLength),
                $"must be a positive multiple of the memory's chunk size {Memory.ChunkSize} (so each segment ends on a " +
                $"chunk boundary and the next segment reads the memory it wrote), got {SegmentLength}");
        Require(ParameterCount <= MaxParameters, nameof(ParameterCount), $"would be {ParameterCount:N0}, over the {MaxParameters:N0} this library builds");
        return this;
    }

    static void Require(bool ok, string name, string problem) => ConfigJson.Require<TitansConfig>(ok, name, problem);

    /// <summary>
    /// This configuration with fields set by path (<c>Layers=4</c>, <c>Memory.InitialForgetting=0.001</c>), validated; the
    /// memory's width follows ModelDim unless Memory.ModelDim is set too.
    /// </summary>
    public TitansConfig With(IEnumerable<string> assignments) => ConfigJson.Set(this, assignments, FromJson, (json, paths) =>
    {
        if (!paths.Contains($"{nameof(Memory)}.{nameof(NeuralMemoryConfig.ModelDim)}") && json[nameof(Memory)] is JsonObject memory)
            memory[nameof(NeuralMemoryConfig.ModelDim)] = json[nameof(ModelDim)]?.DeepClone();
    });

    /// <summary>The memory section is written with the width it runs at (<see cref="Memory"/>'s), so the file never disagrees with itself.</summary>
    public string ToJson() => ConfigJson.Serialize(this);

    /// <summary>Two configurations are equal when they describe the same model: equal JSON (the memory at the model's width).</summary>
    public bool Equals(TitansConfig? other) => other is not null && ToJson() == other.ToJson();

    public override int GetHashCode() => ToJson().GetHashCode();

    /// <summary>
    /// Parses and validates; a malformed document, a field the configuration does not have, a missing Architecture, a
    /// Memory.ModelDim that disagrees with ModelDim, or an impossible value throws with the reason, naming the field.
    /// </summary>
    public static TitansConfig FromJson(string json) => ConfigJson.Parse<TitansConfig>(json, c => c.Validate(), document =>
    {
        if (!document.ContainsKey(nameof(Architecture)))
            throw new ArgumentException($"A TitansConfig must name its {nameof(Architecture)} ({string.Join(", ", Enum.GetNames<Architecture>())}); " +
                                        "`titans models --json` prints complete ones.");
        int width = document[nameof(ModelDim)] is JsonValue w && w.TryGetValue(out int given) ? given : new TitansConfig().ModelDim;
        if (document[nameof(Memory)]?[nameof(NeuralMemoryConfig.ModelDim)] is JsonValue m && m.TryGetValue(out int memoryWidth) && memoryWidth != width)
            throw new ArgumentException($"TitansConfig.Memory.ModelDim is {memoryWidth} but ModelDim is {width}; the memory runs at the " +
                                        "model's width, so set them equal or leave Memory.ModelDim out.");
    });
}
