using TorchSharp;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Forecasting;

/// <summary>Mean squared and mean absolute error over every window, horizon step and target channel of a part (z-scored units).</summary>
public sealed record ForecastScore(double Mse, double Mae, int Windows);

/// <summary>The training loss of a forecaster (models are always selected and scored by MSE and MAE).</summary>
public enum ForecastLoss
{
    /// <summary>Mean squared error, the protocol's metric.</summary>
    Mse,
    /// <summary>Mean absolute error: less pulled by the rare large errors of a shifting series.</summary>
    Mae,
    /// <summary>Huber (smooth L1, delta 1): squared near zero, absolute beyond one z-score.</summary>
    Huber,
}

/// <summary>
/// The forecasting objective: the <see cref="ForecastLoss"/> on the target channels of <see cref="TrainingConfig.BatchSize"/>
/// training windows drawn uniformly (with replacement) by (seed, step, micro), so a run is reproducible step for step.
/// </summary>
public sealed class ForecastObjective(Forecaster model, ForecastData data, ForecastLoss loss = ForecastLoss.Mse) : ITrainingObjective
{
    public Tensor MicroBatchLoss(TrainingConfig config, int step, int micro)
    {
        var random = new Random(BatchSeed.Of(config.Seed, step, micro));
        int count = data.WindowCount(ForecastPart.Train);
        var starts = Enumerable.Range(0, config.BatchSize).Select(_ => data.Start(ForecastPart.Train, random.Next(count))).ToArray();
        var (inputs, targets) = data.Windows(starts);
        return ForecastTraining.Loss(model.forward(inputs), targets, data, loss);
    }
}

/// <summary>Training with early stopping on the validation MSE, and scoring, for every <see cref="Forecaster"/>.</summary>
public static class ForecastTraining
{
    /// <summary>The loss (MSE by default) of forecasts [B, H, C] against targets on the scored (target) channels.</summary>
    public static Tensor Loss(Tensor forecast, Tensor targets, ForecastData data, ForecastLoss loss = ForecastLoss.Mse)
    {
        using var scope = NewDisposeScope();
        var index = tensor(data.Targets.Select(t => (long)t).ToArray());
        Tensor predicted = forecast.index_select(2, index), truth = targets.index_select(2, index);
        return (loss switch
        {
            ForecastLoss.Mse => nn.functional.mse_loss(predicted, truth),
            ForecastLoss.Mae => nn.functional.l1_loss(predicted, truth),
            ForecastLoss.Huber => nn.functional.huber_loss(predicted, truth, delta: 1.0),
            _ => throw new ArgumentOutOfRangeException(nameof(loss), loss, "unknown forecasting loss"),
        }).MoveToOuterDisposeScope();
    }

    /// <summary>MSE and MAE of the model on every window of <paramref name="part"/>, summed in float64.</summary>
    public static ForecastScore Score(Forecaster model, ForecastData data, ForecastPart part, int batchSize = 256)
    {
        bool training = model.training;
        model.eval();
        double squared = 0, absolute = 0;
        long count = 0;
        int windows = data.WindowCount(part);
        using var noGrad = no_grad();
        var index = tensor(data.Targets.Select(t => (long)t).ToArray());
        for (int first = 0; first < windows; first += batchSize)
        {
            using var scope = NewDisposeScope();
            var (inputs, targets) = data.Windows(data.Starts(part, first, batchSize));
            Tensor error = (model.forward(inputs).index_select(2, index) - targets.index_select(2, index)).to(ScalarType.Float64);
            squared += error.square().sum().item<double>();
            absolute += error.abs().sum().item<double>();
            count += error.numel();
        }
        index.Dispose();
        model.train(training);
        return new ForecastScore(squared / count, absolute / count, windows);
    }

    /// <summary>
    /// Trains with the library's <see cref="Trainer{TModel}"/> for at most <see cref="TrainingConfig.Steps"/> steps with
    /// <see cref="EarlyStopping"/> on the validation MSE (every <paramref name="evaluateEvery"/> steps, stopping after
    /// <paramref name="patience"/> validations without a new best), leaving the model with its best weights. A model
    /// without parameters is only scored.
    /// </summary>
    public static EarlyStoppingResult Fit(Forecaster model, ForecastData data, TrainingConfig config, int evaluateEvery = 100, int patience = 5,
        Action<(int Step, double TrainLoss, double Score, bool Best)>? progress = null, ForecastLoss loss = ForecastLoss.Mse,
        TrainingEnvironment? environment = null)
    {
        if (!model.Trainable)
        {
            double mse = Score(model, data, ForecastPart.Validation).Mse;
            return new EarlyStoppingResult(0, 0, mse, new[] { (0, double.NaN, mse) }, TimeSpan.Zero);
        }
        using var trainer = new Trainer<Forecaster>(model, config, new ForecastObjective(model, data, loss), environment);
        return EarlyStopping.Train(trainer, () => Score(model, data, ForecastPart.Validation).Mse, lowerIsBetter: true, evaluateEvery, patience, progress);
    }
}
