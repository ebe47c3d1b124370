using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>What <see cref="EarlyStopping.Train{TModel}"/> did.</summary>
/// <param name="History">(step, mean training loss since the previous validation, validation score) at each validation.</param>
public sealed record EarlyStoppingResult(int Steps, int BestStep, double BestScore, IReadOnlyList<(int Step, double TrainLoss, double Score)> History,
    TimeSpan Elapsed);

/// <summary>
/// Trains until <see cref="TrainingConfig.Steps"/> or until the validation score has not improved for a number of
/// validations, then leaves the model with the weights of its best validation (the protocol of the forecasting and
/// classification benchmarks).
/// </summary>
public static class EarlyStopping
{
    /// <param name="validate">the model's validation score (it runs without gradient; the model is in eval mode)</param>
    /// <param name="lowerIsBetter">true for a loss or an error, false for an accuracy</param>
    public static EarlyStoppingResult Train<TModel>(Trainer<TModel> trainer, Func<double> validate, bool lowerIsBetter, int evaluateEvery, int patience,
        Action<(int Step, double TrainLoss, double Score, bool Best)>? progress = null) where TModel : nn.Module
    {
        if (evaluateEvery < 1) throw new ArgumentException($"Validate every at least 1 step, got {evaluateEvery}.");
        if (patience < 1) throw new ArgumentException($"The patience must be at least 1 validation, got {patience}.");
        var watch = Stopwatch.StartNew();
        var model = trainer.Model;
        var history = new List<(int, double, double)>();
        Dictionary<string, Tensor>? best = null;
        double bestScore = double.NaN, lossSum = 0;
        int bestStep = 0, sinceBest = 0, losses = 0;
        try
        {
            while (trainer.Step < trainer.Config.Steps)
            {
                lossSum += trainer.TrainStep().Loss;
                losses++;
                if (trainer.Step % evaluateEvery != 0 && trainer.Step != trainer.Config.Steps) continue;
                double score;
                model.eval();
                using (no_grad()) score = validate();
                // Under mpirun rank 0's score decides for all: a near-tie read differently by one rank would stop it alone (a hang).
                if (trainer.Environment.Replicas is { } replicas)
                {
                    Span<double> decided = [score];
                    replicas.FromRoot(decided);
                    score = decided[0];
                }
                model.train();
                bool improved = double.IsNaN(bestScore) || (lowerIsBetter ? score < bestScore : score > bestScore);
                history.Add((trainer.Step, lossSum / losses, score));
                progress?.Invoke((trainer.Step, lossSum / losses, score, improved));
                (lossSum, losses) = (0, 0);
                if (improved)
                {
                    foreach (var t in best?.Values ?? Enumerable.Empty<Tensor>()) t.Dispose();
                    best = model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
                    (bestScore, bestStep, sinceBest) = (score, trainer.Step, 0);
                }
                else if (++sinceBest >= patience) break;
            }
            if (best is not null)
            {
                using var noGrad = no_grad();
                foreach (var (name, t) in model.state_dict()) t.copy_(best[name]);
            }
        }
        finally
        {
            foreach (var t in best?.Values ?? Enumerable.Empty<Tensor>()) t.Dispose();
        }
        model.eval();
        return new EarlyStoppingResult(trainer.Step, bestStep, bestScore, history, watch.Elapsed);
    }
}
