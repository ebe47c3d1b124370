using System.CommandLine;
using Titans.Cli.Commands;
using Titans.Runtime;

namespace Titans.Cli;

public static class Program
{
    /// <summary>See tests/Titans.Tests/tests.runsettings: TorchSharp's temporaries stay alive through a native call only in unoptimized code.</summary>
    const string MinOptsVariable = "DOTNET_JITMinOpts";

    public static int Main(string[] args)
    {
        // Started without it (as a .NET tool, or `dotnet Titans.Cli.dll`): run again with it, passing everything through.
        if (Environment.GetEnvironmentVariable(MinOptsVariable) is null && System.Reflection.Assembly.GetEntryAssembly() == typeof(Program).Assembly &&
            RunAgainWithMinOpts(args) is int code) return code;
        NativeAllocator.KeepFreedMemoryForReuse();
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

    /// <summary>This program again, with <see cref="MinOptsVariable"/> set and the same streams; null where it cannot be started.</summary>
    static int? RunAgainWithMinOpts(string[] args)
    {
        if (ThisProgram.Command() is null) return null;
        var info = ThisProgram.StartInfo(args, redirect: false);
        info.Environment[MinOptsVariable] = "1";
        using var child = System.Diagnostics.Process.Start(info);
        if (child is null) return null;
        child.WaitForExit();
        return child.ExitCode;
    }
}
