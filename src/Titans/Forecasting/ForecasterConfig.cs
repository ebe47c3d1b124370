using System.Text.Json.Serialization;
using Titans.Memory;
using Titans.Models;
using Titans.Runtime;

namespace Titans.Forecasting;

/// <summary>What maps a lookback window to a forecast.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ForecastModelKind>))]
public enum ForecastModelKind
{
    /// <summary>The last observed value, repeated over the horizon (no parameters).</summary>
    Naive,
    /// <summary>DLinear (Zeng et al., AAAI 2023): moving-average decomposition, one linear map per component, shared by channels.</summary>
    DLinear,
    /// <summary>
    /// Patches of each channel's window become tokens of a <see cref="SequenceBackbone"/> of the configured architecture
    /// (LMM, MAC, MAG, MAL, or Transformer++ for the PatchTST-like baseline), with instance normalization and a flatten head.
    /// </summary>
    Patch,
}

/// <summary>
/// A forecaster: <see cref="Channels"/> series of <see cref="Lookback"/> steps in, <see cref="Horizon"/> steps of each
/// out. Serialized into forecaster checkpoints.
/// </summary>
public sealed record ForecasterConfig
{
    public ForecastModelKind Kind { get; init; } = ForecastModelKind.Patch;
    public int Channels { get; init; } = 7;
    public int Lookback { get; init; } = 96;
    public int Horizon { get; init; } = 96;
    /// <summary>Steps per patch token and between patch starts (PatchTST's 16 and 8); the window's end is padded by one stride.</summary>
    public int PatchLength { get; init; } = 16;
    public int PatchStride { get; init; } = 8;
    /// <summary>Instance normalization (RevIN): each window is z-scored by its own mean and deviation, and the forecast scaled back.</summary>
    public bool InstanceNormalization { get; init; } = true;
    /// <summary>Dropout on the patch embeddings and on the head's input.</summary>
    public double Dropout { get; init; } = 0.3;
    /// <summary>
    /// Patch models: a linear map from the (instance-normalized) lookback to the horizon added to the head's output, so
    /// the backbone learns what a linear forecast misses (RLinear's forecast as the residual's base).
    /// </summary>
    public bool LinearSkip { get; init; } = true;
    /// <summary>DLinear's moving-average kernel (odd).</summary>
    public int MovingAverage { get; init; } = 25;
    /// <summary>The patch model's backbone (its VocabSize is unused).</summary>
    public TitansConfig Backbone { get; init; } = DefaultBackbone(Architecture.Lmm);

    [JsonIgnore] public int Patches => (Lookback + PatchStride - PatchLength) / PatchStride + 1;

    /// <summary>
    /// The backbone the forecasting study uses (docs/forecasting.md): width 32, 2 layers, 4 heads; a 2-layer memory of
    /// chunk 4 (3 writes over 12 patches), the presets' stable memory; other architectures balanced to the Transformer's size.
    /// </summary>
    /// <param name="width">the backbone's width (default 32)</param>
    /// <param name="layers">its layer count (default 2)</param>
    public static TitansConfig DefaultBackbone(Architecture architecture, int? width = null, int? layers = null)
    {
        int d = width ?? 32;
        var shape = new TitansConfig
        {
            Architecture = Architecture.TransformerPlusPlus, VocabSize = 2, ModelDim = d, Layers = layers ?? 2, Heads = 4, Window = 8,
            SegmentLength = 4, PersistentTokens = 4,
            Memory = new NeuralMemoryConfig
            {
                ModelDim = d, Heads = 4, Depth = 2, Expansion = 2, ChunkSize = 4, ConvKernel = 4,
                RetainTowardInitial = true, InitialInnerLearningRate = 0.01, InitialMomentum = 0.5, InnerGradientClip = 1,
            },
        };
        long target = shape.ParameterCount;
        var config = shape with { Architecture = architecture };
        return architecture == Architecture.TransformerPlusPlus ? config : config.WithParameterBudget(target);
    }

    public ForecasterConfig Validate()
    {
        Require(Enum.IsDefined(Kind), nameof(Kind), $"unknown value {Kind}");
        Require(Channels >= 1, nameof(Channels), $"must be at least 1, got {Channels}");
        Require(Lookback >= 1, nameof(Lookback), $"must be at least 1, got {Lookback}");
        Require(Horizon >= 1, nameof(Horizon), $"must be at least 1, got {Horizon}");
        Require(Dropout is >= 0 and < 1, nameof(Dropout), $"must lie in [0, 1), got {Dropout}");
        if (Kind == ForecastModelKind.DLinear)
            Require(MovingAverage >= 1 && MovingAverage % 2 == 1, nameof(MovingAverage), $"must be odd and positive, got {MovingAverage}");
        if (Kind == ForecastModelKind.Patch)
        {
            Require(PatchLength >= 1 && PatchLength <= Lookback, nameof(PatchLength), $"must lie in [1, lookback {Lookback}], got {PatchLength}");
            Require(PatchStride >= 1, nameof(PatchStride), $"must be at least 1, got {PatchStride}");
            Backbone.Validate();
        }
        return this;
    }

    static void Require(bool ok, string name, string problem) => ConfigJson.Require<ForecasterConfig>(ok, name, problem);
    public string ToJson() => ConfigJson.Serialize(this);
    public static ForecasterConfig FromJson(string json) => ConfigJson.Parse<ForecasterConfig>(json, c => c.Validate());
}
