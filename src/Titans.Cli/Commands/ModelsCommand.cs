using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using Titans.Cli.Reporting;
using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Cli.Commands;

/// <summary>`titans models`: the presets of every architecture, built and their parameters counted.</summary>
public static class ModelsCommand
{
    public static Command Create()
    {
        var preset = new Option<string?>("--preset") { Description = $"only this preset ({string.Join(", ", Presets.Names)})" };
        var architecture = new Option<string?>("--architecture", "-a") { Description = "only this architecture (transformer++, swa, lmm, mac, mag, mal)" };
        var json = new Option<bool>("--json") { Description = "print each selected configuration as JSON (the format train reads)" };
        var command = new Command("models",
            "List the presets of every architecture: shape, and the parameter count of the model actually built.")
            { preset, architecture, json };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var presets = parse.GetValue(preset) is string p ? new[] { p } : Presets.Names.ToArray();
            var architectures = parse.GetValue(architecture) is string a
                ? new[] { ArchitectureNames.Parse(a) }
                : Enum.GetValues<Architecture>();
            var configs = presets.SelectMany(name => architectures.Select(arch => (name, Config: Presets.Get(name, arch)))).ToList();
            if (parse.GetValue(json))
                foreach (var (_, config) in configs) Console.WriteLine(config.ToJson());
            else
                Show(configs);
            return 0;
        }));
        return command;
    }

    static void Show(IReadOnlyList<(string Preset, TitansConfig Config)> configs)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (var column in new[] { "preset", "model", "params", "d", "layers", "heads", "FFN", "window", "segment", "N_p" })
            table.AddColumn(new TableColumn(column).RightAligned());
        var watch = Stopwatch.StartNew();
        foreach (var (preset, config) in configs)
        {
            // Built, not estimated: the count is that of the modules a user would train.
            long built;
            using (var scope = NewDisposeScope())
            using (var model = new TitansLanguageModel("model", config))
                built = model.parameters().Sum(p => p.numel());
            if (built != config.ParameterCount)
                throw new InvalidOperationException($"{preset} {config.Architecture}: built {built} parameters, configuration says {config.ParameterCount}.");
            table.AddRow(preset, ArchitectureNames.Display(config.Architecture), Quantities.Count(built), config.ModelDim.ToString(),
                config.Layers.ToString(), config.Heads.ToString(), config.FeedForwardWidth.ToString(),
                config.UsesWindow ? config.Window.ToString() : "-",
                config.Architecture == Architecture.Mac ? config.SegmentLength.ToString() : "-",
                config.UsesPersistentMemory ? config.PersistentTokens.ToString() : "-");
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"[grey]{configs.Count} models built and counted in {watch.Elapsed.TotalSeconds:F1} s. " +
                               "The feed-forward width (FFN) of each architecture is set so its count matches the preset's Transformer++. " +
                               "Memory: L_M = 2, hidden 2·d_h (tiny, small) or 4·d_h, chunk 16, conv 4, one head per attention head.[/]");
    }

}
