using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Generation;

/// <summary>
/// Continues a prompt token by token. The prompt streams through the model in pieces of <c>promptChunk</c> tokens,
/// carrying the state, so a prompt far longer than any attention window costs constant memory in the memory models.
/// </summary>
public static class TextGenerator
{
    /// <summary>Yields each new token as it is drawn (so callers can print as it goes).</summary>
    public static IEnumerable<long> Generate(TitansLanguageModel model, long[] prompt, int maxTokens, SamplingOptions options,
        int promptChunk = 512)
    {
        options.Validate();
        if (prompt.Length == 0) throw new ArgumentException("The prompt must hold at least one token.", nameof(prompt));
        if (maxTokens < 0) throw new ArgumentException($"The number of tokens to generate must not be negative, got {maxTokens}.", nameof(maxTokens));
        if (promptChunk < 1) throw new ArgumentException($"The prompt chunk must be at least 1, got {promptChunk}.", nameof(promptChunk));
        model.eval();
        var generator = new Generator((ulong)options.Seed);
        ModelState? state = null;
        Tensor? last = null;
        try
        {
            using (var noGrad = no_grad())
                for (int start = 0; start < prompt.Length; start += promptChunk)
                {
                    using var scope = NewDisposeScope();
                    int take = Math.Min(promptChunk, prompt.Length - start);
                    using var piece = tensor(prompt.AsSpan(start, take).ToArray(), new long[] { 1, take }, device: model.Device);
                    var (logits, next) = model.Forward(piece, state);
                    Replace(ref state, next, scope);
                    last?.Dispose();
                    last = logits.select(1, take - 1).DetachFromDisposeScope();
                }
            for (int i = 0; i < maxTokens; i++)
            {
                long token;
                using (var noGrad = no_grad())
                using (var scope = NewDisposeScope())
                {
                    token = Sample(last!, options, generator);
                    if (i + 1 < maxTokens)
                    {
                        using var input = tensor(new[] { token }, new long[] { 1, 1 }, device: model.Device);
                        var (logits, next) = model.Forward(input, state);
                        Replace(ref state, next, scope);
                        last!.Dispose();
                        last = logits.select(1, 0).DetachFromDisposeScope();
                    }
                }
                yield return token;
            }
        }
        finally
        {
            state?.Dispose();
            last?.Dispose();
            generator.Dispose();
        }
    }

    static void Replace(ref ModelState? state, ModelState next, TorchSharp.DisposeScope scope)
    {
        scope.Detach(next.Tensors);                                          // the state outlives this step
        state?.Dispose();
        state = next;
    }

    /// <summary>Draws one token from logits [1, vocab].</summary>
    public static long Sample(Tensor logits, SamplingOptions options, Generator generator)
    {
        using var scope = NewDisposeScope();
        Tensor l = logits.reshape(-1).to(ScalarType.Float64).cpu();   // the generator is a CPU one
        if (options.Temperature == 0) return l.argmax().item<long>();
        l = l / options.Temperature;
        if (options.TopK > 0 && options.TopK < l.shape[0])
        {
            Tensor kth = l.topk(options.TopK).values[^1];
            l = l.masked_fill(l < kth, double.NegativeInfinity);
        }
        if (options.TopP < 1)
        {
            var (sorted, order) = l.sort(descending: true);
            Tensor cumulative = sorted.softmax(0).cumsum(0);
            // Drop a token when the tokens before it already reach top-p; the most likely token always stays.
            Tensor drop = (cumulative - sorted.softmax(0)) >= options.TopP;
            l = l.scatter(0, order, sorted.masked_fill(drop, double.NegativeInfinity));
        }
        return multinomial(l.softmax(0), 1, generator: generator).item<long>();
    }
}
