using System.Diagnostics;
using Titans.Runtime;

namespace Titans.Tests.Cli;

/// <summary>
/// titans runs as one process (it used to run itself again as a worker with DOTNET_JITMinOpts set, and a stopped
/// launcher left the worker training on, re-parented to PID 1, holding run.lock). Stopping it frees its run folder.
/// </summary>
public sealed class SignalTests() : CorpusFolder("titans-signals-")
{
    /// <summary>titans started as a user starts it (no JIT variables), once it trains (its run folder's lock is held).</summary>
    (Process Titans, string Run) StartTraining(string name)
    {
        string run = Path.Combine(folder, name);
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { Path.Combine(AppContext.BaseDirectory, "Titans.Cli.dll"), "train", "--data", corpus, "-a", "transformer++", "--steps", "1000000",
                     "--batch-size", "2", "--seq-len", "16", "--eval-every", "1000000", "--checkpoint-every", "1000000", "--out", run })
            info.ArgumentList.Add(a);
        info.Environment.Remove("DOTNET_JITMinOpts");
        var titans = Process.Start(info)!;
        _ = titans.StandardOutput.ReadToEndAsync();
        _ = titans.StandardError.ReadToEndAsync();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(60) && !titans.HasExited && !IsHeld(Path.Combine(run, "run.lock"))) Thread.Sleep(100);
        Assert.True(IsHeld(Path.Combine(run, "run.lock")), "titans never started training");
        return (titans, run);
    }

    static bool IsHeld(string lockFile)
    {
        if (!File.Exists(lockFile)) return false;
        using var probe = FileLock.TryHold(lockFile, FileMode.Open);
        return probe is null;
    }

    /// <summary>Whether this process ignores <paramref name="signal"/> (its bit in /proc/self/status's SigIgn mask).</summary>
    static bool Ignored(int signal) =>
        (Convert.ToUInt64(File.ReadLines("/proc/self/status").First(l => l.StartsWith("SigIgn:"))[7..].Trim(), 16) >> (signal - 1) & 1) == 1;

    static List<int> Children(int process) =>
        File.ReadAllText($"/proc/{process}/task/{process}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();

    [Theory]
    [InlineData(Posix.SignalTerminate)]
    [InlineData(Posix.SignalInterrupt)]
    public void StoppingTitansFreesItsRunAndLeavesNoProcessBehind(int signal)
    {
        if (!OperatingSystem.IsLinux()) return;
        // A shell starts background jobs with SIGINT ignored, and the ignoring is inherited (.NET keeps it): no process
        // started from here could be interrupted, so there is nothing to test.
        if (Ignored(signal)) return;
        var (titans, run) = StartTraining($"signal-{signal}");
        using (titans)
            try
            {
                Assert.Empty(Children(titans.Id));                                   // it trains itself, no worker
                Assert.True(Posix.Signal(titans.Id, signal));
                Assert.True(titans.WaitForExit(TimeSpan.FromSeconds(30)), "titans did not stop");
                Assert.False(IsHeld(Path.Combine(run, "run.lock")), "the run folder is still held");
            }
            finally
            {
                if (!titans.HasExited) titans.Kill(entireProcessTree: true);
            }
    }
}
