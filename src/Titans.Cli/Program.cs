using System.CommandLine;
using Titans.Cli.Commands;
using Titans.Runtime;

namespace Titans.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        NativeAllocator.KeepFreedMemoryForReuse();
        if (!TorchSharpJit.KeepsArgumentsAlive) Console.Error.WriteLine("titans: " + TorchSharpJit.Warning);
        // Redirected output (logs, CI) gets 80 columns by default, which wraps the wider tables; give them room.
        if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 132;
        // Under mpirun: one rank of a data-parallel job. Rank 0 alone prints; the others' errors still reach stderr.
        var parallel = Titans.Distributed.DataParallel.StartIfLaunched();
        if (parallel is { IsRoot: false }) Console.SetOut(TextWriter.Null);
        var root = new RootCommand("Titans.NET: neural long-term memory that learns to memorize at test time (arXiv 2501.00663).");
        root.Options.Add(CommonOptions.Threads);
        root.Options.Add(CommonOptions.Device);
        foreach (var command in LanguageModelCommands.Create()) root.Subcommands.Add(command);
        root.Subcommands.Add(TaskCommands.Create());
        root.Subcommands.Add(ForecastCommands.Create());
        root.Subcommands.Add(DnaCommands.Create());
        root.Subcommands.Add(ModelsCommand.Create());
        root.Subcommands.Add(DemoCommands.Create());
        root.Subcommands.Add(BenchCommands.Create());
        int exit = root.Parse(args).Invoke();
        Titans.Distributed.DataParallel.Finish();
        return exit;
    }
}
