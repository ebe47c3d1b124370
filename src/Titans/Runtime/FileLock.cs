namespace Titans.Runtime;

/// <summary>
/// Exclusive locks on files between processes: .NET opens a file with FileShare.None under an flock on Unix, which the
/// kernel releases when the holder closes the file or dies (so a killed process never leaves a lock behind).
/// </summary>
public static class FileLock
{
    /// <summary>.NET's IOException.HResult when flock finds the file locked (EWOULDBLOCK).</summary>
    const int WouldBlock = 11;

    /// <summary>The file, opened and locked; null when another process holds it. Other failures (no such folder, no right) throw.</summary>
    public static FileStream? TryHold(string path, FileMode mode, FileOptions options = FileOptions.None)
    {
        try { return new FileStream(path, mode, FileAccess.ReadWrite, FileShare.None, 1, options); }
        catch (IOException e) when (e.HResult == WouldBlock) { return null; }
    }
}
