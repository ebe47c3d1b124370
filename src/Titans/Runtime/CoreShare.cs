using TorchSharp;

namespace Titans.Runtime;

/// <summary>
/// Shares the machine's cores among the titans processes running on it. libtorch's OpenMP threads spin while they wait,
/// which is fastest alone but collapses when two processes each run a thread per core: each process's spinning threads
/// take the cores the other's working threads need (on 2 cores, 21% of solo speed each; docs/concurrency.md). So every
/// process that joins registers itself (a file it holds locked in a per-user folder under the temporary directory), and
/// at each <see cref="Rebalance"/> uses its share of the cores: all of them alone, half each when two run, and so on,
/// never fewer than one thread. A process that dies releases its lock, so it stops counting at once.
/// Process-wide and opt-in: the titans CLI joins at start-up unless given --threads; libraries only call
/// <see cref="Rebalance"/>, which does nothing in a process that has not joined.
/// </summary>
public static class CoreShare
{
    /// <summary>How often the count of processes is read again (a directory listing and a lock attempt per process).</summary>
    static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    static FileStream? registration;
    static string folder = "";
    static int cores;
    static DateTime nextCheck;
    static readonly object Gate = new();

    /// <summary>The thread count this process uses now (0 before <see cref="Join"/>).</summary>
    public static int Threads { get; private set; }

    /// <summary>The titans processes sharing the cores, this one included (0 before <see cref="Join"/>).</summary>
    public static int Processes { get; private set; }

    /// <summary>Registers this process and takes its share of <paramref name="totalThreads"/> (default: every core) now.</summary>
    public static void Join(int? totalThreads = null, string? registryFolder = null)
    {
        lock (Gate)
        {
            if (registration is not null) return;
            cores = totalThreads ?? Environment.ProcessorCount;
            folder = registryFolder ?? Path.Combine(Path.GetTempPath(), $"titans-cores-{Environment.UserName}");
            try
            {
                Directory.CreateDirectory(folder);
                registration = FileLock.TryHold(Path.Combine(folder, $"{Environment.ProcessId}.lock"), FileMode.Create, FileOptions.DeleteOnClose);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                registration = null;   // no shared folder: run as if alone
            }
            nextCheck = DateTime.MinValue;
            generation++;   // every thread applies its share afresh (a fixed --threads may have changed it meanwhile)
            AppDomain.CurrentDomain.ProcessExit += (_, _) => Leave();   // tidy; a killed process's file is removed by the next count
        }
        Rebalance();
    }

    /// <summary>Stops sharing (the thread count given by the user stays fixed) and deregisters.</summary>
    public static void Leave()
    {
        lock (Gate)
        {
            registration?.Dispose();
            registration = null;
            Threads = Processes = 0;
        }
    }

    /// <summary>The share last set on this thread, and in which joining: libtorch's OpenMP thread count is a per-thread setting.</summary>
    [ThreadStatic] static int appliedHere, appliedGeneration;
    static int generation;

    /// <summary>
    /// Re-reads how many titans processes run (at most every 2 s) and sets the calling thread's libtorch thread count to
    /// this process's share. Cheap enough for every training step; a no-op unless the process joined.
    /// </summary>
    public static void Rebalance()
    {
        if (registration is null || (DateTime.UtcNow < nextCheck && appliedHere == Threads && appliedGeneration == generation)) return;
        lock (Gate)
        {
            if (registration is null) return;
            if (DateTime.UtcNow >= nextCheck)
            {
                nextCheck = DateTime.UtcNow + Interval;
                Processes = CountLive(folder, Path.Combine(folder, $"{Environment.ProcessId}.lock"));
                Threads = Math.Max(1, cores / Processes);
            }
            if (appliedHere != Threads || appliedGeneration != generation)
            {
                torch.set_num_threads(Threads);
                (appliedHere, appliedGeneration) = (Threads, generation);
            }
        }
    }

    /// <summary>Registered processes whose lock is held, <paramref name="own"/> included; files of processes that died are removed.</summary>
    internal static int CountLive(string folder, string own)
    {
        int live = 1;
        IEnumerable<string> files;
        try { files = Directory.EnumerateFiles(folder, "*.lock").ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return live; }
        foreach (string file in files)
        {
            if (file == own) continue;
            try
            {
                using var probe = FileLock.TryHold(file, FileMode.Open);
                if (probe is null) live++;
                else File.Delete(file);   // nobody holds it: its process is gone
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return live;
    }
}
