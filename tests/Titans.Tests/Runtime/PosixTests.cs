using Titans.Runtime;

namespace Titans.Tests.Runtime;

public sealed class PosixTests
{
    /// <summary>glibc before 2.34 exports dlopen from libdl.so.2 only: the lookup goes on to the next library where one lacks it.</summary>
    [Fact]
    public void DlopenIsFoundInTheFirstLibraryThatExportsIt()
    {
        if (!OperatingSystem.IsLinux()) return;
        Assert.Equal(["libc.so.6", "libdl.so.2", "libc"], Posix.DynamicLoaderLibraries);
        // The lookup goes past a library that is missing and one that lacks the symbol (the C library has no cosine).
        Assert.Null(Posix.FindExport("cos", ["libtitans-missing.so", "libc.so.6"]));
        Assert.NotNull(Posix.FindExport("cos", ["libtitans-missing.so", "libc.so.6", "libm.so.6"]));
        Assert.NotNull(Posix.FindExport("dlopen", ["libdl.so.2"]));                // where glibc before 2.34 keeps it
        Assert.NotNull(Posix.FindExport("dlopen", Posix.DynamicLoaderLibraries));
        Assert.NotEqual(IntPtr.Zero, Posix.OpenLibraryGlobally("libm.so.6", 2 | 0x100));
    }

    [Fact]
    public void EntriesAreReadWithoutFollowingLinks()
    {
        if (!OperatingSystem.IsLinux()) return;
        string folder = Directory.CreateTempSubdirectory("titans-posix-").FullName;
        try
        {
            string file = Path.Combine(folder, "file"), link = Path.Combine(folder, "link");
            File.WriteAllText(file, "x");
            File.CreateSymbolicLink(link, file);
            Assert.Equal(Posix.EntryKind.RegularFile, Posix.Inspect(file)!.Kind);
            Assert.Equal(Posix.EntryKind.SymbolicLink, Posix.Inspect(link)!.Kind);
            Assert.Equal(Posix.EntryKind.Directory, Posix.Inspect(folder)!.Kind);
            Assert.Equal(Posix.EntryKind.Missing, Posix.Inspect(Path.Combine(folder, "none"))!.Kind);
            Assert.Equal(Posix.UserId, Posix.Inspect(file)!.Owner);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
