using System.Globalization;
using System.Text.Json;
using TorchSharp;
using Titans.Checkpoints;
using static TorchSharp.torch;

namespace Titans.Forecasting;

/// <summary>
/// A trained forecaster as one safetensors file (written atomically): its weights by name, and metadata with the format,
/// the <see cref="ForecasterConfig"/>, the columns it reads and forecasts, and the training rows' mean and deviation
/// of each column (so new data is z-scored as the training data was).
/// </summary>
public static class ForecasterCheckpoint
{
    public const string Format = CheckpointFormats.Forecaster;

    /// <summary>What a forecaster checkpoint says about the data it was trained on.</summary>
    public sealed record Header(ForecasterConfig Config, IReadOnlyList<string> Columns, IReadOnlyList<string> Targets,
        IReadOnlyList<double> Mean, IReadOnlyList<double> Deviation, IReadOnlyDictionary<string, string> Metadata);

    public static void Save(string path, Forecaster model, ForecastData data, IReadOnlyDictionary<string, string>? extra = null)
    {
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["forecaster_config"] = model.Config.ToJson(),
            ["columns"] = JsonSerializer.Serialize(data.Columns),
            ["targets"] = JsonSerializer.Serialize(data.Targets.Select(t => data.Columns[t])),
            ["mean"] = JsonSerializer.Serialize(data.Mean),
            ["deviation"] = JsonSerializer.Serialize(data.Deviation),
        };
        foreach (var (key, value) in extra ?? new Dictionary<string, string>())
            if (!metadata.TryAdd(key, value)) throw new ArgumentException($"The checkpoint metadata key '{key}' is reserved.");
        // A model without parameters still gets a file (safetensors needs no tensors), so every model evaluates the same way.
        SafeTensors.Save(path, model.named_parameters().Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter)), metadata);
    }

    public static (Forecaster Model, Header Header) Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The checkpoint '{path}' does not exist.", path);
        using var content = SafeTensors.Load(path);
        string Get(string key) => content.Metadata.TryGetValue(key, out var value) ? value
            : throw new InvalidDataException($"'{path}' is not a forecaster checkpoint: its metadata has no '{key}'.");
        string format = Get("format");
        if (format != Format)
            throw new InvalidDataException($"'{path}' is {CheckpointFormats.Describe(format)}; forecasting needs a forecaster checkpoint ({Format}), made by `forecast train`.");
        ForecasterConfig config;
        Header header;
        try
        {
            config = ForecasterConfig.FromJson(Get("forecaster_config"));
            T Json<T>(string key) => JsonSerializer.Deserialize<T>(Get(key)) ?? throw new InvalidDataException($"'{path}': '{key}' is null.");
            header = new Header(config, Json<string[]>("columns"), Json<string[]>("targets"), Json<double[]>("mean"), Json<double[]>("deviation"),
                content.Metadata);
        }
        catch (Exception e) when (e is ArgumentException or JsonException)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }
        if (header.Columns.Count != config.Channels || header.Mean.Count != config.Channels || header.Deviation.Count != config.Channels)
            throw new InvalidDataException($"'{path}': the configuration has {config.Channels} channels, the metadata " +
                                           $"{header.Columns.Count} columns, {header.Mean.Count} means and {header.Deviation.Count} deviations.");
        var model = Forecaster.Create(config);
        try
        {
            Training.Checkpoint.CopyWeights(path, content, model, _ => false, requireFinite: true);
        }
        catch { model.Dispose(); throw; }
        model.eval();
        return (model, header);
    }
}
