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
        return Median(times);
    }

    /// <summary>
    /// Medians of several actions timed in interleaved rounds (one run of each per round, after one warm-up run each), so
    /// that a machine whose speed drifts over minutes biases none of them; a null action gets NaN.
    /// </summary>
    public static double[] InterleavedMedianSeconds(IReadOnlyList<Action?> runs, int repeats)
    {
        foreach (var run in runs) run?.Invoke();
        var times = runs.Select(_ => new List<double>()).ToArray();
        for (int r = 0; r < repeats; r++)
            for (int i = 0; i < runs.Count; i++)
            {
                if (runs[i] is not { } run) continue;
                var watch = Stopwatch.StartNew();
                run();
                times[i].Add(watch.Elapsed.TotalSeconds);
            }
        return times.Select(t => t.Count == 0 ? double.NaN : Median(t)).ToArray();
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        int n = sorted.Count;
        return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    }

    public static string Mib(long bytes) => bytes < 0 ? "n/a" : $"{bytes / (1024.0 * 1024):F0} MiB";
}
