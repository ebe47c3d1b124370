using Titans.Runtime;

namespace Titans.Cli.Training;

/// <summary>
/// A run folder held by one writer: an exclusive lock on <c>RUN/run.lock</c> for as long as a run writes into it, so a
/// second process (another `train --out` into it, a `--resume` of the same run) stops with a clear error instead of
/// interleaving checkpoints and metrics. Holding it, the writer also removes the temporary files a killed writer left
/// (a half-written <c>checkpoint.safetensors.tmp-*</c> can be as large as the checkpoint).
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string LockFile = "run.lock";

    readonly FileStream handle;

    RunFolder(FileStream handle) => this.handle = handle;

    public static RunFolder Acquire(string directory)
    {
        if (File.Exists(directory)) throw new ArgumentException($"The run folder '{directory}' is a file; give --out a folder.");
        FileStream? handle;
        try
        {
            Directory.CreateDirectory(directory);
            handle = FileLock.TryHold(Path.Combine(directory, LockFile), FileMode.OpenOrCreate);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"Cannot write into the run folder '{directory}': {e.Message}");
        }
        if (handle is null)
            throw new ArgumentException($"Another process is writing into the run folder '{directory}' (it holds {LockFile}); " +
                                        "wait for it to finish, or give another --out.");
        RemoveLeftovers(directory);
        return new RunFolder(handle);
    }

    /// <summary>Temporary files of an atomic write (<c>NAME.tmp-*</c>, <c>NAME.tmp</c>) that a killed writer never renamed.</summary>
    static void RemoveLeftovers(string directory)
    {
        var leftovers = Directory.EnumerateFiles(directory, "*.tmp-*").Concat(Directory.EnumerateFiles(directory, "*.tmp")).ToList();
        if (leftovers.Count == 0) return;
        long bytes = leftovers.Sum(f => new FileInfo(f).Length);
        foreach (string file in leftovers) File.Delete(file);
        Console.WriteLine($"Removed {leftovers.Count} temporary file(s) of {bytes / (1024.0 * 1024):N1} MiB that an interrupted run left in {directory}.");
    }

    public void Dispose() => handle.Dispose();
}
