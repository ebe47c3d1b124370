using System.Diagnostics;

namespace Titans.Cli.Benchmarks;

/// <summary>Wall-clock timing: warm-up runs first, then the median of several timed runs (these machines are noisy).</summary>
public static class Timing
{
    public static double MedianSeconds(Action run, int repeats, int warmup = 1)
    {
        for (int i = 0; i < warmup; i++) run();
        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            run();
            times[i] = watch.Elapsed.TotalSeconds;
        }
        Array.Sort(times);
        return repeats % 2 == 1 ? times[repeats / 2] : 0.5 * (times[repeats / 2 - 1] + times[repeats / 2]);
    }

    public static string Mib(long bytes) => bytes < 0 ? "n/a" : $"{bytes / (1024.0 * 1024):F0} MiB";
}
