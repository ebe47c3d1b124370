using System.Diagnostics;
using Titans.Runtime;

namespace Titans.Tests.Cli;

/// <summary>
/// Started without DOTNET_JITMinOpts (as a .NET tool is, or `dotnet Titans.Cli.dll`), titans runs itself again as a
/// worker with it. Stopping the titans process must stop the worker and free its run folder; it used to leave the worker
/// training on, re-parented to PID 1, holding run.lock.
/// </summary>
public sealed class SignalTests() : CorpusFolder("titans-signals-")
{
    /// <summary>The launcher and its worker, once the worker trains (its run folder's lock is held).</summary>
    (Process Launcher, int Worker, string Run) StartTraining(string name)
    {
        string run = Path.Combine(folder, name);
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { Path.Combine(AppContext.BaseDirectory, "Titans.Cli.dll"), "train", "--data", corpus, "-a", "transformer++", "--steps", "1000000",
                     "--batch-size", "2", "--seq-len", "16", "--eval-every", "1000000", "--checkpoint-every", "1000000", "--out", run })
            info.ArgumentList.Add(a);
        info.Environment.Remove("DOTNET_JITMinOpts");   // as a user starts it: the launcher re-runs itself
        var launcher = Process.Start(info)!;
        _ = launcher.StandardOutput.ReadToEndAsync();
        _ = launcher.StandardError.ReadToEndAsync();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(60) && !launcher.HasExited && !IsHeld(Path.Combine(run, "run.lock"))) Thread.Sleep(100);
        Assert.True(IsHeld(Path.Combine(run, "run.lock")), "the worker never started training");
        int worker = Children(launcher.Id).Single();
        return (launcher, worker, run);
    }

    static bool IsHeld(string lockFile)
    {
        if (!File.Exists(lockFile)) return false;
        using var probe = FileLock.TryHold(lockFile, FileMode.Open);
        return probe is null;
    }

    static List<int> Children(int process) =>
        File.ReadAllText($"/proc/{process}/task/{process}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();

    static bool Alive(int process) => File.Exists($"/proc/{process}/stat") && !File.ReadAllText($"/proc/{process}/stat").Split(") ")[1].StartsWith('Z');

    static void AssertGoneWithin(int process, TimeSpan limit)
    {
        var watch = Stopwatch.StartNew();
        while (Alive(process) && watch.Elapsed < limit) Thread.Sleep(100);
        Assert.False(Alive(process), $"process {process} still runs {limit.TotalSeconds} s after");
    }

    [Theory]
    [InlineData(Posix.SignalTerminate)]
    [InlineData(Posix.SignalInterrupt)]
    public void StoppingTheLauncherStopsItsWorkerAndFreesTheRun(int signal)
    {
        if (!OperatingSystem.IsLinux()) return;
        var (launcher, worker, run) = StartTraining($"signal-{signal}");
        try
        {
            Assert.True(Posix.Signal(launcher.Id, signal));
            Assert.True(launcher.WaitForExit(TimeSpan.FromSeconds(30)), "the launcher did not stop");
            AssertGoneWithin(worker, TimeSpan.FromSeconds(10));
            Assert.False(IsHeld(Path.Combine(run, "run.lock")), "the run folder is still held");
        }
        finally { Stop(launcher, worker); }
    }

    [Fact]
    public void ALauncherKilledOutrightTakesItsWorkerWithIt()
    {
        if (!OperatingSystem.IsLinux()) return;
        var (launcher, worker, _) = StartTraining("killed");
        try
        {
            launcher.Kill();   // SIGKILL: nothing to pass on; the kernel's parent-death signal stops the worker
            AssertGoneWithin(worker, TimeSpan.FromSeconds(30));
        }
        finally { Stop(launcher, worker); }
    }

    /// <summary>Whatever the test found, nothing it started runs on after it.</summary>
    static void Stop(Process launcher, int worker)
    {
        using (launcher)
            if (!launcher.HasExited) launcher.Kill(entireProcessTree: true);
        if (Alive(worker)) Process.GetProcessById(worker).Kill();
    }
}
