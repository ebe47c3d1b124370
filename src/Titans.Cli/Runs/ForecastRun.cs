using System.Text.Json;
using TorchSharp;
using Titans.Cli.Reporting;
using Titans.Forecasting;
using Titans.Models;
using Titans.Runtime;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Cli.Runs;

/// <summary>
/// `forecast train`: for every horizon and model, train (early stopping on validation MSE), score the test part, save the
/// forecaster; then one table per dataset (beside the paper's rows for ETTh1 and ETTh2) and a PNG of forecasts.
/// </summary>
public static class ForecastRun
{
    /// <summary>A model on the command line: a kind and, for patch models, the backbone's architecture.</summary>
    public sealed record ModelChoice(string Name, ForecastModelKind Kind, Architecture Architecture)
    {
        public static ModelChoice Parse(string text) => text.Trim().ToLowerInvariant() switch
        {
            "naive" => new("naive", ForecastModelKind.Naive, Architecture.Lmm),
            "dlinear" => new("dlinear", ForecastModelKind.DLinear, Architecture.Lmm),
            "patchtst" or "transformer" or "transformer++" or "tpp" => new("patchtst", ForecastModelKind.Patch, Architecture.TransformerPlusPlus),
            "lmm" or "mac" or "mag" or "mal" => Patch(ArchitectureNames.Parse(text)),
            _ => throw new ArgumentException($"'{text.Trim()}' is not a forecasting model; use naive, dlinear, patchtst, lmm, mac, mag or mal."),
        };

        static ModelChoice Patch(Architecture backbone) => new(backbone.ToString().ToLowerInvariant(), ForecastModelKind.Patch, backbone);

        public ForecasterConfig Config(int channels, int lookback, int horizon, int? width, int? layers, string? patch, string? memory = null)
        {
            var backbone = ForecasterConfig.DefaultBackbone(Architecture, width, layers);
            var config = new ForecasterConfig
            {
                Kind = Kind, Channels = channels, Lookback = lookback, Horizon = horizon, Backbone = backbone.WithMemory(memory),
                InstanceNormalization = Kind == ForecastModelKind.Patch,
            };
            if (patch is not null && Kind == ForecastModelKind.Patch)
                config = ConfigJson.Patch(config, patch, c => c) with { Channels = channels, Lookback = lookback, Horizon = horizon };
            return config.Validate();
        }
    }

    /// <summary>What a forecasting run is given, by name.</summary>
    public sealed record Options
    {
        /// <summary>The CSV, its date column (null: 'date' if present), the columns read and the ones forecast (null: all).</summary>
        public required string Data { get; init; }
        public string? DateColumn { get; init; }
        public IReadOnlyList<string>? Columns { get; init; }
        public IReadOnlyList<string>? Targets { get; init; }
        /// <summary>auto, ett-hourly, ett-15min or "TRAIN,VALIDATION" fractions (<see cref="ForecastSplit.Parse"/>).</summary>
        public string Split { get; init; } = "auto";
        public int Lookback { get; init; } = 96;
        public required IReadOnlyList<int> Horizons { get; init; }
        public required IReadOnlyList<ModelChoice> Models { get; init; }
        public required TrainingConfig Training { get; init; }
        /// <summary>Early stopping: validation every this many steps, stop after this many without a new best.</summary>
        public int EvaluateEvery { get; init; } = 50;
        public int Patience { get; init; } = 6;
        /// <summary>The patch models' backbone width and layers (null: the defaults), JSON over their ForecasterConfig and over their memory.</summary>
        public int? Width { get; init; }
        public int? Layers { get; init; }
        public string? Patch { get; init; }
        public string? Memory { get; init; }
        /// <summary>The run folder (and --force), and where else the table and the plot go.</summary>
        public required string Directory { get; init; }
        public bool Force { get; init; }
        public string? Report { get; init; }
        public string? Plot { get; init; }
        /// <summary>The command as typed, for the table's "Produced by".</summary>
        public string CommandLine { get; init; } = "";
        public ForecastLoss Loss { get; init; } = ForecastLoss.Mse;
        public IReadOnlyList<long>? Seeds { get; init; }

        /// <summary>The seeds every model and horizon is trained with (default: the training config's one seed).</summary>
        public IReadOnlyList<long> AllSeeds => Seeds is { Count: > 0 } ? Seeds : new[] { Training.Seed };
    }

    public sealed record Result(string Model, string Display, int Horizon, long Parameters, double Mse, double Mae, double ValidationMse,
        int Steps, int BestStep, double Seconds, string Checkpoint, long Seed = 1);

    /// <summary>The paper's rows (Table 3: MSE/MAE averaged over the four horizons, lookback 96).</summary>
    static readonly Dictionary<string, (string Model, double Mse, double Mae)[]> PaperRows = new(StringComparer.OrdinalIgnoreCase)
    {
        ["ETTh1"] = new[] { ("Neural memory (Titans)", 0.420, 0.421), ("Simba", 0.441, 0.432), ("iTransformer", 0.454, 0.447), ("PatchTST", 0.469, 0.454), ("DLinear", 0.456, 0.452) },
        ["ETTh2"] = new[] { ("Neural memory (Titans)", 0.336, 0.382), ("Simba", 0.361, 0.391), ("iTransformer", 0.383, 0.407), ("PatchTST", 0.387, 0.407), ("DLinear", 0.559, 0.515) },
    };

    public static IReadOnlyList<Result> Run(Options options, Device device)
    {
        var table = TimeSeriesTable.Load(options.Data, options.DateColumn, options.Columns);
        var split = ForecastSplit.Parse(options.Split, options.Data, table.Rows);
        string dataset = Path.GetFileNameWithoutExtension(options.Data);
        Console.WriteLine($"{dataset}: {table.Rows} rows, columns {string.Join(", ", table.Columns)}; {split}; lookback {options.Lookback}");
        // One folder per data set: a run on another data set is refused here instead of replacing this one's forecasters.
        using var folder = Commands.CommonOptions.Writes ? RunFolder.Acquire(options.Directory, "forecast", options.Force,
            identity: new Dictionary<string, string> { ["data"] = Path.GetFullPath(options.Data) }) : null;
        var results = new List<Result>();
        var plotWindows = new Dictionary<string, float[]>();
        float[]? truth = null;
        foreach (int horizon in options.Horizons)
        {
            using var data = new ForecastData(table, split, options.Lookback, horizon, options.Targets);
            foreach (var choice in options.Models)
            foreach (long seed in options.AllSeeds)
            {
                var config = choice.Config(table.Columns.Count, options.Lookback, horizon, options.Width, options.Layers, options.Patch, options.Memory);
                manual_seed(seed);
                using var model = Forecaster.Create(config);
                model.to(device);
                long parameters = model.parameters().Sum(p => p.numel());
                string name = options.AllSeeds.Count == 1 ? $"{choice.Name}-h{horizon}" : $"{choice.Name}-h{horizon}-seed{seed}";
                Console.WriteLine($"{name}: {Forecaster.Describe(config)}, {parameters:N0} parameters, {data.WindowCount(ForecastPart.Train)} training windows");
                var fit = ForecastTraining.Fit(model, data, options.Training with { Seed = seed }, options.EvaluateEvery, options.Patience,
                    p => Console.WriteLine($"  step {p.Step,5}  train {options.Loss.ToString().ToUpperInvariant()} {p.TrainLoss:F4}  validation MSE {p.Score:F4}{(p.Best ? "  *" : "")}"),
                    options.Loss, Commands.CommonOptions.Environment);
                var test = ForecastTraining.Score(model, data, ForecastPart.Test);
                string saved = $"{name}/forecaster.safetensors", file = Path.Combine(options.Directory, saved);
                if (folder is not null)
                {
                    ForecasterCheckpoint.Save(folder.Claim(saved), model, data, new Dictionary<string, string>
                    {
                        ["data"] = options.Data, ["split"] = split.ToString(), ["best_step"] = fit.BestStep.ToString(), ["seed"] = seed.ToString(),
                        ["loss"] = options.Loss.ToString().ToLowerInvariant(), ["test_mse"] = test.Mse.ToString("R"), ["test_mae"] = test.Mae.ToString("R"),
                    });
                }
                var result = new Result(choice.Name, Forecaster.Describe(config), horizon, parameters, test.Mse, test.Mae, fit.BestScore,
                    fit.Steps, fit.BestStep, fit.Elapsed.TotalSeconds, file, seed);
                results.Add(result);
                Console.WriteLine($"  test MSE {test.Mse:F4}  MAE {test.Mae:F4}  over {test.Windows} windows  (best step {fit.BestStep} of {fit.Steps}, {fit.Elapsed.TotalSeconds:F0} s)");
                if (horizon == options.Horizons[0] && seed == options.AllSeeds[0]) (truth, plotWindows[result.Display]) = PlotWindow(model, data);
                // Results so far survive a stop in a long multi-seed run.
                folder?.Write("results.json", ResultsJson.Serialize(results));
            }
        }
        if (folder is null) return results;
        var report = Report(dataset, options, split, results);
        report.Save(folder.Claim("results.md"));
        if (options.Report is string path) report.Save(path);
        if (truth is not null)
        {
            string plot = options.Plot ?? folder.Claim("forecasts.png");
            var series = new List<PlotSeries> { new("truth", Enumerable.Range(-options.Lookback, truth.Length).Select(i => (double)i).ToList(), truth.Select(v => (double)v).ToList()) };
            series.AddRange(plotWindows.Select(w => new PlotSeries(w.Key, Enumerable.Range(0, w.Value.Length).Select(i => (double)i).ToList(), w.Value.Select(v => (double)v).ToList())));
            LinePlot.Save(plot, $"{dataset}: test window in the middle of the test part, column {table.Columns[^1]} (z-scored), horizon {options.Horizons[0]}",
                "step (0 = first forecast)", "value (z-score)", series, log2X: false, log10Y: false);
            Console.WriteLine($"Plot: {plot}");
        }
        Console.WriteLine($"Results: {Path.Combine(options.Directory, "results.md")}");
        return results;
    }

    /// <summary>The last target column of the middle test window: lookback and truth, and the model's forecast.</summary>
    static (float[] Truth, float[] Forecast) PlotWindow(Forecaster model, ForecastData data)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long start = data.Starts(ForecastPart.Test, data.WindowCount(ForecastPart.Test) / 2, 1)[0];
        var (inputs, targets) = data.Windows(new[] { start });
        int column = data.Targets[^1];
        Tensor forecast = model.forward(inputs.to(model.parameters().FirstOrDefault()?.device ?? CPU)).cpu();
        float[] truth = cat(new[] { inputs[0, .., column], targets[0, .., column] }).data<float>().ToArray();
        return (truth, forecast[0, .., column].data<float>().ToArray());
    }

    static MarkdownReport Report(string dataset, Options options, ForecastSplit split, IReadOnlyList<Result> results)
    {
        var report = new MarkdownReport($"Forecasting {dataset}: lookback {options.Lookback}, horizons {string.Join("/", options.Horizons)}", options.CommandLine);
        var seeds = options.AllSeeds;
        report.Paragraph($"Split by time: {split}; z-scores from the training rows only; MSE and MAE on the z-scored target columns over " +
                         $"every test window (none dropped), each model trained per horizon with early stopping on the validation MSE " +
                         $"(training loss {options.Loss.ToString().ToUpperInvariant()}, at most {options.Training.Steps} steps of {options.Training.BatchSize} windows, " +
                         $"validation every {options.EvaluateEvery} steps, patience {options.Patience}, AdamW lr {options.Training.LearningRate:G3}, " +
                         (seeds.Count == 1 ? $"seed {seeds[0]}). " : $"seeds {string.Join(", ", seeds)}; every number is the mean over the seeds, ± the standard deviation of the per-seed averages). ") +
                         "Time: training and validation, per horizon.");
        var models = results.Select(r => r.Display).Distinct().ToList();
        var header = new List<string> { "model", "parameters (h96)" };
        foreach (int h in options.Horizons) { header.Add($"{h} MSE"); header.Add($"{h} MAE"); }
        header.AddRange(new[] { "avg MSE", "avg MAE", "avg validation MSE", "train time (max per horizon)" });
        // Per model: its scores (each horizon's MSE and MAE, then the averages over horizons) and what the averages' spread is.
        var scored = new List<(string Model, long Parameters, double[] Scores, string[] Spreads, double Seconds)>();
        var perSeed = new Dictionary<string, Dictionary<long, (double Mse, double Mae, double Validation)>>();   // the values behind each mean ± sd
        foreach (string m in models)
        {
            var mine = results.Where(r => r.Display == m).ToList();
            var perHorizon = options.Horizons.Select(h => mine.Where(r => r.Horizon == h).ToList()).ToList();
            if (perHorizon.Any(rs => rs.Count == 0)) continue;
            var scores = perHorizon.SelectMany(rs => new[] { rs.Average(r => r.Mse), rs.Average(r => r.Mae) }).ToList();
            // Per seed: the average over horizons; the row shows their mean (and spread when there are several seeds).
            // The validation MSE (of the weights kept) is what settings are chosen on; the test columns only report.
            perSeed[m] = mine.GroupBy(r => r.Seed).Where(g => g.Count() == options.Horizons.Count)
                .ToDictionary(g => g.Key, g => (Mse: g.Average(r => r.Mse), Mae: g.Average(r => r.Mae), Validation: g.Average(r => r.ValidationMse)));
            var averages = perSeed[m].Values.ToList();
            scores.Add(averages.Average(a => a.Mse));
            scores.Add(averages.Average(a => a.Mae));
            scores.Add(averages.Average(a => a.Validation));
            var spreads = Enumerable.Repeat("", scores.Count - 3).Append(Spread(averages.Select(a => a.Mse).ToList()))
                .Append(Spread(averages.Select(a => a.Mae).ToList())).Append(Spread(averages.Select(a => a.Validation).ToList())).ToArray();
            scored.Add((m, mine.First(r => r.Horizon == options.Horizons[0]).Parameters, scores.ToArray(), spreads, mine.Max(r => r.Seconds)));
        }
        // The best (lowest) of each column in bold, as the paper's tables mark it; ties are all bold.
        var best = Enumerable.Range(0, scored.FirstOrDefault().Scores?.Length ?? 0)
            .Select(c => scored.Select(s => Math.Round(s.Scores[c], 3)).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Min()).ToArray();
        var rows = scored.Select(s => (IReadOnlyList<string>)new[] { s.Model, $"{s.Parameters:N0}" }
            .Concat(s.Scores.Select((v, c) => (Math.Round(v, 3) == best[c] ? $"**{v:F3}**" : $"{v:F3}") + s.Spreads[c]))
            .Append($"{s.Seconds:F0} s").ToList()).ToList();
        report.Table(header, rows);
        if (seeds.Count > 1)
            report.Paragraph("Per seed, the MSE averaged over the horizons (test / validation):")
                .Table(new[] { "model" }.Concat(seeds.Select(seed => $"seed {seed}")).ToList(), models.Select(m => (IReadOnlyList<string>)new[] { m }
                    .Concat(seeds.Select(seed => perSeed.GetValueOrDefault(m)?.TryGetValue(seed, out var a) == true
                        ? $"{a.Mse:F4} / {a.Validation:F4}" : "—")).ToList()));
        if (PaperRows.TryGetValue(dataset, out var paper) && options.Horizons.Order().SequenceEqual(new[] { 96, 192, 336, 720 }) && options.Lookback == 96)
            report.Paragraph("The paper's rows (Titans, Table 3; averages over the same four horizons, lookback 96; not run here):")
                .Table(new[] { "model (paper)", "avg MSE", "avg MAE" }, paper.Select(p => (IReadOnlyList<string>)new[] { p.Model, $"{p.Mse:F3}", $"{p.Mae:F3}" }));
        return report;
    }

    /// <summary>" ± sd" (sample standard deviation) for several values, nothing for one.</summary>
    static string Spread(IReadOnlyList<double> values)
    {
        if (values.Count < 2) return "";
        double mean = values.Average();
        return $" ± {Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1)):F3}";
    }
}
