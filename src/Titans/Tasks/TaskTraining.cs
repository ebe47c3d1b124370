using TorchSharp;
using Titans.Models;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tasks;

/// <summary>Loss of a model on the scored positions of a task batch, and a short supervised training loop.</summary>
public static class TaskTraining
{
    /// <summary>Mean cross-entropy (nats) over the scored positions.</summary>
    public static Tensor Loss(TitansLanguageModel model, TrainingBatch batch) => batch.Loss(model.forward(batch.Tokens));

    /// <summary>
    /// Trains with AdamW on fresh batches from <paramref name="sample"/> for <paramref name="steps"/> steps and returns
    /// the loss of each step. Every step runs in its own dispose scope, so memory stays flat.
    /// </summary>
    public static IReadOnlyList<double> Train(TitansLanguageModel model, Func<Generator, TrainingBatch> sample, int steps,
        double learningRate, long seed, double clip = 1.0)
    {
        var generator = new Generator((ulong)seed);
        using var optimizer = optim.AdamW(model.parameters(), lr: learningRate, weight_decay: 0.01);
        var losses = new List<double>(steps);
        model.train();
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            using var batch = sample(generator);
            optimizer.zero_grad();
            Tensor loss = Loss(model, batch);
            loss.backward();
            nn.utils.clip_grad_norm_(model.parameters(), clip);
            optimizer.step();
            double value = loss.to(ScalarType.Float64).item<double>();
            if (!double.IsFinite(value)) throw new InvalidOperationException($"The training loss became {value} at step {step}.");
            losses.Add(value);
        }
        model.eval();
        return losses;
    }
}
