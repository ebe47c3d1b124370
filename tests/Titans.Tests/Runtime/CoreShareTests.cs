using System.Diagnostics;
using Titans.Runtime;

namespace Titans.Tests.Runtime;

public sealed class CoreShareTests : IDisposable
{
    readonly string folder = Directory.CreateTempSubdirectory("titans-cores-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    [Fact]
    public void CountsTheProcessesThatHoldTheirFileAndRemovesTheFilesOfDeadOnes()
    {
        string own = Path.Combine(folder, "1.lock"), live = Path.Combine(folder, "2.lock"), dead = Path.Combine(folder, "3.lock");
        using var ownLock = new FileStream(own, FileMode.Create, FileAccess.ReadWrite, FileShare.None);
        Assert.Equal(1, CoreShare.CountLive(folder, own));
        File.WriteAllText(dead, "");                                     // a process that died: nobody holds its file
        using (new FileStream(live, FileMode.Create, FileAccess.ReadWrite, FileShare.None))
        {
            Assert.Equal(2, CoreShare.CountLive(folder, own));
            Assert.False(File.Exists(dead));
            Assert.True(File.Exists(live));
        }
        File.Delete(live);
        Assert.Equal(1, CoreShare.CountLive(folder, own));               // the other process finished
    }

    /// <summary>Another user's plants in the registry: a link to a file of ours under a registration's name, files of other names, a pipe.</summary>
    [Fact]
    public async Task TheRegistryOpensAndRemovesOnlyRegistrationsNeverLinksPipesOrOtherFiles()
    {
        if (!OperatingSystem.IsLinux()) return;
        string victim = Path.Combine(folder, "victim.txt");
        File.WriteAllText(victim, "32 bytes of somebody's own file.");
        string registry = Path.Combine(folder, "registry");
        Directory.CreateDirectory(registry);
        string own = Path.Combine(registry, "1.lock");
        using var ownLock = new FileStream(own, FileMode.Create, FileAccess.ReadWrite, FileShare.None);
        File.CreateSymbolicLink(Path.Combine(registry, "77.lock"), victim);
        File.WriteAllText(Path.Combine(registry, "important.lock"), "keep");
        File.WriteAllText(Path.Combine(registry, "12.lock.bak"), "keep");
        Run("mkfifo", Path.Combine(registry, "88.lock"));

        int count = await Task.Run(() => CoreShare.CountLive(registry, own)).WaitAsync(TimeSpan.FromSeconds(10));   // a wait on the pipe times out
        Assert.Equal(1, count);
        Assert.Equal("32 bytes of somebody's own file.", File.ReadAllText(victim));
        foreach (string name in new[] { "77.lock", "important.lock", "12.lock.bak", "88.lock" })
            Assert.True(Posix.Inspect(Path.Combine(registry, name)) is { Kind: not Posix.EntryKind.Missing }, $"{name} was removed");
    }

    [Fact]
    public void RegisteringFollowsNoLinkAndTruncatesNothing()
    {
        if (!OperatingSystem.IsLinux()) return;
        string victim = Path.Combine(folder, "victim.txt");
        File.WriteAllText(victim, "must stay");
        string registry = Path.Combine(folder, "registry");
        Directory.CreateDirectory(registry, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.CreateSymbolicLink(Path.Combine(registry, "4242.lock"), victim);   // planted under the id this process will register with
        using var registration = CoreShare.Register(registry, 4242, out string? problem);
        Assert.Null(problem);
        Assert.NotNull(registration);
        Assert.Equal("must stay", File.ReadAllText(victim));
        Assert.Equal(Posix.EntryKind.RegularFile, Posix.Inspect(Path.Combine(registry, "4242.lock"))!.Kind);
    }

    [Fact]
    public void AFolderOthersMayUseOrALinkIsNotARegistry()
    {
        if (!OperatingSystem.IsLinux()) return;
        string open = Path.Combine(folder, "open");
        Directory.CreateDirectory(open);
        File.SetUnixFileMode(open, (UnixFileMode)0b111_111_111);            // 0777, as anyone could have made it in /tmp
        Assert.Null(CoreShare.Register(open, 1, out string? problem));
        Assert.Contains("is not private (others may use it (mode 777))", problem);
        Assert.Empty(Directory.EnumerateFileSystemEntries(open));

        string mine = Path.Combine(folder, "mine");
        Directory.CreateDirectory(mine, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        string link = Path.Combine(folder, "link");
        Directory.CreateSymbolicLink(link, mine);
        Assert.Null(CoreShare.Register(link, 1, out problem));
        Assert.Contains("is a symbolic link", problem);

        if (Posix.UserId == 0)   // as root (CI): a folder of another user's
        {
            string theirs = Path.Combine(folder, "theirs");
            Directory.CreateDirectory(theirs, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Run("chown", "65534", theirs);
            Assert.Contains("belongs to user 65534", CoreShare.NotPrivate(theirs));
        }
        // The default is private: created so where missing, and this user's.
        Assert.Null(CoreShare.NotPrivate(CoreShare.DefaultFolder()!));
    }

    static void Run(string program, params string[] arguments)
    {
        using var process = Process.Start(program, arguments);
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
    }

    [Fact]
    public void TheTestProcessShares()
    {
        CoreShare.Join();                                                // joined already, at start-up: nothing changes
        CoreShare.Rebalance();
        Assert.True(CoreShare.Processes >= 1);
        Assert.Equal(Math.Max(1, Environment.ProcessorCount / CoreShare.Processes), CoreShare.Threads);
        Assert.Equal(CoreShare.Threads, TorchSharp.torch.get_num_threads());
    }
}
