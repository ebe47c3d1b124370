using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Tasks.LongContext;

/// <summary>How many of an example's answers the model got exactly right.</summary>
public sealed record ExampleScore(int Correct, int Answers)
{
    public double Accuracy => (double)Correct / Answers;
}

/// <summary>
/// Scores examples by streaming them through the model in chunks, carrying its state, so memory models read any length
/// at constant memory. An answer counts when every one of its tokens is the model's most likely next token given the
/// tokens before it: exactly when greedy decoding would write the answer. Transformer++ keeps its whole context (its
/// cache grows with the length), so it is tested beyond its training length as it is, with no windowing.
/// </summary>
public static class TaskScoring
{
    /// <param name="rows">Examples scored side by side (a batch); examples of one length share a batch.</param>
    /// <param name="streamed">Called after every chunk with the tokens streamed so far over all examples (for progress on long streams).</param>
    public static IReadOnlyList<ExampleScore> Score(TitansLanguageModel model, IReadOnlyList<TaskExample> examples, int chunk, int rows = 8,
        Action<long>? streamed = null)
    {
        if (chunk < 1) throw new ArgumentException($"The scoring chunk must be at least 1 token, got {chunk}.", nameof(chunk));
        if (rows < 1) throw new ArgumentException($"Rows must be at least 1, got {rows}.", nameof(rows));
        var scores = new ExampleScore[examples.Count];
        var byLength = Enumerable.Range(0, examples.Count).GroupBy(i => examples[i].Length);
        long done = 0;
        foreach (var group in byLength)
            foreach (var batch in group.Chunk(rows))
            {
                long before = done;
                var list = batch.Select(i => examples[i]).ToList();
                var predicted = Predict(model, list, chunk, streamed is null ? null : tokens => streamed(before + tokens));
                for (int j = 0; j < batch.Length; j++) scores[batch[j]] = Check(list[j], predicted[j]);
                done += (long)list.Count * (list[0].Length - 1);
            }
        return scores;
    }

    /// <summary>How many answers <paramref name="predicted"/> (the answer tokens one after another, as <see cref="Predict"/> gives them) spells exactly.</summary>
    public static ExampleScore Check(TaskExample example, ReadOnlySpan<long> predicted)
    {
        if (predicted.Length != example.Answers.Sum(a => a.Length))
            throw new ArgumentException($"{predicted.Length} predicted tokens for {example.Answers.Sum(a => a.Length)} answer tokens.");
        int at = 0, correct = 0;
        foreach (var answer in example.Answers)
        {
            if (predicted.Slice(at, answer.Length).SequenceEqual(example.Tokens.AsSpan(answer.Start, answer.Length))) correct++;
            at += answer.Length;
        }
        return new ExampleScore(correct, example.Answers.Count);
    }

    /// <summary>
    /// The model's most likely token at every answer token of examples of one length (each given the true tokens before
    /// it), the answers of an example one after another; streamed in chunks of <paramref name="chunk"/> tokens.
    /// </summary>
    public static long[][] Predict(TitansLanguageModel model, IReadOnlyList<TaskExample> batch, int chunk, Action<long>? streamed = null)
    {
        int length = batch[0].Length - 1;                              // inputs per row
        if (batch.Any(e => e.Length != length + 1)) throw new ArgumentException("The examples of a batch must all have the same length.");
        int rows = batch.Count;
        var wanted = batch.Select(e => e.AnswerInputs.ToArray()).ToArray();
        var predicted = wanted.Select(w => new long[w.Length]).ToArray();
        int firstNeeded = wanted.Min(w => w.Min());                    // chunks before it run for their state alone
        var inputs = new long[rows * length];
        for (int r = 0; r < rows; r++) Array.Copy(batch[r].Tokens, 0, inputs, r * length, length);
        bool training = model.training;
        model.eval();
        try
        {
            using var noGrad = no_grad();
            using var x = tensor(inputs, new long[] { rows, length }, device: model.Device);
            ModelState? state = null;
            for (int start = 0; start < length; start += chunk)
            {
                using var scope = NewDisposeScope();
                int take = Math.Min(chunk, length - start);
                bool needed = start + take > firstNeeded;
                Tensor? logits = null;
                ModelState next;
                if (needed) (logits, next) = model.Forward(x.narrow(1, start, take), state);
                else next = model.Advance(x.narrow(1, start, take), state);
                state?.Dispose();
                state = next;
                scope.Detach(next.Tensors);
                streamed?.Invoke((long)rows * (start + take));
                if (logits is null) continue;
                var best = logits.argmax(-1).data<long>().ToArray();           // [rows × take]
                for (int r = 0; r < rows; r++)
                    for (int i = 0; i < wanted[r].Length; i++)
                        if (wanted[r][i] >= start && wanted[r][i] < start + take) predicted[r][i] = best[r * take + wanted[r][i] - start];
            }
            state?.Dispose();
        }
        finally { model.train(training); }
        return predicted;
    }
}
