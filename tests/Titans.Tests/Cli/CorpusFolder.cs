namespace Titans.Tests.Cli;

/// <summary>
/// A test class's own temporary folder, holding a small text corpus (<see cref="TitansCli.WriteCorpus"/>) for the runs
/// its tests start there; removed with everything in it after the tests.
/// </summary>
public abstract class CorpusFolder : IDisposable
{
    protected readonly string folder, corpus;

    /// <param name="prefix">The temporary folder's name begins with it (which tests left it, should a run be killed).</param>
    protected CorpusFolder(string prefix)
    {
        folder = Directory.CreateTempSubdirectory(prefix).FullName;
        corpus = TitansCli.WriteCorpus(folder);
    }

    public void Dispose() => Directory.Delete(folder, recursive: true);
}
