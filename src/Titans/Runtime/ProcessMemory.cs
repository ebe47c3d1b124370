namespace Titans.Runtime;

/// <summary>Resident memory of this process from /proc (Linux): current, peak, and a way to reset the peak.</summary>
public static class ProcessMemory
{
    /// <summary>Current resident set size in bytes (VmRSS), or -1 where /proc is not available.</summary>
    public static long CurrentRss() => ReadStatus("VmRSS:");

    /// <summary>Peak resident set size in bytes since start or the last <see cref="ResetPeak"/> (VmHWM).</summary>
    public static long PeakRss() => ReadStatus("VmHWM:");

    /// <summary>Resets VmHWM to the current RSS (writing 5 to /proc/self/clear_refs); false where not permitted.</summary>
    public static bool ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    static long ReadStatus(string key)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(key, StringComparison.Ordinal))
                    return long.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
        }
        catch (IOException) { }
        return -1;
    }
}
