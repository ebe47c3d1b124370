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
