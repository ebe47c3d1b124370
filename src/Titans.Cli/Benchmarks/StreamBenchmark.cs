using System.Diagnostics;
using Spectre.Console;
using TorchSharp;
using Titans.Cli.Reporting;
using Titans.Memory;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench stream`: a long sequence through a small memory, piece by piece with the carried state, at inference.
/// Reports throughput and resident memory as the stream grows (it must stay flat), and checks every output for
/// non-finite values (the module checks its state itself).
/// </summary>
public static class StreamBenchmark
{
    public static void Run(long tokens, int piece, int width, Device device, string? output, string command)
    {
        if (tokens < 1 || piece < 1) throw new ArgumentException("--tokens and --piece must be at least 1.");
        var config = new NeuralMemoryConfig { ModelDim = width, Heads = Math.Max(1, width / 32), Depth = 2, ChunkSize = 16 }.Validate();
        manual_seed(0);
        using var memory = new NeuralMemory("memory", config);
        memory.to(device);
        var generator = new Generator(1);

        AnsiConsole.MarkupLine($"Streaming {tokens:N0} tokens in pieces of {piece} through a memory of width {width}, " +
                               $"{config.Heads} heads, depth 2, chunk 16 (batch 1, fp32, no autograd).");
        long reportEvery = Math.Max(piece, tokens / 10);
        var rows = new List<string[]>();
        NeuralMemoryState? state = null;
        long done = 0, nextReport = reportEvery, nonFinite = 0;
        var watch = Stopwatch.StartNew();
        using (no_grad())
        {
            while (done < tokens)
            {
                int size = (int)Math.Min(piece, tokens - done);
                NeuralMemoryState next;
                using (var scope = NewDisposeScope())
                {
                    Tensor x = randn(new long[] { 1, size, width }, generator: generator).to(device);
                    (Tensor y, next) = memory.Forward(x, state);
                    // Forward itself stops with an error if the memory state goes non-finite; the output is checked here.
                    if (!y.isfinite().all().item<bool>()) nonFinite++;
                    next.DetachFromDisposeScope();
                }
                state?.Dispose();
                state = next;
                done += size;
                if (done >= nextReport || done == tokens)
                {
                    double seconds = watch.Elapsed.TotalSeconds;
                    var row = new[]
                    {
                        $"{done:N0}", $"{done / seconds:N0}", Timing.Mib(ProcessMemory.CurrentRss()), Timing.Mib(ProcessMemory.PeakRss()),
                        nonFinite == 0 ? "yes" : $"NO ({nonFinite} pieces)",
                    };
                    rows.Add(row);
                    AnsiConsole.MarkupLine(string.Join("  ", Header.Zip(row, (h, v) => $"{h}: [bold]{v}[/]")));
                    nextReport += reportEvery;
                }
            }
        }
        state?.Dispose();

        if (output is null) return;
        new MarkdownReport("Neural memory: streaming a long sequence", command)
            .Paragraph($"One NeuralMemory (width {width}, {config.Heads} heads, depth 2, expansion 4, chunk 16), batch 1, fp32, " +
                       $"no autograd, pieces of {piece} tokens with the state carried between calls. Tokens/s is cumulative " +
                       "since the start; RSS is the process's resident memory after that many tokens, peak RSS its maximum so far.")
            .Table(Header, rows)
            .Save(output);
        AnsiConsole.MarkupLine($"Wrote {output}");
    }

    static readonly string[] Header = { "tokens", "tokens/s", "RSS", "peak RSS", "all finite" };
}
