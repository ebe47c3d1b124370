using System.Diagnostics;
using Titans.Cli.Reporting;
using Titans.Generation;
using Titans.Models;
using Titans.Text;
using Titans.Training;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench generate`: the time per generated token after a context of each length, for each checkpoint. The
/// context (the first tokens of a text) streams through the model first; only the generated tokens are timed. A model
/// whose cache grows with the context (Transformer++) attends to all of it; the memory models carry a fixed-size state.
/// </summary>
public static class GenerateBenchmark
{
    public sealed record Options(IReadOnlyList<string> Checkpoints, string Text, IReadOnlyList<int> Contexts, int Tokens, int? FullAttentionLimit);

    public static void Run(Options options, string? output, string command)
    {
        var rows = new List<IReadOnlyList<string>>();
        string corpus = TextCorpus.Load(options.Text);                   // read once; each checkpoint's tokenizer encodes it
        foreach (string file in options.Checkpoints)
        {
            var (model, header) = Checkpoint.LoadModel(file);
            using (model)
            {
                string name = ArchitectureNames.Display(header.Model);
                var text = header.Tokenizer.Encode(corpus);
                var cells = new List<string> { name };
                // Untimed first: the JIT's tiers and libtorch's first calls would otherwise fall on the first context.
                foreach (long _ in TextGenerator.Generate(model, text.AsSpan(0, Math.Min(256, text.Length)).ToArray(), 2 * options.Tokens,
                             new SamplingOptions { Temperature = 0 })) { }
                foreach (int context in options.Contexts)
                {
                    bool growing = header.Model.CacheGrowsWithContext;
                    if (growing && options.FullAttentionLimit is int limit && context > limit) { cells.Add("—"); continue; }
                    if (context > text.Length) throw new ArgumentException($"The text has {text.Length:N0} tokens; a context of {context:N0} needs more.");
                    var prompt = text.AsSpan(0, context).ToArray();
                    var sampling = new SamplingOptions { Temperature = 0 };
                    var watch = new Stopwatch();
                    int drawn = 0;
                    // The first token comes right after the context is read: the clock starts there.
                    foreach (long _ in TextGenerator.Generate(model, prompt, options.Tokens + 1, sampling,
                                 maxContext: growing ? context + options.Tokens + 1 : null))
                    {
                        if (drawn++ == 0) watch.Start();
                    }
                    watch.Stop();
                    double milliseconds = watch.Elapsed.TotalMilliseconds / options.Tokens;
                    cells.Add($"{milliseconds:F2}");
                    Console.WriteLine($"{name,-14} context {context,9:N0}: {milliseconds:F2} ms per token");
                }
                rows.Add(cells);
            }
        }
        var report = new MarkdownReport("Generation: time per token after a context", command)
            .Paragraph($"Each checkpoint reads the first tokens of `{options.Text}` as its context, then generates {options.Tokens} tokens " +
                       "greedily, one forward pass per token (batch 1, no autograd); the table gives the milliseconds per generated token, " +
                       "the context's reading not counted, after an untimed warm-up generation. Transformer++ attends to its whole context" +
                       (options.FullAttentionLimit is int l ? $" (not run past {l:N0} tokens: —)" : "") +
                       "; the memory models carry a fixed-size state. One run.")
            .Table(new[] { "model" }.Concat(options.Contexts.Select(c => $"{c:N0} tokens (ms/token)")).ToList(), rows);
        foreach (var row in rows) Console.WriteLine(string.Join(" | ", row));
        if (output is null) return;
        report.Save(output);
        Console.WriteLine($"Wrote {output}");
    }
}
