using System.CommandLine;
using TorchSharp;
using Titans.Cli.Runs;
using Titans.Forecasting;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>`titans forecast train | eval`: long-term time-series forecasting on any CSV (the ETT protocol by default).</summary>
public static class ForecastCommands
{
    public static Command Create()
    {
        var forecast = new Command("forecast", "Long-term time-series forecasting (ETT protocol by default): train and evaluate forecasters.");
        forecast.Subcommands.Add(Train());
        forecast.Subcommands.Add(Evaluate());
        return forecast;
    }

    static readonly Option<string> Data = new("--data")
    {
        Description = "CSV file: a header row, rows oldest first", DefaultValueFactory = _ => Path.Combine("data", "ett", "ETTh1.csv"),
    };
    static readonly Option<string?> DateColumn = new("--date-column") { Description = "the date column (default: 'date' if present; '' for none)" };
    static readonly Option<string?> Columns = new("--columns") { Description = "comma-separated numeric columns to read (default: all but the date)" };
    static readonly Option<string> Split = new("--split")
    {
        Description = "auto (ETT's 12/4/4 months for ETTh*/ETTm* files, else 0.7,0.1), ett-hourly, ett-15min, or TRAIN,VALIDATION fractions",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>The names of a list option; null (the option's default) where it names none.</summary>
    static IReadOnlyList<string>? Names(string? text) => Lists.Items(text) is { Count: > 0 } names ? names : null;

    static Command Train()
    {
        var targets = new Option<string?>("--targets") { Description = "comma-separated columns to forecast and score (default: every column read)" };
        var lookback = new Option<int>("--lookback", "--seq-len") { Description = "past steps each forecast reads (its sequence length)", DefaultValueFactory = _ => 96 };
        var horizons = new Option<string>("--horizons") { Description = "comma-separated forecast lengths (one model each)", DefaultValueFactory = _ => "96,192,336,720" };
        var models = new Option<string>("--models")
        {
            Description = "comma-separated models: naive, dlinear, patchtst (Transformer++ backbone), lmm, mac, mag, mal",
            DefaultValueFactory = _ => "naive,dlinear,patchtst,lmm",
        };
        var optimizer = new OptimizerOptions(new TrainingConfig { Steps = 3000, BatchSize = 32, LearningRate = 1e-3, WarmupSteps = 100, WeightDecay = 0.05 },
            steps: "most optimizer steps per model", batch: "windows per micro-batch (each of every channel)");
        var evalEvery = new Option<int>("--eval-every") { Description = "steps between validations", DefaultValueFactory = _ => 50 };
        var patience = new Option<int>("--patience") { Description = "validations without a new best before stopping", DefaultValueFactory = _ => 6 };
        var seeds = new Option<string?>("--seeds") { Description = "comma-separated seeds: train every model and horizon once per seed, report means ± sd (overrides --seed)" };
        var loss = new Option<string>("--loss") { Description = "training loss: mae (default; lower test MSE on ETT, docs/forecasting.md), mse or huber; models are selected and scored by MSE/MAE", DefaultValueFactory = _ => "mae" };
        var width = new Option<int?>("--width") { Description = "backbone width of the patch models (default 32)" };
        var layers = new Option<int?>("--layers") { Description = "backbone layers of the patch models (default 2)" };
        var patch = new Option<string?>("--forecaster")
        {
            Description = "JSON fields set over the patch models' ForecasterConfig, e.g. '{\"Dropout\": 0.3, \"LinearSkip\": true}' or '{\"Backbone\": {...}}'",
        };
        var memory = new Option<string?>("--memory") { Description = "JSON fields set over the memory models' memory, e.g. '{\"ChunkSize\": 2}'" };
        var output = new Option<string?>("--out") { Description = "folder of the run: a forecaster per model and horizon, results.md, forecasts.png (default: runs/forecast/<data set>)" };
        var force = CommonOptions.Force();
        var report = new Option<string?>("--report") { Description = "also write the results table here (e.g. docs/forecasting/etth1.md)" };
        var plot = new Option<string?>("--plot") { Description = "write the forecast plot here instead of the run folder" };
        var command = new Command("train", "Train forecasters (one per model and horizon) with early stopping, score the test part, write a table and a plot.")
        {
            Data, DateColumn, Columns, targets, Split, lookback, horizons, models, optimizer.Steps, optimizer.Batch, optimizer.Accumulate, optimizer.LearningRate,
            optimizer.Warmup, optimizer.Decay, evalEvery, patience, optimizer.Seed, seeds, loss, width, layers, patch, memory, output, force, report, plot,
        };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var training = optimizer.Apply(parse, new TrainingConfig { SequenceLength = parse.GetValue(lookback), Beta2 = 0.999 }).Validate();
            string file = parse.GetValue(Data)!;
            ForecastRun.Run(new ForecastRun.Options
            {
                Data = file, DateColumn = parse.GetValue(DateColumn), Columns = Names(parse.GetValue(Columns)), Targets = Names(parse.GetValue(targets)),
                Split = parse.GetValue(Split)!, Lookback = parse.GetValue(lookback),
                Horizons = Lists.NonEmpty(Lists.PositiveIntegers(parse.GetValue(horizons), "--horizons"), "--horizons"),
                Models = Lists.NonEmpty(Lists.Items(parse.GetValue(models)), "--models").Select(ForecastRun.ModelChoice.Parse).ToList(),
                Training = training, EvaluateEvery = parse.GetValue(evalEvery), Patience = parse.GetValue(patience),
                Width = parse.GetValue(width), Layers = parse.GetValue(layers), Patch = parse.GetValue(patch), Memory = parse.GetValue(memory),
                Directory = parse.GetValue(output) ?? Path.Combine("runs", "forecast", Path.GetFileNameWithoutExtension(file)), Force = parse.GetValue(force),
                Report = parse.GetValue(report), Plot = parse.GetValue(plot), CommandLine = CommonOptions.CommandLine(parse),
                Loss = CommonOptions.ByName<ForecastLoss>(parse.GetValue(loss)!, "--loss"),
                Seeds = parse.GetValue(seeds) is string list ? Lists.PositiveIntegers(list, "--seeds").Select(s => (long)s).ToList() : null,
            }, device);
            return 0;
        }));
        return command;
    }

    static Command Evaluate()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "a forecaster.safetensors written by forecast train", Required = true };
        var part = new Option<string>("--part") { Description = "train, validation or test", DefaultValueFactory = _ => "test" };
        var command = new Command("eval", "Score a trained forecaster on a CSV (z-scored with the statistics saved in the checkpoint): MSE and MAE.")
        {
            checkpoint, Data, DateColumn, Split, part,
        };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var which = CommonOptions.ByName<ForecastPart>(parse.GetValue(part)!, "--part");
            var (model, header) = ForecasterCheckpoint.Load(parse.GetValue(checkpoint)!);
            using (model)
            {
                string file = parse.GetValue(Data)!;
                var table = TimeSeriesTable.Load(file, parse.GetValue(DateColumn), header.Columns);
                using var data = new ForecastData(table, ForecastSplit.Parse(parse.GetValue(Split)!, file, table.Rows), model.Config.Lookback,
                    model.Config.Horizon, header.Targets, header.Mean, header.Deviation);
                model.to(device);
                var score = ForecastTraining.Score(model, data, which);
                Console.WriteLine($"{Forecaster.Describe(model.Config)}, lookback {model.Config.Lookback}, horizon {model.Config.Horizon}, " +
                                  $"{which.ToString().ToLowerInvariant()} part of {Path.GetFileName(file)} ({score.Windows} windows): MSE {score.Mse:F4}  MAE {score.Mae:F4}");
            }
            return 0;
        }));
        return command;
    }
}
