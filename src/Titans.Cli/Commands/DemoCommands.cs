using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using Titans.Cli.Reporting;
using Titans.Experiments;

namespace Titans.Cli.Commands;

/// <summary>`titans demo ...`: small, self-contained demonstrations that need no data and no training.</summary>
public static class DemoCommands
{
    public static Command Create()
    {
        var demo = new Command("demo", "Self-contained demonstrations (no download, seconds on 2 cores).");
        demo.Subcommands.Add(Memory());
        return demo;
    }

    static Command Memory()
    {
        var passes = new Option<int>("--passes") { Description = "times the stream of pairs is shown", DefaultValueFactory = _ => 1 };
        var seeds = new Option<int>("--seeds") { Description = "random streams averaged per cell", DefaultValueFactory = _ => 3 };
        var dim = new Option<int>("--dim") { Description = "key/value width d_h", DefaultValueFactory = _ => 32 };
        var output = new Option<string?>("--out") { Description = "also write the table as markdown (e.g. docs/demo-memory.md)" };
        var command = new Command("memory",
            "Stream key→value pairs into a fresh memory at test time, then recall them: error vs pairs stored, " +
            "linear vs deep memory, with and without momentum and forgetting.") { passes, seeds, dim, output };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var options = new RecallOptions { Passes = parse.GetValue(passes), Seeds = parse.GetValue(seeds), Dim = parse.GetValue(dim) };
            if (options.Passes < 1 || options.Seeds < 1 || options.Dim < 2)
                throw new ArgumentException("--passes and --seeds must be at least 1, --dim at least 2.");
            RunMemory(options, parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static void RunMemory(RecallOptions options, string? output, string command)
    {
        AnsiConsole.MarkupLine("[bold]Neural memory, learning at test time[/]");
        AnsiConsole.MarkupLine(
            $"Each memory starts fresh and sees N random unit-norm keys → random values (d_h = {options.Dim}) " +
            $"{(options.Passes == 1 ? "once" : $"{options.Passes} times")}, one gradient step per token on ‖M(k) − v‖² " +
            "(the surprise), then recalls every value from its key.");
        AnsiConsole.MarkupLine(
            $"Cell: relative recall error Σ‖M(k) − v‖² / Σ‖v‖² (1.00 = nothing stored, 0 = perfect), mean of {options.Seeds} streams, " +
            "(in brackets) the best inner learning rate θ of " + string.Join("/", options.LearningRates) + ". " +
            $"linear: L_M = 1 (the delta rule); deep: L_M = 2, hidden {options.Expansion}·d_h, GELU; " +
            $"mom: momentum η = {options.Momentum}; fgt: forgetting α = {options.Forgetting}.");
        var watch = Stopwatch.StartNew();
        var results = MemoryRecall.Run(options).ToList();

        var table = new Table().Border(TableBorder.Rounded).AddColumn("pairs N");
        var variants = results.Select(r => r.Variant).Distinct().ToList();
        foreach (var v in variants) table.AddColumn(new TableColumn(v.Name).RightAligned());
        // One row per pair count; cells with console markup, or plain for the markdown document.
        IEnumerable<string[]> Rows(bool markup) => options.PairCounts.Select(n => variants
            .Select(v => results.Single(r => r.Variant == v && r.Pairs == n))
            .Select(r => r.RelativeError > 10 ? (markup ? "[red]diverged[/]" : "diverged")
                : markup ? $"{r.RelativeError:F3} [grey]({r.LearningRate:G2})[/]" : $"{r.RelativeError:F3} ({r.LearningRate:G2})")
            .Prepend(n.ToString()).ToArray());
        foreach (var row in Rows(markup: true)) table.AddRow(row);
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"[grey]{watch.Elapsed.TotalSeconds:F1} s on {Environment.ProcessorCount} cores.[/]");
        if (output is null) return;
        new MarkdownReport("Neural memory: recall after learning at test time", command)
            .Paragraph($"A fresh memory sees N random unit-norm keys → random values (d_h = {options.Dim}) " +
                       $"{(options.Passes == 1 ? "once" : $"{options.Passes} times")}, one inner gradient step per token, then " +
                       "recalls every value from its key. Cell: relative recall error Σ‖M(k) − v‖² / Σ‖v‖² (1.00 = nothing " +
                       $"stored), mean of {options.Seeds} streams, and in brackets the best inner learning rate θ of " +
                       string.Join("/", options.LearningRates) + $". linear: L_M = 1 (delta rule); deep: L_M = 2, hidden " +
                       $"{options.Expansion}·d_h, GELU; mom: η = {options.Momentum}; fgt: α = {options.Forgetting}. " +
                       "\"diverged\": error above 10 at every θ tried.")
            .Table(variants.Select(v => v.Name).Prepend("pairs N").ToList(), Rows(markup: false))
            .Save(output);
        AnsiConsole.MarkupLine($"Wrote {output}");
    }
}
