using System.CommandLine;
using System.Runtime.InteropServices;
using Titans.Cli.Commands;
using Titans.Runtime;

namespace Titans.Cli;

public static class Program
{
    /// <summary>See tests/Titans.Tests/tests.runsettings: TorchSharp's temporaries stay alive through a native call only in unoptimized code.</summary>
    const string MinOptsVariable = "DOTNET_JITMinOpts";

    /// <summary>Set for the re-launched worker: the process id of the titans process that started it, whose death ends it too.</summary>
    const string ParentVariable = "TITANS_PARENT_PID";

    public static int Main(string[] args)
    {
        // Started without it (as a .NET tool, or `dotnet Titans.Cli.dll`): run again with it, passing everything through.
        if (Environment.GetEnvironmentVariable(MinOptsVariable) is null && System.Reflection.Assembly.GetEntryAssembly() == typeof(Program).Assembly &&
            RunAgainWithMinOpts(args) is int code) return code;
        if (Environment.GetEnvironmentVariable(ParentVariable) is string parent)
        {
            Environment.SetEnvironmentVariable(ParentVariable, null);   // not for the processes this one starts
            // The parent may be killed outright (SIGKILL, no chance to pass it on): the kernel then stops this worker too,
            // and a parent that died before that was asked leaves nothing to work for.
            if (Posix.DieWithParent() && int.TryParse(parent, out int id) && Posix.ParentId != id) return 143;
        }
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
        info.Environment[ParentVariable] = Environment.ProcessId.ToString();
        using var child = System.Diagnostics.Process.Start(info);
        if (child is null) return null;
        // A stop asked of this process (SIGTERM from a scheduler, Ctrl-C, a closed terminal) is the worker's to obey:
        // it is passed on, and this process waits for the worker to finish (releasing its run folder) before it exits.
        var forwarded = new[] { PosixSignal.SIGTERM, PosixSignal.SIGINT, PosixSignal.SIGHUP, PosixSignal.SIGQUIT }.Select(signal =>
            PosixSignalRegistration.Create(signal, context =>
            {
                context.Cancel = true;
                if (!child.HasExited) Posix.Signal(child.Id, SignalNumber(context.Signal));
            })).ToList();
        try
        {
            child.WaitForExit();
            return child.ExitCode;
        }
        finally
        {
            foreach (var registration in forwarded) registration.Dispose();
        }
    }

    /// <summary>The POSIX number of a signal .NET names (its enum values are its own, negative).</summary>
    static int SignalNumber(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGHUP => Posix.SignalHangUp,
        PosixSignal.SIGINT => Posix.SignalInterrupt,
        PosixSignal.SIGQUIT => Posix.SignalQuit,
        _ => Posix.SignalTerminate,
    };
}
