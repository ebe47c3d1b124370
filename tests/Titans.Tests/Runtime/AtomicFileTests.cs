using Titans.Runtime;

namespace Titans.Tests.Runtime;

public sealed class AtomicFileTests : IDisposable
{
    readonly string folder = Directory.CreateTempSubdirectory("titans-atomic-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    [Fact]
    public void AWriteReplacesTheFileWholeOrNotAtAll()
    {
        string path = Path.Combine(folder, "metrics.jsonl");
        AtomicFile.WriteAllText(path, "old");
        long synced = Posix.FoldersSynced;
        Assert.Throws<IOException>(() => AtomicFile.Write(path, stream =>
        {
            stream.Write("half"u8);
            throw new IOException("No space left on device");
        }));
        Assert.Equal("old", File.ReadAllText(path));
        Assert.Equal([path], Directory.GetFiles(folder));                       // the temporary file went with the failure
        AtomicFile.WriteAllText(path, "new");
        Assert.Equal("new", File.ReadAllText(path));
        if (OperatingSystem.IsLinux()) Assert.True(Posix.FoldersSynced > synced, "the folder was not flushed after the rename");
    }

    [Fact]
    public void OnlyItsOwnTemporaryNamesAreItsOwn()
    {
        string target = Path.Combine(folder, "checkpoint.safetensors");
        Assert.True(AtomicFile.IsTemporaryOf(AtomicFile.TemporaryName(target), target));
        foreach (string name in new[] { "checkpoint.safetensors.tmp", "checkpoint.safetensors.tmp-killed", "checkpoint.safetensors.tmp-backup12",
                     "other.safetensors.tmp-abcdefghijk", "checkpoint.safetensors.tmp-ABCDEFGHIJK" })
            Assert.False(AtomicFile.IsTemporaryOf(Path.Combine(folder, name), target), name);
    }
}
