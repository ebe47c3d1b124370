using TorchSharp;

namespace Titans.Runtime;

/// <summary>
/// Shares the machine's cores among the titans processes running on it. libtorch's OpenMP threads spin while they wait,
/// which is fastest alone but collapses when two processes each run a thread per core: each process's spinning threads
/// take the cores the other's working threads need (on 2 cores, 21% of solo speed each; docs/concurrency.md). So every
/// process that joins registers itself (a file <c>PID.lock</c> it holds locked in a private per-user folder,
/// <see cref="DefaultFolder"/>), and at each <see cref="Rebalance"/> uses its share of the cores: all of them alone,
/// half each when two run, and so on, never fewer than one thread. A process that dies releases its lock, so it stops
/// counting at once. The folder must be this user's alone (checked: its owner, no access for others, not a link);
/// where it is not, the process says so and runs as if alone. Inside it only regular files named <c>PID.lock</c> are
/// ever opened or removed.
/// Process-wide and opt-in: the titans CLI joins at start-up unless given --threads; libraries only call
/// <see cref="Rebalance"/>, which does nothing in a process that has not joined.
/// </summary>
public static partial class CoreShare
{
    /// <summary>How often the count of processes is read again (a directory listing and a lock attempt per process).</summary>
    static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    static FileStream? registration;
    static string folder = "";
    static int cores;
    static DateTime nextCheck;
    static readonly object Gate = new();

    [System.Text.RegularExpressions.GeneratedRegex(@"^\d+\.lock$")]
    private static partial System.Text.RegularExpressions.Regex RegistrationName();

    /// <summary>The thread count this process uses now (0 before <see cref="Join"/>).</summary>
    public static int Threads { get; private set; }

    /// <summary>The titans processes sharing the cores, this one included (0 before <see cref="Join"/>).</summary>
    public static int Processes { get; private set; }

    /// <summary>
    /// The registry folder: <c>$XDG_RUNTIME_DIR/titans-cores</c> where the session has a private runtime folder, else
    /// <c>titans-cores-UID</c> in the temporary folder (created private), or, where owners cannot be read (Windows,
    /// macOS), a folder in the user's own application data.
    /// </summary>
    public static string? DefaultFolder()
    {
        if (Posix.UserId is uint user && Posix.Inspect(Path.GetTempPath()) is not null)
        {
            string? runtime = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
            if (!string.IsNullOrEmpty(runtime) && Path.IsPathRooted(runtime) && NotPrivate(runtime) is null) return Path.Combine(runtime, "titans-cores");
            return Path.Combine(Path.GetTempPath(), $"titans-cores-{user}");
        }
        string data = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create);
        return data.Length > 0 ? Path.Combine(data, "titans", "cores") : null;   // no home: nowhere private to share through
    }

    /// <summary>Why <paramref name="path"/> is not a folder of this user's alone, or null when it is (or where owners cannot be read).</summary>
    public static string? NotPrivate(string path)
    {
        if (Posix.Inspect(path) is not { } entry || Posix.UserId is not uint user) return null;
        return entry switch
        {
            { Kind: Posix.EntryKind.Missing } => "it does not exist",
            { Kind: Posix.EntryKind.SymbolicLink } => "it is a symbolic link",
            { Kind: not Posix.EntryKind.Directory } => "it is not a folder",
            _ when entry.Owner != user => $"it belongs to user {entry.Owner}, not to this user ({user})",
            _ when (entry.Permissions & 0b111_111) != 0 => $"others may use it (mode {Convert.ToString(entry.Permissions, 8)})",
            _ => null,
        };
    }

    /// <summary>Registers this process and takes its share of <paramref name="totalThreads"/> (default: every core) now.</summary>
    public static void Join(int? totalThreads = null, string? registryFolder = null)
    {
        lock (Gate)
        {
            if (registration is not null) return;
            cores = totalThreads ?? Environment.ProcessorCount;
            folder = registryFolder ?? DefaultFolder() ?? "";
            string? problem = null;
            registration = folder.Length == 0 ? null : Register(folder, Environment.ProcessId, out problem);
            if (problem is not null) Console.Error.WriteLine($"warning: titans runs as if alone on this machine's cores: {problem}");
            nextCheck = DateTime.MinValue;
            generation++;   // every thread applies its share afresh (a fixed --threads may have changed it meanwhile)
            AppDomain.CurrentDomain.ProcessExit += (_, _) => Leave();   // tidy; a killed process's file is removed by the next count
        }
        Rebalance();
    }

    /// <summary>
    /// This process's registration in <paramref name="registry"/> (created private where missing): <c>PID.lock</c>, new
    /// (a file a dead process of the same id left is replaced; nothing is followed or truncated) and held locked. Null,
    /// with the reason in <paramref name="problem"/> where it is worth telling, when the folder is not private or cannot be used.
    /// </summary>
    internal static FileStream? Register(string registry, int process, out string? problem)
    {
        problem = null;
        try
        {
            if (OperatingSystem.IsWindows()) Directory.CreateDirectory(registry);
            else Directory.CreateDirectory(registry, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            if (NotPrivate(registry) is string why)
            {
                problem = $"the core-sharing folder '{registry}' is not private ({why})";
                return null;
            }
            // Locked under a name no count opens, then renamed into place: a count between the creation and the lock would
            // take the file for a dead process's and remove it, and this process would never be counted.
            string own = Path.Combine(registry, $"{process}.lock"), fresh = own + ".new";
            foreach (string stale in new[] { own, fresh })   // a dead process of the same id left it; unlinks a link, never its target
                if (File.Exists(stale) || Posix.Inspect(stale) is { Kind: not Posix.EntryKind.Missing }) File.Delete(stale);
            var held = FileLock.TryHold(fresh, FileMode.CreateNew);
            if (held is null) return null;
            File.Move(fresh, own, overwrite: true);   // the open, locked file keeps its lock under its new name
            return held;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;   // no usable folder: run as if alone
        }
    }

    /// <summary>Stops sharing (the thread count given by the user stays fixed) and deregisters.</summary>
    public static void Leave()
    {
        lock (Gate)
        {
            if (registration is not null)
            {
                try { File.Delete(Path.Combine(folder, $"{Environment.ProcessId}.lock")); }   // still held: no one else removes it meanwhile
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
                registration.Dispose();
            }
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

    /// <summary>
    /// Registered processes whose lock is held, <paramref name="own"/> included; the files of processes that died are
    /// removed. Only regular files named <c>PID.lock</c> count: anything else in the folder is left alone, unopened.
    /// </summary>
    internal static int CountLive(string folder, string own)
    {
        int live = 1;
        IEnumerable<string> files;
        try { files = Directory.EnumerateFiles(folder).Where(f => RegistrationName().IsMatch(Path.GetFileName(f))).ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return live; }
        foreach (string file in files)
        {
            if (file == own || !IsRegularFile(file)) continue;
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

    /// <summary>A plain file, not a link, a pipe or a device (opening a pipe would wait for a writer).</summary>
    static bool IsRegularFile(string path) => Posix.Inspect(path) is { } entry
        ? entry.Kind == Posix.EntryKind.RegularFile
        : new FileInfo(path) is { LinkTarget: null } info && (info.Attributes & (FileAttributes.Device | FileAttributes.ReparsePoint)) == 0;
}
