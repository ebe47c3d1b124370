using System.Diagnostics;
using Titans.Models;
using Titans.Tasks;
using Titans.Tasks.LongContext;
using Titans.Text;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Titans.Tests.Tasks;

/// <summary>
/// Scoring long-context examples, end to end: a tiny Transformer++ trained for 700 steps on 128-token pass-key examples
/// (loss on the answer only) writes the 5-digit key exactly for at least 90% of held-out examples at every depth, where
/// a model that cannot retrieve it gets about 1 in 10⁵. About 30 s on 2 cores. The streamed scoring of memory models is
/// pinned to a single pass.
/// </summary>
public class PassKeyLearningTests(ITestOutputHelper output)
{
    static ILongContextTask PassKey => LongContextTasks.Create("passkey", ByteTokenizer.Instance, () => throw new InvalidOperationException("no real text"));

    [Fact]
    public void TinyTransformerLearnsToRetrieveThePassKey()
    {
        const int Length = 128, Steps = 700;
        var task = PassKey;
        manual_seed(7);
        using var model = new TitansLanguageModel("model", Presets.Get("tiny", Architecture.TransformerPlusPlus));
        var source = new TaskBatches(task);
        var watch = Stopwatch.StartNew();
        var losses = TaskTraining.Train(model, step => source.Batch(1, step, 0, 16, Length), Steps, 3e-3, seed: 8);
        var random = new Random(5);
        var examples = Enumerable.Range(0, 50).Select(i => task.Generate(Length + 1, i / 49.0, random, evaluation: true)).ToList();
        var scores = TaskScoring.Score(model, examples, chunk: 32, rows: 16);
        double accuracy = scores.Average(s => s.Accuracy);
        output.WriteLine($"answer loss every 100 steps {string.Join(" ", losses.Where((_, i) => i % 100 == 0).Select(l => l.ToString("F2")))}; " +
                         $"accuracy {accuracy:P1} in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.True(accuracy >= 0.9, $"pass-key accuracy {accuracy:P1} after {Steps} steps, expected ≥ 90%");
        Assert.All(scores, s => Assert.Equal(1, s.Answers));
    }

    [Theory]
    [InlineData(Architecture.Lmm)]
    [InlineData(Architecture.Mac)]
    [InlineData(Architecture.Mag)]
    public void StreamedPredictionsEqualOnePass(Architecture architecture)
    {
        manual_seed(3);
        using var model = new TitansLanguageModel("model", Presets.Get("tiny", architecture));
        var random = new Random(4);
        var examples = Enumerable.Range(0, 3).Select(i => PassKey.Generate(301, i / 2.0, random, evaluation: true)).ToList();
        var whole = TaskScoring.Predict(model, examples, chunk: 300);
        var streamed = TaskScoring.Predict(model, examples, chunk: 37);
        Assert.Equal(whole, streamed);
        Assert.All(whole, p => Assert.Equal(5, p.Length));
    }

    /// <summary>Rows of a batch do not see each other, so needles at different depths may share one (as `task eval` batches them).</summary>
    [Theory]
    [InlineData(Architecture.Lmm)]
    [InlineData(Architecture.Mac)]
    public void RowsOfABatchArePredictedAsAlone(Architecture architecture)
    {
        manual_seed(5);
        using var model = new TitansLanguageModel("model", Presets.Get("tiny", architecture));
        var random = new Random(6);
        var examples = Enumerable.Range(0, 3).Select(i => PassKey.Generate(257, i / 2.0, random, evaluation: true)).ToList();
        var streamed = new List<long>();
        var together = TaskScoring.Predict(model, examples, chunk: 64, streamed.Add);
        var alone = examples.Select(e => TaskScoring.Predict(model, new[] { e }, chunk: 64)[0]).ToArray();
        Assert.Equal(alone, together);
        Assert.Equal(new long[] { 3 * 64, 3 * 128, 3 * 192, 3 * 256 }, streamed);   // progress: tokens over all rows, chunk by chunk
    }

    [Fact]
    public void AnAnswerCountsOnlyWhenEveryTokenIsRight()
    {
        var mqar = LongContextTasks.Create("mqar", ByteTokenizer.Instance, () => Haystack.Noise(ByteTokenizer.Instance));
        var example = mqar.Generate(200, 0.5, new Random(1), evaluation: true);
        var truth = example.Answers.SelectMany(a => example.Tokens.AsSpan(a.Start, a.Length).ToArray()).ToArray();
        Assert.Equal(new ExampleScore(8, 8), TaskScoring.Check(example, truth));
        var oneDigitOff = (long[])truth.Clone();
        oneDigitOff[5] = oneDigitOff[5] == '0' ? '1' : '0';                       // the second digit of the third value
        Assert.Equal(new ExampleScore(7, 8), TaskScoring.Check(example, oneDigitOff));
        Assert.Equal(0, TaskScoring.Check(example, new long[truth.Length]).Correct);
        Assert.Throws<ArgumentException>(() => TaskScoring.Check(example, truth.AsSpan(1)));
    }
}
