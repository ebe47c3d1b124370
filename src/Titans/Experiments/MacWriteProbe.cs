using TorchSharp;
using Titans.Models;
using Titans.Tasks.LongContext;
using static TorchSharp.torch;

namespace Titans.Experiments;

/// <summary>
/// How well a linear probe recovers the needle's tokens from one of MAC's signals: <see cref="Feature"/> names the signal
/// and where it is read, <see cref="Block"/> the MAC block. Accuracies are on held-out examples; <see cref="Chance"/> is
/// the most frequent class's share among them.
/// </summary>
public sealed record MacProbeAccuracy(int Block, string Feature, double TrainAccuracy, double TestAccuracy, double Chance, int TrainSamples, int TestSamples);

/// <summary>
/// Asks where MAC loses a needle: does the value it writes into its memory carry the needle's tokens at the needle, and
/// does the memory's read carry them back at the question? Per MAC block, one linear probe (softmax regression on the
/// standardized d-dimensional signal, the needle's token as the class) for each of: the segment input at the needle's
/// tokens (what <see cref="MacWrite.SegmentInput"/> writes), the written value there (for the paper's write, the
/// normalized attention output), and the memory's read h at the positions that predict the answer. A signal a linear
/// probe cannot decode is one the memory cannot store as a linear association either.
/// </summary>
public static class MacWriteProbe
{
    public static readonly string[] Features = { "segment input at the needle", "written value at the needle", "memory read at the question" };

    /// <param name="examples">examples whose first answer also occurs earlier in the example (the needle), each at one length</param>
    /// <param name="trainShare">share of the examples the probes are fitted on; the rest score them</param>
    public static IReadOnlyList<MacProbeAccuracy> Run(TitansLanguageModel model, IReadOnlyList<TaskExample> examples, int batchSize = 32,
        double trainShare = 2.0 / 3, int steps = 400, long seed = 1)
    {
        if (model.Config.Architecture != Architecture.Mac)
            throw new ArgumentException($"The write probe looks inside MAC's blocks; this model is {ArchitectureNames.Display(model.Config)}.", nameof(model));
        if (examples.Count < 6) throw new ArgumentException($"The probe needs at least 6 examples, got {examples.Count}.", nameof(examples));
        if (examples.Select(e => e.Length).Distinct().Count() != 1)
            throw new ArgumentException("The probe's examples must all have one length (they run as one batch).", nameof(examples));
        var located = examples.Select(Locate).ToArray();
        int blocks = model.Blocks.Count, features = Features.Length;
        // features[block][feature] → gathered rows, one per needle token, in example order.
        var rows = Enumerable.Range(0, blocks).Select(_ => Enumerable.Range(0, features).Select(_ => new List<Tensor>()).ToArray()).ToArray();
        var labels = new List<long>();
        bool training = model.training;
        try
        {
            using (no_grad())
            {
                model.eval();
                for (int start = 0; start < examples.Count; start += batchSize)
                {
                    int count = Math.Min(batchSize, examples.Count - start);
                    using var scope = NewDisposeScope();
                    var pieces = Enumerable.Range(0, blocks).Select(_ => (Input: new List<Tensor>(), Read: new List<Tensor>(), Written: new List<Tensor>())).ToArray();
                    for (int b = 0; b < blocks; b++)
                    {
                        var slot = pieces[b];
                        // Copies outside every dispose scope: the block's own tensors die with the forward pass.
                        ((MacBlock)model.Blocks[b]).Observer = (input, read, written) =>
                        {
                            slot.Input.Add(input.detach().clone().DetachFromDisposeScope());
                            slot.Read.Add(read.detach().clone().DetachFromDisposeScope());
                            slot.Written.Add(written.detach().clone().DetachFromDisposeScope());
                        };
                    }
                    var batch = examples.Skip(start).Take(count).ToArray();
                    var where = located[start..(start + count)];
                    long length = batch[0].Length;
                    using (var tokens = tensor(batch.SelectMany(e => e.Tokens).ToArray(), new long[] { count, length }, device: model.Device))
                        model.Forward(tokens, null).State.Dispose();
                    // Row r of the gathered [count·T, d] matrices is example r / T at position r % T.
                    var needle = where.SelectMany((l, i) => l.Needle.Select(p => i * length + p)).ToArray();
                    var question = where.SelectMany((l, i) => l.Question.Select(p => i * length + p)).ToArray();
                    using var needleIndex = tensor(needle, device: model.Device);
                    using var questionIndex = tensor(question, device: model.Device);
                    for (int b = 0; b < blocks; b++)
                    {
                        var gather = (List<Tensor> parts, Tensor index) =>
                        {
                            Tensor all = cat(parts, 1);
                            return all.reshape(-1, all.shape[2]).index_select(0, index).to(float32).cpu().MoveToOuterDisposeScope();   // probes are fitted on the CPU
                        };
                        rows[b][0].Add(gather(pieces[b].Input, needleIndex));
                        rows[b][1].Add(gather(pieces[b].Written, needleIndex));
                        rows[b][2].Add(gather(pieces[b].Read, questionIndex));
                        foreach (var t in pieces[b].Input.Concat(pieces[b].Read).Concat(pieces[b].Written)) t.Dispose();
                    }
                    labels.AddRange(where.SelectMany(l => l.Labels));
                }
            }
        }
        finally
        {
            foreach (var block in model.Blocks.OfType<MacBlock>()) block.Observer = null;
            model.train(training);
        }

        // Classes are the answer tokens seen; samples split by example, so one example's tokens are on one side only.
        var classes = labels.Distinct().OrderBy(t => t).Select((t, i) => (t, i)).ToDictionary(p => p.t, p => (long)p.i);
        int perExample = located[0].Labels.Length;
        int trainExamples = Math.Clamp((int)Math.Round(examples.Count * trainShare), 1, examples.Count - 1);
        int split = trainExamples * perExample;
        using var y = tensor(labels.Select(t => classes[t]).ToArray());
        var results = new List<MacProbeAccuracy>();
        for (int b = 0; b < blocks; b++)
            for (int f = 0; f < features; f++)
            {
                using var x = cat(rows[b][f], 0);
                var (train, test) = Fit(x, y, split, classes.Count, steps, seed);
                using var testLabels = y.narrow(0, split, y.shape[0] - split);
                double chance = testLabels.bincount(null).max().ToDouble() / testLabels.shape[0];
                results.Add(new MacProbeAccuracy(b, Features[f], train, test, chance, split, (int)(y.shape[0] - split)));
            }
        foreach (var t in rows.SelectMany(r => r).SelectMany(r => r)) t.Dispose();
        return results;
    }

    /// <summary>The needle's token positions (its first occurrence), the positions that predict the answer, and the answer's tokens.</summary>
    static (int[] Needle, int[] Question, long[] Labels) Locate(TaskExample example)
    {
        if (example.Answers.Count == 0) throw new ArgumentException("A probed example needs an answer.");
        var answer = example.Answers[0];
        long[] value = example.Tokens.AsSpan(answer.Start, answer.Length).ToArray();
        for (int p = 0; p + value.Length <= answer.Start; p++)
            if (example.Tokens.AsSpan(p, value.Length).SequenceEqual(value))
                return (Enumerable.Range(p, value.Length).ToArray(), Enumerable.Range(answer.Start - 1, value.Length).ToArray(), value);
        throw new ArgumentException($"The answer '{answer.Text}' does not occur before the question, so there is no needle to probe.");
    }

    /// <summary>Softmax regression on standardized features, full batch, Adam; accuracy on the first <paramref name="split"/> rows and on the rest.</summary>
    static (double Train, double Test) Fit(Tensor x, Tensor y, int split, int classes, int steps, long seed)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)seed);
        Tensor trainX = x.narrow(0, 0, split), testX = x.narrow(0, split, x.shape[0] - split);
        Tensor mean = trainX.mean(new long[] { 0 }, keepdim: true), std = trainX.std(0, keepdim: true) + 1e-6;
        trainX = (trainX - mean) / std;
        testX = (testX - mean) / std;
        Tensor trainY = y.narrow(0, 0, split), testY = y.narrow(0, split, y.shape[0] - split);
        var weight = new TorchSharp.Modules.Parameter(randn(new long[] { x.shape[1], classes }, generator: generator) * 0.01);
        var bias = new TorchSharp.Modules.Parameter(zeros(classes));
        using var optimizer = optim.Adam(new[] { weight, bias }, lr: 0.05);
        for (int step = 0; step < steps; step++)
        {
            using var stepScope = NewDisposeScope();
            optimizer.zero_grad();
            // A little L2 so separable data (few samples, 64 dimensions) does not drive the weights to infinity.
            Tensor loss = nn.functional.cross_entropy(trainX.matmul(weight) + bias, trainY) + 1e-3 * weight.square().sum();
            loss.backward();
            optimizer.step();
        }
        using (no_grad())
        {
            double Accuracy(Tensor features, Tensor labels) =>
                (features.matmul(weight) + bias).argmax(1).eq(labels).to(float64).mean().ToDouble();
            return (Accuracy(trainX, trainY), Accuracy(testX, testY));
        }
    }
}
