using Titans.Models;
using Titans.Text;
using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>Mean next-token loss (nats) over <see cref="Tokens"/> predictions that stand for <see cref="Bytes"/> bytes.</summary>
public sealed record EvaluationResult(double Loss, long Tokens, long Bytes)
{
    public double Perplexity => Math.Exp(Loss);
    public double BitsPerByte => Loss * Tokens / (Bytes * Math.Log(2));
}

/// <summary>
/// Scores a token stream by streaming it through the model in chunks, carrying the model state: memory models see
/// the whole document at constant memory. Full attention (Transformer++) keeps a cache that grows with the context,
/// so it restarts every <c>maxContext</c> tokens (the length it was trained on).
/// </summary>
public static class Evaluation
{
    /// <param name="rows">Streams scored side by side: the stream is cut into this many contiguous parts (a batch).</param>
    /// <param name="restartEveryModel">Every architecture, not only Transformer++, starts afresh every
    /// <paramref name="maxContext"/> tokens: windows scored independently, as a model sees its training sequences.</param>
    /// <param name="progress">Called after each chunk with the predictions scored so far and their total.</param>
    /// <param name="shareCores">Called before each chunk (<see cref="TrainingEnvironment.ShareCores"/>).</param>
    public static EvaluationResult Run(TitansLanguageModel model, ReadOnlySpan<long> stream, ITokenizer tokenizer,
        int chunk, int maxContext, int rows = 1, bool restartEveryModel = false, Action<long, long>? progress = null, Action? shareCores = null)
    {
        if (chunk < 1) throw new ArgumentException($"The evaluation chunk must be at least 1 token, got {chunk}.", nameof(chunk));
        if (rows < 1) throw new ArgumentException($"Rows must be at least 1, got {rows}.", nameof(rows));
        if (maxContext < 1) throw new ArgumentException($"The maximum context must be at least 1 token, got {maxContext}.", nameof(maxContext));
        long length = (stream.Length - 1) / rows;                   // predictions per row
        if (length < 1) throw new ArgumentException($"Evaluation needs at least {rows + 1} tokens, got {stream.Length}.", nameof(stream));
        var inputs = new long[rows * length];
        var targets = new long[rows * length];
        for (int r = 0; r < rows; r++)
        {
            stream.Slice((int)(r * length), (int)length).CopyTo(inputs.AsSpan((int)(r * length)));
            stream.Slice((int)(r * length) + 1, (int)length).CopyTo(targets.AsSpan((int)(r * length)));
        }
        bool restarts = restartEveryModel || model.Config.CacheGrowsWithContext;
        bool training = model.training;
        model.eval();
        double total = 0;
        try
        {
            using var noGrad = no_grad();
            using var x = tensor(inputs, new long[] { rows, length }, device: model.Device);
            using var y = tensor(targets, new long[] { rows, length }, device: model.Device);
            ModelState? state = null;
            for (long start = 0, take; start < length; start += take)
            {
                using var scope = NewDisposeScope();
                shareCores?.Invoke();
                // A piece never crosses a restart: a model that restarts every maxContext tokens sees exactly that many,
                // whatever the chunk (a restart checked only between chunks would let a context grow to the chunk size).
                if (restarts && state is not null && state.Position >= maxContext) { state.Dispose(); state = null; }
                take = Math.Min(chunk, length - start);
                if (restarts) take = Math.Min(take, maxContext - (state?.Position ?? 0));
                var (logits, next) = model.Forward(x.narrow(1, start, take), state);
                state?.Dispose();
                state = next;
                scope.Detach(next.Tensors);                           // the state outlives this chunk
                Tensor loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float64),
                    y.narrow(1, start, take).reshape(-1), reduction: nn.Reduction.Sum);
                total += loss.item<double>();
                progress?.Invoke(rows * (start + take), rows * length);
            }
            state?.Dispose();
        }
        finally { model.train(training); }
        long predictions = rows * length;
        return new EvaluationResult(total / predictions, predictions, tokenizer.ByteCount(targets));
    }
}
