namespace Titans.Runtime;

/// <summary>
/// Sizes checked against this machine's memory before anything is allocated, so a model or batch that cannot fit ends
/// with one line that says how much it needs, not with the operating system killing the process midway.
/// </summary>
public static class MemoryBudget
{
    /// <summary>The memory this process may use: the machine's, or its container's limit where lower.</summary>
    public static long Available => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Throws an <see cref="ArgumentException"/> when <paramref name="bytes"/> exceed <see cref="Available"/>.</summary>
    /// <param name="what">What needs it, as the start of a sentence ("A model of 1.2T parameters").</param>
    public static void Require(long bytes, string what)
    {
        if (bytes > Available)
            throw new ArgumentException($"{what} needs {Gib(bytes)} GiB; this machine (or its container) has {Gib(Available)} GiB.");
    }

    static string Gib(long bytes) => (bytes / (1024.0 * 1024 * 1024)).ToString(bytes < 10L << 30 ? "N1" : "N0");
}
