using System.Text;
using System.Text.RegularExpressions;

namespace Titans.Runtime;

/// <summary>
/// Files replaced whole. The new content goes to a temporary file beside the target, named
/// <c>TARGET.tmp-XXXXXXXXXXX</c> (eleven random letters and digits, <see cref="IsTemporaryOf"/>), is flushed to disk,
/// renamed over the target, and the folder's entry is flushed too: a crash or a full disk at any point leaves the old
/// file or the new one, never a mix, and the rename survives a power cut. The temporary name is this project's alone,
/// so cleaning up after a killed writer never touches a file of the user's.
/// </summary>
public static partial class AtomicFile
{
    const string Marker = ".tmp-";

    [GeneratedRegex("^[a-z0-9]{11}$")]
    private static partial Regex RandomSuffix();

    static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);

    /// <summary>A fresh temporary name beside <paramref name="path"/>.</summary>
    public static string TemporaryName(string path) => path + Marker + Path.GetRandomFileName().Replace(".", "");

    /// <summary>Whether <paramref name="candidate"/> (a file name or path) is a temporary file of <paramref name="target"/>'s.</summary>
    public static bool IsTemporaryOf(string candidate, string target)
    {
        string name = Path.GetFileName(candidate), of = Path.GetFileName(target) + Marker;
        return name.StartsWith(of, StringComparison.Ordinal) && RandomSuffix().IsMatch(name[of.Length..]);
    }

    /// <summary>Replaces <paramref name="path"/> with what <paramref name="write"/> writes; the folder must exist.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string temporary = TemporaryName(full);
        try
        {
            using (var file = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(file);
                file.Flush(flushToDisk: true);
            }
            File.Move(temporary, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temporary); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            throw;
        }
        Posix.SyncFolder(Path.GetDirectoryName(full)!);
    }

    public static void WriteAllText(string path, string text) => WriteAllBytes(path, Utf8.GetBytes(text));

    public static void WriteAllBytes(string path, byte[] bytes) => Write(path, stream => stream.Write(bytes));
}
