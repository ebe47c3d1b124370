using System.Runtime.InteropServices;

namespace Titans.Runtime;

/// <summary>
/// The few POSIX calls .NET does not expose: who owns a file and what kind it is (without following a link), flushing
/// a folder's entries to disk, and signals. Each is a no-op or a plain answer where the system lacks it (Windows;
/// statx is Linux's), so callers never need their own platform checks.
/// </summary>
public static class Posix
{
    const string LibC = "libc";
    const int AtFdCwd = -100, AtSymlinkNoFollow = 0x100;
    const uint StatxType = 0x1, StatxMode = 0x2, StatxUid = 0x8;
    const int ModeTypeMask = 0xF000, RegularFile = 0x8000, DirectoryType = 0x4000, SymbolicLink = 0xA000;

    public const int SignalInterrupt = 2, SignalTerminate = 15;

    [DllImport(LibC, EntryPoint = "statx", SetLastError = true)]
    static extern int Statx(int directory, string path, int flags, uint mask, byte[] buffer);

    [DllImport(LibC, EntryPoint = "geteuid")]
    static extern uint GetEffectiveUserId();

    [DllImport(LibC, EntryPoint = "open", SetLastError = true)]
    static extern int Open(string path, int flags);

    [DllImport(LibC, EntryPoint = "fsync", SetLastError = true)]
    static extern int FileSync(int descriptor);

    [DllImport(LibC, EntryPoint = "close")]
    static extern int Close(int descriptor);

    [DllImport(LibC, EntryPoint = "kill", SetLastError = true)]
    static extern int Kill(int process, int signal);

    /// <summary>What kind of entry a path names, itself (a link is a link, not what it points to).</summary>
    public enum EntryKind { Missing, RegularFile, Directory, SymbolicLink, Other }

    /// <summary>A path's owner, permission bits and kind, read without following a link (Linux); null where unknown.</summary>
    public sealed record Entry(EntryKind Kind, uint Owner, int Permissions);

    /// <summary>The entry at <paramref name="path"/> as <c>statx(AT_SYMLINK_NOFOLLOW)</c> sees it; null where the system cannot say.</summary>
    public static Entry? Inspect(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var buffer = new byte[256];   // struct statx, whose layout is the same on every Linux architecture
        try
        {
            if (Statx(AtFdCwd, path, AtSymlinkNoFollow, StatxType | StatxMode | StatxUid, buffer) != 0)
                return Marshal.GetLastPInvokeError() == 2 ? new Entry(EntryKind.Missing, 0, 0) : null;   // ENOENT
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }   // C library before glibc 2.28
        uint owner = BitConverter.ToUInt32(buffer, 20);
        int mode = BitConverter.ToUInt16(buffer, 28);
        var kind = (mode & ModeTypeMask) switch
        {
            RegularFile => EntryKind.RegularFile,
            DirectoryType => EntryKind.Directory,
            SymbolicLink => EntryKind.SymbolicLink,
            _ => EntryKind.Other,
        };
        return new Entry(kind, owner, mode & 0xFFF);
    }

    /// <summary>This process's effective user id (Unix); null on Windows.</summary>
    public static uint? UserId => OperatingSystem.IsWindows() ? null : GetEffectiveUserId();

    /// <summary>
    /// Flushes a folder's entries (a rename into it, a new file) to disk, so they survive a power cut as the files' own
    /// flush does for their bytes. Best effort: systems and file systems that cannot open a folder this way are skipped.
    /// </summary>
    public static void SyncFolder(string folder)
    {
        if (OperatingSystem.IsWindows()) return;   // NTFS journals renames; a folder cannot be opened for flushing there
        int descriptor = Open(folder, 0);   // O_RDONLY
        if (descriptor < 0) return;
        try
        {
            if (FileSync(descriptor) == 0) Interlocked.Increment(ref foldersSynced);
        }
        finally { Close(descriptor); }
    }

    static long foldersSynced;

    /// <summary>How many folder flushes succeeded in this process (the tests' evidence that saves reach the disk whole).</summary>
    internal static long FoldersSynced => Interlocked.Read(ref foldersSynced);

    /// <summary>Sends <paramref name="signal"/> to a process (Unix); false where it could not be sent.</summary>
    public static bool Signal(int process, int signal) => !OperatingSystem.IsWindows() && Kill(process, signal) == 0;

    /// <summary>
    /// <c>dlopen</c>: in the C library since glibc 2.34, in libdl.so.2 before (and on musl and macOS, in the C library).
    /// Looked up in that order, so this runs on older distributions too.
    /// </summary>
    public static IntPtr OpenLibraryGlobally(string file, int mode) =>
        (DynamicLoader.Value ?? throw new DllNotFoundException("No C library here exports dlopen.")).Invoke(file, mode);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    delegate IntPtr DlOpen([MarshalAs(UnmanagedType.LPUTF8Str)] string file, int mode);

    /// <summary>The libraries dlopen is looked for in, in order.</summary>
    internal static readonly string[] DynamicLoaderLibraries = ["libc.so.6", "libdl.so.2", "libc"];

    static readonly Lazy<DlOpen?> DynamicLoader = new(() =>
        FindExport("dlopen", DynamicLoaderLibraries) is IntPtr address ? Marshal.GetDelegateForFunctionPointer<DlOpen>(address) : null);

    /// <summary>The address of <paramref name="symbol"/> in the first of <paramref name="libraries"/> that loads and exports it; null if none does.</summary>
    internal static IntPtr? FindExport(string symbol, IEnumerable<string> libraries)
    {
        foreach (string library in libraries)
            if (NativeLibrary.TryLoad(library, out IntPtr handle) && NativeLibrary.TryGetExport(handle, symbol, out IntPtr address))
                return address;
        return null;
    }
}
