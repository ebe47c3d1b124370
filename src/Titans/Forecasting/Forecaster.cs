using TorchSharp;
using TorchSharp.Modules;
using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Forecasting;

/// <summary>
/// Maps inputs [B, Lookback, Channels] to forecasts [B, Horizon, Channels], in the z-scored units of
/// <see cref="ForecastData"/>. <see cref="Create"/> builds the kind the configuration names.
/// </summary>
public abstract class Forecaster : nn.Module<Tensor, Tensor>
{
    public ForecasterConfig Config { get; }

    protected Forecaster(string name, ForecasterConfig config) : base(name) => Config = config.Validate();

    public static Forecaster Create(ForecasterConfig config) => config.Validate().Kind switch
    {
        ForecastModelKind.Naive => new NaiveForecaster(config),
        ForecastModelKind.DLinear => new DLinearForecaster(config),
        _ => new PatchForecaster(config),
    };

    /// <summary>A model without parameters needs no training.</summary>
    public bool Trainable => parameters().Any();

    public sealed override Tensor forward(Tensor inputs)
    {
        if (inputs.dim() != 3 || inputs.shape[1] != Config.Lookback || inputs.shape[2] != Config.Channels)
            throw new ArgumentException($"A forecaster of lookback {Config.Lookback} and {Config.Channels} channels takes " +
                                        $"[batch, {Config.Lookback}, {Config.Channels}], got [{string.Join(", ", inputs.shape)}].");
        using var scope = NewDisposeScope();
        return Forecast(inputs).MoveToOuterDisposeScope();
    }

    protected abstract Tensor Forecast(Tensor inputs);

    /// <summary>A display name for tables.</summary>
    public static string Describe(ForecasterConfig config) => config.Kind switch
    {
        ForecastModelKind.Naive => "Naive (last value)",
        ForecastModelKind.DLinear => "DLinear",
        _ when config.Backbone.Architecture == Architecture.TransformerPlusPlus => "PatchTST-like (Transformer++)",
        _ => ArchitectureNames.Display(config.Backbone.Architecture),
    };
}

/// <summary>The last observed value of each channel, repeated: the floor every model must beat.</summary>
public sealed class NaiveForecaster : Forecaster
{
    public NaiveForecaster(ForecasterConfig config) : base("naive", config) => RegisterComponents();

    protected override Tensor Forecast(Tensor inputs) => inputs[.., ^1..].expand(-1, Config.Horizon, -1).contiguous();
}

/// <summary>
/// DLinear: the window is split into a trend (a moving average, ends padded by repetition) and the remainder, and each
/// goes through its own linear map from lookback to horizon, shared by all channels; no instance normalization (as
/// published, and as the paper's DLinear rows were measured).
/// </summary>
public sealed class DLinearForecaster : Forecaster
{
    readonly Linear seasonal, trend;

    public DLinearForecaster(ForecasterConfig config) : base("dlinear", config)
    {
        seasonal = nn.Linear(config.Lookback, config.Horizon);
        trend = nn.Linear(config.Lookback, config.Horizon);
        RegisterComponents();
    }

    protected override Tensor Forecast(Tensor inputs)
    {
        Tensor x = inputs.transpose(1, 2);                       // [B, C, L]
        int half = (Config.MovingAverage - 1) / 2;
        Tensor padded = cat(new[] { x[.., .., ..1].expand(-1, -1, half), x, x[.., .., ^1..].expand(-1, -1, half) }, 2);
        Tensor average = nn.functional.avg_pool1d(padded, Config.MovingAverage, stride: 1);
        Tensor output = seasonal.forward(x - average) + trend.forward(average);
        return output.transpose(1, 2).contiguous();               // [B, H, C]
    }
}

/// <summary>
/// Each channel on its own (channel independence, as PatchTST): the window is z-scored by its own statistics (RevIN,
/// with a learned scale and shift per channel), its end padded by one stride, cut into patches that a linear map and a
/// learned position embedding turn into tokens; the <see cref="SequenceBackbone"/> mixes them; a flatten head maps all
/// token outputs to the horizon; the forecast is scaled back. Only the backbone differs between the memory models and
/// the Transformer baseline.
/// </summary>
public sealed class PatchForecaster : Forecaster
{
    readonly Linear patch_embedding, head, linear_skip;
    readonly Parameter position_embedding, instance_norm_weight, instance_norm_bias;
    readonly Dropout dropout;

    public SequenceBackbone Backbone { get; }

    public PatchForecaster(ForecasterConfig config) : base("forecaster", config)
    {
        int d = config.Backbone.ModelDim;
        patch_embedding = nn.Linear(config.PatchLength, d);
        position_embedding = nn.Parameter(randn(config.Patches, d) * 0.02);
        instance_norm_weight = nn.Parameter(ones(config.Channels));
        instance_norm_bias = nn.Parameter(zeros(config.Channels));
        dropout = nn.Dropout(config.Dropout);
        head = nn.Linear(config.Patches * d, config.Horizon);
        linear_skip = nn.Linear(config.Lookback, config.Horizon);
        Backbone = new SequenceBackbone("backbone", config.Backbone);
        register_module("patch_embedding", patch_embedding);
        register_parameter("position_embedding", position_embedding);
        if (config.InstanceNormalization)
        {
            register_parameter("instance_norm_weight", instance_norm_weight);
            register_parameter("instance_norm_bias", instance_norm_bias);
        }
        register_module("dropout", dropout);
        Backbone.RegisterInto(this);
        register_module("head", head);
        if (config.LinearSkip) register_module("linear_skip", linear_skip);
    }

    protected override Tensor Forecast(Tensor inputs)
    {
        long batch = inputs.shape[0], channels = inputs.shape[2];
        Tensor x = inputs, mean = null!, deviation = null!;
        if (Config.InstanceNormalization)
        {
            mean = x.mean(new long[] { 1 }, keepdim: true).detach();
            deviation = (x.var(1, unbiased: false, keepdim: true) + 1e-5).sqrt().detach();
            x = (x - mean) / deviation * instance_norm_weight + instance_norm_bias;
        }
        Tensor series = x.transpose(1, 2).reshape(batch * channels, Config.Lookback);                  // [B·C, L]
        series = cat(new[] { series, series[.., ^1..].expand(-1, Config.PatchStride) }, 1);
        Tensor patches = series.unfold(1, Config.PatchLength, Config.PatchStride);                   // [B·C, P, patch]
        Tensor tokens = dropout.forward(patch_embedding.forward(patches) + position_embedding);
        var (hidden, state) = Backbone.Forward(tokens, null);
        state.Dispose();
        Tensor forecast = head.forward(dropout.forward(hidden.flatten(1)));                          // [B·C, H]
        if (Config.LinearSkip) forecast = forecast + linear_skip.forward(series[.., ..Config.Lookback]);
        forecast = forecast.reshape(batch, channels, Config.Horizon).transpose(1, 2);                // [B, H, C]
        if (Config.InstanceNormalization)
            forecast = (forecast - instance_norm_bias) / (instance_norm_weight + 1e-10) * deviation + mean;
        return forecast.contiguous();
    }
}
