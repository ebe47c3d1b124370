using TorchSharp;
using Titans.Models;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tests.Tasks;

/// <summary>For the tests: the loss of a model on the scored positions of a task batch, and a short supervised run of the library's trainer.</summary>
static class TaskTraining
{
    /// <summary>Mean cross-entropy (nats) over the scored positions.</summary>
    public static Tensor Loss(TitansLanguageModel model, TrainingBatch batch) => batch.Loss(model.forward(batch.Tokens));

    /// <summary>
    /// Trains with the library's <see cref="Trainer{TModel}"/> (AdamW, constant learning rate after no warmup, clipping at
    /// <paramref name="clip"/>) on batches from <paramref name="sample"/> (given the 0-based step) and returns the loss of
    /// each step.
    /// </summary>
    public static IReadOnlyList<double> Train(TitansLanguageModel model, Func<int, TrainingBatch> sample, int steps,
        double learningRate, long seed, double clip = 1.0)
    {
        var config = new TrainingConfig
        {
            Steps = steps, BatchSize = 1, SequenceLength = 1, LearningRate = learningRate, WarmupSteps = 0,
            MinLearningRateRatio = 1, WeightDecay = 0.01, Beta2 = 0.999, GradientClip = clip, Seed = seed,
        };
        using var trainer = new Trainer<TitansLanguageModel>(model, config, new SampledObjective(model, sample));
        var losses = new List<double>(steps);
        for (int step = 0; step < steps; step++) losses.Add(trainer.TrainStep().Loss);
        model.eval();
        return losses;
    }

    sealed class SampledObjective(TitansLanguageModel model, Func<int, TrainingBatch> sample) : ITrainingObjective
    {
        public Tensor MicroBatchLoss(TrainingConfig config, int step, int micro)
        {
            using var batch = sample(step).To(model.Device);
            return Loss(model, batch);
        }
    }
}
