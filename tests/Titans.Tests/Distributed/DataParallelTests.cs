using System.Diagnostics;
using Titans.Tests.Cli;

namespace Titans.Tests.Distributed;

/// <summary>
/// Data-parallel training under `mpirun -np 2` on this machine (Open MPI; ./test installs it where it is missing):
/// two ranks train the weights one process trains, bit for bit, resume across rank counts, and fail together.
/// </summary>
public sealed class DataParallelTests() : CorpusFolder("titans-mpi-")
{
    /// <summary>Two micro-batches per step (one per rank), and a warmup longer than the run, so the schedule does not depend on --steps.</summary>
    string[] Train(string run, int steps, string architecture = "lmm") =>
    [
        "train", "--data", corpus, "-a", architecture, "--steps", steps.ToString(), "--batch-size", "2", "--accumulate", "2", "--seq-len", "32",
        "--warmup", "50", "--eval-every", "100", "--eval-tokens", "256", "--checkpoint-every", "1", "--out", run,
    ];

    static string Cli => Path.Combine(AppContext.BaseDirectory, "Titans.Cli.dll");

    /// <summary>
    /// As root, on one machine with 2 cores; shared memory without the single-copy (CMA) path, which containers without
    /// ptrace rights refuse ("Read -1, expected …, errno = 1").
    /// </summary>
    static readonly string[] CommonMpirunOptions =
        ["--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"];

    /// <summary>Runs `mpirun -np 2 titans ARGS` (the CLI built beside the tests), with a time limit.</summary>
    static (int Code, string Output, string Error) MpiRun(IEnumerable<string> args) => Mpirun(["-np", "2", "dotnet", Cli, .. args]);

    /// <summary>Runs mpirun with <paramref name="arguments"/> after the options every test uses, with a time limit.</summary>
    static (int Code, string Output, string Error) Mpirun(IEnumerable<string> arguments)
    {
        var info = new ProcessStartInfo("mpirun") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in CommonMpirunOptions.Concat(arguments)) info.ArgumentList.Add(a);
        Process process;
        try { process = Process.Start(info)!; }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("mpirun is not installed; ./test installs Open MPI (apt-get install openmpi-bin libopenmpi-dev).", e);
        }
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"mpirun {string.Join(' ', arguments)} did not finish in 3 minutes.");
        }
        return (process.ExitCode, output.Result, error.Result);
    }

    /// <summary>The same command in one process (in process) and under `mpirun -np 2`, each into its own run folder; both must succeed.</summary>
    (string One, string Two) OneProcessAndTwoRanks(string name, Func<string, string[]> arguments)
    {
        string one = Path.Combine(folder, $"{name}-one"), two = Path.Combine(folder, $"{name}-two");
        var single = TitansCli.Run(arguments(one));
        Assert.True(single.Code == 0, single.Error + single.Output);
        var parallel = MpiRun(arguments(two));
        Assert.True(parallel.Code == 0, parallel.Error + parallel.Output);
        return (one, two);
    }

    static byte[] Checkpoint(string run) => File.ReadAllBytes(Path.Combine(run, "checkpoint.safetensors"));

    [Fact]
    public void TwoRanksTrainTheWeightsOfOneProcessAndResumeAcrossRankCounts()
    {
        var (one, two) = OneProcessAndTwoRanks("train", run => Train(run, 4));
        Assert.Single(File.ReadLines(Path.Combine(two, "metrics.jsonl")), l => l.Contains("\"step\":4,\"loss\""));   // rank 0 alone writes
        Assert.Equal(Checkpoint(one), Checkpoint(two));                                 // bit for bit: a + b = b + a

        // Two ranks to step 2, one process on to 4; one process to 2, two ranks on to 4: the weights of the straight run.
        string twoThenOne = Path.Combine(folder, "two-then-one"), oneThenTwo = Path.Combine(folder, "one-then-two");
        Assert.Equal(0, MpiRun(Train(twoThenOne, 2)).Code);
        var resumedAlone = TitansCli.Run("train", "--resume", twoThenOne, "--steps", "4");
        Assert.True(resumedAlone.Code == 0, resumedAlone.Error + resumedAlone.Output);
        Assert.Equal(0, TitansCli.Run(Train(oneThenTwo, 2)).Code);
        var resumedTogether = MpiRun(["train", "--resume", oneThenTwo, "--steps", "4"]);
        Assert.True(resumedTogether.Code == 0, resumedTogether.Error + resumedTogether.Output);
        Assert.Equal(Checkpoint(one), Checkpoint(twoThenOne));
        Assert.Equal(Checkpoint(one), Checkpoint(oneThenTwo));
    }

    [Fact]
    public void ATaskRunTrainsAlikeOnTwoRanks()
    {
        string[] Task(string run) =>
        [
            "task", "train", "-t", "passkey", "-a", "mac", "--length", "128", "--steps", "2", "--batch-size", "2", "--accumulate", "2",
            "--eval-every", "100", "--eval-examples", "4", "--out", run,
        ];
        var (one, two) = OneProcessAndTwoRanks("task", Task);
        Assert.Equal(Checkpoint(one), Checkpoint(two));
    }

    [Fact]
    public void AForecasterTrainsAlikeOnTwoRanks()
    {
        string csv = Path.Combine(folder, "series.csv");
        File.WriteAllLines(csv, new[] { "x,y" }.Concat(Enumerable.Range(0, 300).Select(r =>
            FormattableString.Invariant($"{Math.Sin(r / 4.0) + 0.1 * Math.Cos(r * 1.3)},{Math.Cos(r / 6.0)}"))));
        string[] Forecast(string run) =>
        [
            "forecast", "train", "--data", csv, "--lookback", "16", "--horizons", "4", "--models", "dlinear", "--steps", "20", "--accumulate", "2",
            "--eval-every", "10", "--patience", "2", "--out", run,
        ];
        var (one, two) = OneProcessAndTwoRanks("forecast", Forecast);
        string Weights(string run) => Path.Combine(run, "dlinear-h4", "forecaster.safetensors");
        Assert.Equal(File.ReadAllBytes(Weights(one)), File.ReadAllBytes(Weights(two)));
        string Row(string run) => File.ReadLines(Path.Combine(run, "results.md")).Single(l => l.StartsWith("| DLinear"));
        Assert.Equal(Row(one), Row(two));   // the same test scores, written by rank 0 alone
    }

    [Fact]
    public void TheBenchmarkComparesOneProcessWithTwoAndWritesItsTable()
    {
        string table = Path.Combine(folder, "bench.md");
        var bench = TitansCli.Run("bench", "data-parallel", "--steps", "2", "--repeats", "1", "--out", table);
        Assert.True(bench.Code == 0, bench.Error + bench.Output);
        Assert.Contains("Every run ended at the same loss.", bench.Output);
        Assert.Matches(@"\| 2 \| [\d,]+ \| [\d,]+ \| [\d.]+× \| [\d.]+ ms \| 525\.0 KiB \|", File.ReadAllText(table));
    }

    [Fact]
    public void ARankKilledMidRunEndsTheOthersAndLeavesTheLastCheckpointWhole()
    {
        string run = Path.Combine(folder, "killed"), checkpoint = Path.Combine(run, "checkpoint.safetensors");
        string cli = Cli;
        var info = new ProcessStartInfo("mpirun") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in CommonMpirunOptions.Concat(["-np", "2", "dotnet", cli]).Concat(Train(run, 100_000)))
            info.ArgumentList.Add(a);
        using var job = Process.Start(info)!;
        var drain = Task.WhenAll(job.StandardOutput.ReadToEndAsync(), job.StandardError.ReadToEndAsync());
        var watch = Stopwatch.StartNew();
        while (!File.Exists(checkpoint) && watch.Elapsed < TimeSpan.FromMinutes(2) && !job.HasExited) Thread.Sleep(200);
        Assert.True(File.Exists(checkpoint), "the job saved no checkpoint");
        // The ranks are the processes running the CLI on this run folder (not mpirun itself); kill one of them.
        var ranks = Directory.EnumerateDirectories("/proc").Select(d => Path.GetFileName(d)).Where(n => n.All(char.IsDigit))
            .Select(int.Parse).Where(pid =>
            {
                try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ') is var line && line.Contains(cli) && line.Contains(run) && !line.StartsWith("mpirun"); }
                catch (IOException) { return false; }
            }).Order().ToList();
        Assert.Equal(2, ranks.Count);
        Process.GetProcessById(ranks[^1]).Kill();   // SIGKILL
        watch.Restart();
        Assert.True(job.WaitForExit(TimeSpan.FromSeconds(60)), "the other rank did not stop within 60 s of the kill");
        Assert.NotEqual(0, job.ExitCode);
        drain.Wait(TimeSpan.FromSeconds(10));
        var eval = TitansCli.Run("eval", "-c", run, "--data", corpus);   // the last checkpoint is whole
        Assert.True(eval.Code == 0, eval.Error);
    }

    [Fact]
    public void BadInputOnOneRankEndsTheJobWithItsMessage()
    {
        string run = Path.Combine(folder, "one-bad");
        string[] good = Train(run, 50), bad = [.. Train(run, 50).Select(a => a == corpus ? Path.Combine(folder, "missing.txt") : a)];
        var result = Mpirun(new[] { "-np", "1", "dotnet", Cli }.Concat(good).Append(":").Concat(["-np", "1", "dotnet", Cli]).Concat(bad));
        Assert.Equal(2, result.Code);
        Assert.Contains("error (rank 1 of 2): No corpus file or folder at", result.Error);
    }

    /// <summary>
    /// Ranks given different thread counts sum the same numbers in different orders, so their own gradient norms can
    /// differ in the last bits; the clip is rank 0's, and the trainer compares the replicas' weights (hashes) and stops,
    /// naming the rank, where they differ.
    /// </summary>
    [Fact]
    public void RanksWithDifferentThreadCountsStayReplicas()
    {
        string run = Path.Combine(folder, "threads");
        string[] arguments = [.. Train(run, 4), "--set", "ModelDim=128", "--clip", "0.5"];   // wide enough that libtorch splits the norm's sums
        // Unbound, so each rank may use both cores (bound, Open MPI gives each rank one core, and --threads 2 is refused there).
        var train = Mpirun(["--bind-to", "none", "-np", "1", "dotnet", Cli, .. arguments, "--threads", "1", ":", "-np", "1", "dotnet", Cli, .. arguments, "--threads", "2"]);
        Assert.True(train.Code == 0, train.Error + train.Output);
        Assert.DoesNotContain("diverged", train.Error);

        // Replicas that do drift apart (here rank 1 clips at another norm) are caught at the check, named, and the job stops.
        string drift = Path.Combine(folder, "drift");
        string[] other = [.. Train(drift, 4), "--set", "ModelDim=128"];
        var drifted = Mpirun(["-np", "1", "dotnet", Cli, .. other, "--clip", "0.5", ":", "-np", "1", "dotnet", Cli, .. other, "--clip", "0.25"]);
        Assert.Equal(2, drifted.Code);
        Assert.Single(drifted.Error.Split('\n'), l => l.Contains("after step 4 the weights of rank 1 differ from rank 0's: the ranks diverged"));
    }

    /// <summary>
    /// Early stopping decides from a validation score each rank computes; where they differ (here, deliberately: rank 1
    /// reads other validation rows, as a stand-in for any rank-local difference), each rank used to stop on its own
    /// score, and the job hung or summed the gradients of different models. Rank 0's score decides for all: the job ends,
    /// and rank 0's forecaster is the one a single process trains on its data.
    /// </summary>
    [Fact]
    public void EarlyStoppingFollowsRankZero()
    {
        string Csv(string name, double validationShift)
        {
            string csv = Path.Combine(folder, name);
            File.WriteAllLines(csv, new[] { "x,y" }.Concat(Enumerable.Range(0, 400).Select(r => FormattableString.Invariant(
                $"{Math.Sin(r / 4.0) + 0.1 * Math.Cos(r * 1.3) + (r is >= 280 and < 320 ? validationShift * Math.Sin(r * 0.7) : 0)},{Math.Cos(r / 6.0)}"))));
            return csv;
        }
        string mine = Csv("rank0.csv", 0), other = Csv("rank1.csv", 3);
        string[] Forecast(string csv, string run) =>
        [
            "forecast", "train", "--data", csv, "--lookback", "16", "--horizons", "4", "--models", "dlinear", "--steps", "200", "--accumulate", "2",
            "--eval-every", "5", "--patience", "2", "--lr", "0.01", "--out", run,
        ];
        string one = Path.Combine(folder, "stop-one"), two = Path.Combine(folder, "stop-two");
        var single = TitansCli.Run(Forecast(mine, one));
        Assert.True(single.Code == 0, single.Error + single.Output);
        var parallel = Mpirun(["-np", "1", "dotnet", Cli, .. Forecast(mine, two), ":", "-np", "1", "dotnet", Cli, .. Forecast(other, two)]);
        Assert.True(parallel.Code == 0, parallel.Error + parallel.Output);
        string Weights(string run) => Path.Combine(run, "dlinear-h4", "forecaster.safetensors");
        Assert.Equal(File.ReadAllBytes(Weights(one)), File.ReadAllBytes(Weights(two)));
    }

    [Fact]
    public void CommandsThatDoNotTrainRefuseMpirunOnce()
    {
        string run = Path.Combine(folder, "for-eval");
        Assert.Equal(0, TitansCli.Run(Train(run, 1)).Code);
        var result = MpiRun(["task", "eval", "-c", run, "--task", "passkey", "--lengths", "128", "--examples", "1"]);
        Assert.Equal(2, result.Code);
        Assert.Single(result.Error.Split('\n'), l => l.Contains("`titans task eval` does not run under mpirun"));
        Assert.False(File.Exists(Path.Combine(run, "eval-passkey.md")));
    }

    [Fact]
    public void AnUnknownOptionIsTheSameErrorOnEveryRank()
    {
        var result = MpiRun(["train", "--data", corpus, "--no-such-option"]);
        Assert.NotEqual(0, result.Code);
        Assert.Equal(2, result.Error.Split('\n').Count(l => l.Contains("Unrecognized command or argument '--no-such-option'")));
    }
}
