using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Titans.Cli.Reporting;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// `titans bench data-parallel`: training tokens/s of one process and of N processes under mpirun, one thread each so
/// the comparison is fair, with the all-reduce's time and bytes per step as rank 0 reports them, and whether both
/// ended at the same loss. Each measurement is a `train` run of this program (a tiny MAC, N micro-batches per step),
/// repeated and interleaved; the table reports every run and the median.
/// </summary>
public static partial class DataParallelBenchmark
{
    public static void Run(int processes, int steps, int repeats, string? output, string command)
    {
        if (processes < 2) throw new ArgumentException($"--processes must be at least 2, got {processes}.");
        if (steps < 2) throw new ArgumentException($"--steps must be at least 2, got {steps}.");
        if (repeats < 1) throw new ArgumentException($"--repeats must be at least 1, got {repeats}.");
        string work = Directory.CreateTempSubdirectory("titans-bench-dp-").FullName;
        try
        {
            var one = new List<Result>();
            var many = new List<Result>();
            for (int r = 0; r < repeats; r++)
            {
                one.Add(Train(1, steps, processes, Path.Combine(work, $"one-{r}")));
                many.Add(Train(processes, steps, processes, Path.Combine(work, $"many-{r}")));
                Console.WriteLine($"  repeat {r + 1}: 1 process {one[^1].TokensPerSecond:N0} tok/s, {processes} processes {many[^1].TokensPerSecond:N0} tok/s, " +
                                  $"all-reduce {many[^1].ReduceMilliseconds:F2} ms and {many[^1].ReduceKib:N1} KiB per step");
            }
            double solo = Timing.Median(one.Select(o => o.TokensPerSecond)), together = Timing.Median(many.Select(m => m.TokensPerSecond));
            string[] header = ["processes", "tokens/s (each run)", "median", "speed-up", "all-reduce per step", "bytes per step", "share of time", "final loss"];
            var rows = new List<IReadOnlyList<string>>
            {
                new[] { "1", string.Join(", ", one.Select(o => $"{o.TokensPerSecond:N0}")), $"{solo:N0}", "1.00×", "–", "–", "–", one[0].Loss },
                new[] { $"{processes}", string.Join(", ", many.Select(m => $"{m.TokensPerSecond:N0}")), $"{together:N0}", $"{together / solo:F2}×",
                        $"{Timing.Median(many.Select(m => m.ReduceMilliseconds)):F2} ms", $"{many[0].ReduceKib:N1} KiB",
                        $"{Timing.Median(many.Select(m => m.ReduceShare)):F1}%", many[0].Loss },
            };
            Console.WriteLine(string.Join(" | ", header));
            foreach (var row in rows) Console.WriteLine(string.Join(" | ", row));
            bool same = one.Concat(many).Select(x => x.Loss).Distinct().Count() == 1;
            Console.WriteLine(same ? "Every run ended at the same loss." : "The runs ended at different losses.");
            if (output is not null)
                new MarkdownReport("Data-parallel training", command)
                    .Paragraph($"Each run is `titans train -a mac --steps {steps} --batch-size 8 --accumulate {processes} --seq-len 128 --threads 1`: " +
                               $"one process, and {processes} under mpirun (one micro-batch per rank per step), {repeats} times each, interleaved. " +
                               "The all-reduce's time and bytes are rank 0's report (each rank sends and receives about the bytes shown). " +
                               (same ? "Every run ended at the same loss." : "The runs ended at different losses."))
                    .Table(header, rows).Save(output);
        }
        finally { Directory.Delete(work, recursive: true); }
    }

    sealed record Result(double TokensPerSecond, double ReduceMilliseconds, double ReduceKib, double ReduceShare, string Loss);

    static Result Train(int processes, int steps, int microBatches, string run)
    {
        string[] train = ["train", "-a", "mac", "--steps", steps.ToString(), "--batch-size", "8", "--accumulate", microBatches.ToString(), "--seq-len", "128",
            "--threads", "1", "--log-every", steps.ToString(), "--eval-every", "1000000", "--checkpoint-every", "1000000", "--out", run];
        ProcessStartInfo info;
        if (processes == 1) info = ThisProgram.StartInfo(train, redirect: true);
        else
        {
            var (file, prefix) = ThisProgram.Command() ?? throw new InvalidOperationException("The program's path is unknown.");
            info = new ProcessStartInfo("mpirun") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            var mpi = new List<string> { "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none", "-np", processes.ToString() };
            if (Environment.UserName == "root") mpi.Insert(0, "--allow-run-as-root");
            foreach (string a in mpi.Append(file).Concat(prefix).Concat(train)) info.ArgumentList.Add(a);
        }
        var (code, stdout, stderr) = ThisProgram.Finish(Process.Start(info) ?? throw new InvalidOperationException("Could not start a benchmark run."));
        var last = StepLine().Match(stdout);
        if (code != 0 || !last.Success)
            throw new InvalidOperationException($"A benchmark run failed (exit {code}): {stderr.Trim()} {stdout.Trim()}");
        var reduce = ReduceLine().Match(stdout);
        double Number(Group g) => double.Parse(g.Value.Replace(",", ""), CultureInfo.InvariantCulture);
        return new Result(Number(last.Groups["rate"]), reduce.Success ? Number(reduce.Groups["ms"]) : double.NaN,
            reduce.Success ? Number(reduce.Groups["kib"]) : double.NaN, reduce.Success ? Number(reduce.Groups["share"]) : double.NaN, last.Groups["loss"].Value);
    }

    [GeneratedRegex(@"step\s+(\d+)/\1\s+loss (?<loss>[\d.]+).*?(?<rate>[\d,]+) tok/s")]
    private static partial Regex StepLine();

    [GeneratedRegex(@"all-reduce (?<ms>[\d.]+) ms and (?<kib>[\d,.]+) KiB per step.*?(?<share>[\d.]+)% of the time")]
    private static partial Regex ReduceLine();
}
