using System.CommandLine;
using Titans.Cli.Benchmarks;

namespace Titans.Cli.Commands;

/// <summary>`titans bench ...`: measurements that print numbers and write result tables under docs/.</summary>
public static class BenchCommands
{
    public static Command Create()
    {
        var bench = new Command("bench", "Benchmarks: tokens/s, GFLOP/s against the matmul ceiling, peak memory.");
        bench.Subcommands.Add(MemoryBench());
        bench.Subcommands.Add(StreamBench());
        return bench;
    }

    static Command MemoryBench()
    {
        var quick = new Option<bool>("--quick") { Description = "reduced grid, under a minute" };
        var width = new Option<int>("--width") { Description = "model width d", DefaultValueFactory = _ => 512 };
        var heads = new Option<int>("--heads") { Description = "memory heads", DefaultValueFactory = _ => 8 };
        var repeats = new Option<int>("--repeats") { Description = "timed runs per cell (median reported)", DefaultValueFactory = _ => 3 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/bench-memory.md)" };
        var command = new Command("memory", "Forward and forward+backward speed of the neural memory over lengths, chunk sizes and depths.")
            { quick, width, heads, repeats, output };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var options = new MemoryBenchmark.Options(parse.GetValue(quick), parse.GetValue(width), parse.GetValue(heads),
                parse.GetValue(repeats), device);
            MemoryBenchmark.Run(options, parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command StreamBench()
    {
        var tokens = new Option<long>("--tokens") { Description = "tokens to stream", DefaultValueFactory = _ => 1_000_000 };
        var piece = new Option<int>("--piece") { Description = "tokens per call", DefaultValueFactory = _ => 2048 };
        var width = new Option<int>("--width") { Description = "model width d", DefaultValueFactory = _ => 128 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/bench-stream.md)" };
        var command = new Command("stream", "Stream a long sequence through a small memory in pieces: tokens/s, RSS, finiteness.")
            { tokens, piece, width, output };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            StreamBenchmark.Run(parse.GetValue(tokens), parse.GetValue(piece), parse.GetValue(width), device, parse.GetValue(output),
                CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }
}
