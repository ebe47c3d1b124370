using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Generation;

/// <summary>
/// Continues a prompt token by token. The prompt streams through the model in pieces of <c>promptChunk</c> tokens,
/// carrying the state, so a prompt far longer than any attention window costs constant memory in the memory models.
/// A model whose cache grows with the context (<see cref="TitansConfig.CacheGrowsWithContext"/>, Transformer++) keeps
/// at most <c>maxContext</c> tokens: it reads only the prompt's last <c>maxContext</c>, and when its cache is full it
/// starts again from the last half of what it has seen (a sliding restart), so time and memory stay bounded.
/// </summary>
public static class TextGenerator
{
    /// <summary>Yields each new token as it is drawn (so callers can print as it goes); bad arguments throw here, before the first token.</summary>
    /// <param name="maxContext">The most tokens a growing cache holds (null: unbounded); models with a fixed-size state ignore it.</param>
    /// <param name="promptProgress">Told (tokens read, tokens to read) after each piece of the prompt: a long prompt takes a while.</param>
    public static IEnumerable<long> Generate(TitansLanguageModel model, long[] prompt, int maxTokens, SamplingOptions options,
        int promptChunk = 512, int? maxContext = null, Action<long, long>? promptProgress = null)
    {
        options.Validate();
        if (prompt.Length == 0) throw new ArgumentException("The prompt must hold at least one token.", nameof(prompt));
        if (maxTokens < 0) throw new ArgumentException($"The number of tokens to generate must not be negative, got {maxTokens}.", nameof(maxTokens));
        if (promptChunk < 1) throw new ArgumentException($"The prompt chunk must be at least 1, got {promptChunk}.", nameof(promptChunk));
        if (maxContext < 1) throw new ArgumentException($"The maximum context must be at least 1 token, got {maxContext}.", nameof(maxContext));
        return Tokens(model, prompt, maxTokens, options, promptChunk, model.Config.CacheGrowsWithContext ? maxContext : null, promptProgress);
    }

    static IEnumerable<long> Tokens(TitansLanguageModel model, long[] prompt, int maxTokens, SamplingOptions options, int promptChunk, int? maxContext,
        Action<long, long>? promptProgress)
    {
        bool readingPrompt = true;
        model.eval();
        var generator = new Generator((ulong)options.Seed);
        ModelState? state = null;
        Tensor? last = null;
        var seen = new List<long>(prompt);

        // A fresh state that has read these tokens; `last` becomes the logits after the final one.
        void Read(ReadOnlySpan<long> tokens)
        {
            state?.Dispose();
            state = null;
            using var noGrad = no_grad();
            for (int start = 0; start < tokens.Length; start += promptChunk)
            {
                using var scope = NewDisposeScope();
                int take = Math.Min(promptChunk, tokens.Length - start);
                using var piece = tensor(tokens.Slice(start, take).ToArray(), new long[] { 1, take }, device: model.Device);
                var (logits, next) = model.Forward(piece, state);
                Replace(ref state, next, scope);
                last?.Dispose();
                last = logits.select(1, take - 1).DetachFromDisposeScope();
                if (readingPrompt) promptProgress?.Invoke(start + take, tokens.Length);
            }
            readingPrompt = false;
        }

        try
        {
            Read(maxContext is int c ? prompt.AsSpan(Math.Max(0, prompt.Length - c)) : prompt);
            for (int i = 0; i < maxTokens; i++)
            {
                long token;
                using (var noGrad = no_grad())
                using (var scope = NewDisposeScope())
                    token = Sample(last!, options, generator);
                seen.Add(token);
                if (i + 1 < maxTokens)
                {
                    if (maxContext is int limit && state!.Position >= limit)
                        Read(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(seen)[^Math.Max(1, limit / 2)..]);
                    else
                    {
                        using var noGrad = no_grad();
                        using var scope = NewDisposeScope();
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
