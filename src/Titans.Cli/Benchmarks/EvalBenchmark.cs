using System.Diagnostics;
using Titans.Cli.Reporting;
using Titans.Models;
using Titans.Text;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench eval`: how fast trained checkpoints stream a text as `eval` does (their training length's Transformer++
/// cache, the memories' state carried), each memory model with the fused kernel and with the chunked libtorch scan side
/// by side, the runs alternated; the median tokens/s of each, and the bits per byte each gives (they must agree).
/// </summary>
public static class EvalBenchmark
{
    public sealed record Options(IReadOnlyList<string> Checkpoints, string Text, int Tokens, int Chunk, int Repeats);

    sealed record Variant(string Model, string Scan, TitansLanguageModel Instance, Checkpoint.Header Header, List<double> Speeds, List<double> Bits);

    public static void Run(Options options, string? output, string command)
    {
        var variants = new List<Variant>();
        try
        {
            foreach (string file in options.Checkpoints)
            {
                var (model, header) = Checkpoint.LoadModel(file);
                string name = ArchitectureNames.Display(header.Model);
                if (header.Model.Architecture is Architecture.TransformerPlusPlus or Architecture.SlidingWindow)
                {
                    variants.Add(new Variant(name, "—", model, header, [], []));
                    continue;
                }
                // The same weights with the chunked libtorch scan, its oracle: only the scan differs.
                var chunked = new TitansLanguageModel("model", header.Model.WithMemory("{\"FusedKernel\": false}"));
                chunked.load_state_dict(model.state_dict());
                variants.Add(new Variant(name, "fused kernel", model, header, [], []));
                variants.Add(new Variant(name, "chunked (libtorch)", chunked, header, [], []));
            }
            if (variants.Select(v => v.Header.Tokenizer.Name).Distinct().Count() > 1)
                throw new ArgumentException("The checkpoints use different tokenizers; compare models that read the same tokens.");
            var all = variants[0].Header.Tokenizer.Encode(TextCorpus.Load(options.Text));
            var tokens = all.AsSpan(0, Math.Min(options.Tokens, all.Length)).ToArray();
            Console.WriteLine($"Streaming {tokens.Length:N0} tokens of {options.Text} in pieces of {options.Chunk}, {options.Repeats} rounds, alternated.");
            for (int round = 0; round < options.Repeats; round++)
                foreach (var v in variants)
                {
                    var watch = Stopwatch.StartNew();
                    var result = Evaluation.Run(v.Instance, tokens, v.Header.Tokenizer, options.Chunk, v.Header.Training.SequenceLength);
                    v.Speeds.Add(result.Tokens / watch.Elapsed.TotalSeconds);
                    v.Bits.Add(result.BitsPerByte);
                    Console.WriteLine($"  round {round + 1}: {v.Model,-14} {v.Scan,-20} {v.Speeds[^1],10:N0} tok/s  {result.BitsPerByte:F6} bits/byte");
                }
            double? baseline = variants.FirstOrDefault(v => v.Model == "Transformer++") is { } t ? Timing.Median(t.Speeds) : null;
            var rows = variants.Select(v => (IReadOnlyList<string>)new[]
            {
                v.Model, v.Scan, string.Join(", ", v.Speeds.Select(s => $"{s:N0}")), $"{Timing.Median(v.Speeds):N0}",
                baseline is double b ? $"{Timing.Median(v.Speeds) / b:P1}" : "—", $"{v.Bits[0]:F6}",
            }).ToList();
            var report = new MarkdownReport("Streaming evaluation speed: the fused memory kernel and the chunked scan", command)
                .Paragraph($"`eval` of each checkpoint on the first {tokens.Length:N0} tokens of `{options.Text}`, in pieces of {options.Chunk} " +
                           "(Transformer++ restarts its cache every training length, the memories carry their state), batch 1, no autograd; " +
                           $"{options.Repeats} rounds with every variant once per round, so a slow spell of the machine hits all. The memory models run " +
                           "the same weights with the fused C# kernel and with the chunked libtorch scan (NeuralMemoryConfig.FusedKernel).")
                .Table(new[] { "model", "memory scan", "tokens/s (each round)", "median", "of Transformer++", "bits/byte" }, rows);
            foreach (var group in variants.GroupBy(v => v.Model).Where(g => g.Count() == 2))
            {
                var (fused, chunked) = (group.First(), group.Last());
                report.Paragraph($"{group.Key}: the fused kernel streams {Timing.Median(fused.Speeds) / Timing.Median(chunked.Speeds):F2}× the chunked scan's tokens/s; " +
                                 $"bits per byte differ by {Math.Abs(fused.Bits[0] - chunked.Bits[0]):E1}.");
            }
            Console.WriteLine(string.Join("\n", rows.Select(r => string.Join(" | ", r))));
            if (output is not null)
            {
                report.Save(output);
                Console.WriteLine($"Wrote {output}");
            }
        }
        finally
        {
            foreach (var v in variants) v.Instance.Dispose();
        }
    }
}
