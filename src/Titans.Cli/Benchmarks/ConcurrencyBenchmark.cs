using System.Diagnostics;
using System.Globalization;
using Titans.Cli.Reporting;
using Titans.Models;
using Titans.Runtime;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench concurrency`: how much of its solo speed a titans process keeps when others train beside it on the
/// same cores, under each thread setting and OpenMP wait policy. Every measurement is a separate worker process (the
/// policy is read once, when libtorch loads), training a tiny MAC for a fixed time; the table shows each setting's solo
/// tokens/s, the slowest of N concurrent workers, and their ratio to the default setting's solo speed.
/// </summary>
public static class ConcurrencyBenchmark
{
    /// <summary>Threads per process (0: the titans default, every core shared among titans processes) and GOMP_SPINCOUNT (null: libgomp's default).</summary>
    public sealed record Setting(string Name, int Threads, long? SpinCount);

    const string SpinCountVariable = "GOMP_SPINCOUNT";

    static readonly Setting[] Settings =
    [
        new("titans default: the cores shared among titans processes", 0, null),
        new($"all {Environment.ProcessorCount} cores each (--threads {Environment.ProcessorCount}), libgomp's spinning", Environment.ProcessorCount, null),
        new($"all {Environment.ProcessorCount} cores each, passive waiting (GOMP_SPINCOUNT=0)", Environment.ProcessorCount, 0),
        new("1 thread each (--threads 1)", 1, null),
    ];

    const string ResultPrefix = "tokens_per_second=";

    /// <summary>A worker: trains for <paramref name="seconds"/> after a warm-up and prints its tokens/s.</summary>
    public static void Work(string preset, double seconds)
    {
        var training = new TrainingConfig { Steps = 1_000_000, BatchSize = 8, SequenceLength = 128, WarmupSteps = 10 }.Validate();
        var random = new Random(1);
        var tokens = Enumerable.Range(0, 200_000).Select(_ => (long)random.Next(256)).ToArray();
        manual_seed(1);
        using var model = new TitansLanguageModel("model", Presets.Get(preset, Architecture.Mac));
        using var trainer = new Trainer(model, training, new TokenData(tokens, training.ValidationFraction, training.SequenceLength),
            Commands.CommonOptions.Environment);
        for (int i = 0; i < 3; i++) trainer.TrainStep();
        var watch = Stopwatch.StartNew();
        long trained = 0;
        while (watch.Elapsed.TotalSeconds < seconds) trained += trainer.TrainStep().Tokens;
        Console.WriteLine(FormattableString.Invariant($"{ResultPrefix}{trained / watch.Elapsed.TotalSeconds:F1}"));
    }

    public static void Run(string preset, int processes, double seconds, int rounds, string? output, string command)
    {
        Presets.Get(preset, Architecture.Mac);   // an unknown preset fails here, not in every worker
        CoreShare.Leave();                       // this process only waits for its workers: it must not count as one of them
        if (processes < 2) throw new ArgumentException($"--processes must be at least 2, got {processes}.");
        if (!(seconds > 0)) throw new ArgumentException($"--seconds must be positive, got {seconds}.");
        if (rounds < 1) throw new ArgumentException($"--rounds must be at least 1, got {rounds}.");
        Console.WriteLine($"Each worker trains a {preset} MAC (batch 8 × 128) for {seconds:F0} s after a warm-up; {Environment.ProcessorCount} cores; " +
                          $"{rounds} round(s), settings interleaved, medians.");
        var solo = Settings.Select(_ => new List<double>()).ToArray();
        var together = Settings.Select(_ => new List<double[]>()).ToArray();
        for (int round = 0; round < rounds; round++)
            for (int i = 0; i < Settings.Length; i++)
            {
                solo[i].Add(Workers(Settings[i], preset, 1, seconds)[0]);
                together[i].Add(Workers(Settings[i], preset, processes, seconds));
                Console.WriteLine($"  round {round + 1}  {Settings[i].Name,-56} solo {solo[i][^1],7:N0} tok/s   " +
                                  $"{processes} at once: {string.Join(", ", together[i][^1].Select(t => $"{t:N0}"))} tok/s");
            }
        var rows = Settings.Select((s, i) => (Setting: s, Solo: Timing.Median(solo[i]), Slowest: Timing.Median(together[i].Select(t => t.Min())),
            Mean: Timing.Median(together[i].Select(t => t.Average())))).ToList();
        double reference = rows[0].Solo;
        string[] header = ["setting", "solo tokens/s", $"{processes} at once: mean tokens/s", "slowest", "slowest / titans default's solo"];
        var table = rows.Select(r => (IReadOnlyList<string>)[r.Setting.Name, $"{r.Solo:N0}", $"{r.Mean:N0}", $"{r.Slowest:N0}",
            $"{r.Slowest / reference:P0}"]).ToList();
        Console.WriteLine(string.Join(" | ", header));
        foreach (var row in table) Console.WriteLine(string.Join(" | ", row));
        if (output is not null)
            new MarkdownReport("Concurrent processes", command)
                .Paragraph($"Each worker is a separate `titans` process training a {preset} MAC (batch 8 × 128, fp32) for {seconds:F0} s after a " +
                           $"warm-up; the slowest of {processes} concurrent workers is compared with the default setting's solo speed. Medians of {rounds} " +
                           "rounds, the settings interleaved within each round.")
                .Table(header, table).Save(output);
    }

    /// <summary>Starts <paramref name="count"/> workers at once and returns each one's tokens/s.</summary>
    static double[] Workers(Setting setting, string preset, int count, double seconds)
    {
        var started = Enumerable.Range(0, count).Select(_ => Start(setting, preset, seconds)).ToList();
        return started.Select(process =>
        {
            var (code, stdout, stderr) = ThisProgram.Finish(process);
            string? line = stdout.Split('\n').FirstOrDefault(l => l.StartsWith(ResultPrefix));
            if (code != 0 || line is null)
                throw new InvalidOperationException($"A benchmark worker failed (exit {code}): {stderr.Trim()}{stdout.Trim()}");
            return double.Parse(line[ResultPrefix.Length..], CultureInfo.InvariantCulture);
        }).ToArray();
    }

    static Process Start(Setting setting, string preset, double seconds)
    {
        var info = ThisProgram.StartInfo(["bench", "concurrency", "--worker", "--preset", preset, "--seconds", seconds.ToString(CultureInfo.InvariantCulture)],
            redirect: true);
        if (setting.Threads > 0) info.ArgumentList.Add($"--threads={setting.Threads}");
        info.Environment.Remove(SpinCountVariable);
        info.Environment.Remove("OMP_WAIT_POLICY");
        if (setting.SpinCount is long spins) info.Environment[SpinCountVariable] = spins.ToString(CultureInfo.InvariantCulture);
        return Process.Start(info) ?? throw new InvalidOperationException("Could not start a benchmark worker.");
    }
}
