using TorchSharp;
using Titans.Training;
using static TorchSharp.torch;
using Titans.Text;

namespace Titans.Dna;

/// <summary>Labelled sequences as token batches, the classification objective and accuracy.</summary>
public static class SequenceClassification
{
    /// <summary>Token ids [B, T] of the given rows, right-padded with <see cref="NucleotideTokenizer.Padding"/>, and labels [B].</summary>
    public static (Tensor Tokens, Tensor Labels) Batch(LabelledSequences data, IReadOnlyList<int> rows)
    {
        int length = rows.Max(r => data.Sequences[r].Length);
        var tokens = new long[rows.Count * length];
        for (int i = 0; i < rows.Count; i++)
        {
            string s = data.Sequences[rows[i]];
            for (int t = 0; t < s.Length; t++) tokens[i * length + t] = NucleotideTokenizer.Id(s[t]);
        }
        return (tensor(tokens, new long[] { rows.Count, length }), tensor(rows.Select(r => (long)data.Labels[r]).ToArray()));
    }

    /// <summary>Top-1 accuracy of <paramref name="model"/> over every sequence of <paramref name="data"/>.</summary>
    public static double Accuracy(nn.Module<Tensor, Tensor> model, LabelledSequences data, Device device, int batchSize = 64) =>
        Score(model, data, device, batchSize).Accuracy;

    /// <summary>
    /// Top-1 accuracy over every sequence of <paramref name="data"/>, and per class (the share of that class's sequences
    /// classified as it; NaN for a class with none).
    /// </summary>
    public static (double Accuracy, double[] PerClass) Score(nn.Module<Tensor, Tensor> model, LabelledSequences data, Device device, int batchSize = 64)
    {
        bool training = model.training;
        model.eval();
        using var noGrad = no_grad();
        var correct = new long[data.Classes];
        for (int first = 0; first < data.Count; first += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = Enumerable.Range(first, Math.Min(batchSize, data.Count - first)).ToArray();
            var (tokens, labels) = Batch(data, rows);
            bool[] hits = model.forward(tokens.to(device)).argmax(1).cpu().eq(labels).data<bool>().ToArray();
            for (int i = 0; i < rows.Length; i++)
                if (hits[i]) correct[data.Labels[rows[i]]]++;
        }
        model.train(training);
        int[] counts = data.CountPerClass();
        return (correct.Sum() / (double)data.Count, correct.Select((c, k) => counts[k] == 0 ? double.NaN : c / (double)counts[k]).ToArray());
    }
}

/// <summary>Cross-entropy of the class logits on <see cref="TrainingConfig.BatchSize"/> training sequences drawn by (seed, step, micro).</summary>
public sealed class ClassificationObjective(nn.Module<Tensor, Tensor> model, LabelledSequences data, Device device) : ITrainingObjective
{
    public Tensor MicroBatchLoss(TrainingConfig config, int step, int micro)
    {
        var random = new Random(BatchSeed.Of(config.Seed, step, micro));
        var rows = Enumerable.Range(0, config.BatchSize).Select(_ => random.Next(data.Count)).ToArray();
        var (tokens, labels) = SequenceClassification.Batch(data, rows);
        return nn.functional.cross_entropy(model.forward(tokens.to(device)), labels.to(device));
    }
}
