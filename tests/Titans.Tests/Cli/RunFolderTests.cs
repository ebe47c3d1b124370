using Titans.Cli.Runs;
using Titans.Runtime;

namespace Titans.Tests.Cli;

/// <summary>
/// What titans writes, and what it never touches: run folders are locked before anything in them changes, only files
/// titans recorded as its own are replaced or removed, and a folder of the user's is refused without --force.
/// </summary>
public sealed class RunFolderTests() : CorpusFolder("titans-runfolder-")
{
    string UserFolder(string name)
    {
        string path = Path.Combine(folder, name);
        Directory.CreateDirectory(path);
        File.WriteAllText(Path.Combine(path, "notes.tmp"), "mine");
        File.WriteAllText(Path.Combine(path, "data.tmp-backup"), "mine");
        File.WriteAllText(Path.Combine(path, "model.json"), "mine");
        return path;
    }

    static void AssertUntouched(string path, params string[] names)
    {
        foreach (string name in names) Assert.Equal("mine", File.ReadAllText(Path.Combine(path, name)));
    }

    [Fact]
    public void AFolderOfTheUsersIsRefusedAndWithForceNothingOfTheirsIsRemoved()
    {
        string mine = UserFolder("mine");
        var refused = Assert.Throws<ArgumentException>(() => RunFolder.Acquire(mine, "train"));
        Assert.Contains("is not empty and holds no titans run (data.tmp-backup, model.json, notes.tmp)", refused.Message);
        Assert.False(File.Exists(Path.Combine(mine, RunFolder.LockFile)));   // refused before anything was written there

        using (var run = RunFolder.Acquire(mine, "train", force: true, fresh: true))
        {
            AssertUntouched(mine, "notes.tmp", "data.tmp-backup", "model.json");   // forced and fresh: still nothing of the user's is titans'
            Assert.Equal("mine", File.ReadAllText(Path.Combine(mine, "model.json")));
            AtomicFile.WriteAllText(run.Claim("metrics.jsonl"), "{}");
            run.Write("model.json", "titans'");                               // --force: the user's say to replace files of titans' names
        }
        AssertUntouched(mine, "notes.tmp", "data.tmp-backup");
        using (RunFolder.Acquire(mine, "train", fresh: true)) { }              // now a titans run: starting over removes titans' files only
        AssertUntouched(mine, "notes.tmp", "data.tmp-backup");
        Assert.False(File.Exists(Path.Combine(mine, "metrics.jsonl")));
        Assert.False(File.Exists(Path.Combine(mine, "model.json")));
    }

    [Fact]
    public void OnlyTheTemporaryFilesOfTitansOwnFilesAreLeftoversAndAUsersFileIsNeverReplacedUnasked()
    {
        string path = Path.Combine(folder, "run");
        using (var run = RunFolder.Acquire(path, "train")) run.Write("checkpoint.safetensors", "weights");
        string killed = AtomicFile.TemporaryName(Path.Combine(path, "checkpoint.safetensors"));
        File.WriteAllText(killed, "half a checkpoint");
        foreach (string name in new[] { "checkpoint.safetensors.tmp-mine", "other.json.tmp-abcdefghijk", "notes.tmp" })
            File.WriteAllText(Path.Combine(path, name), "mine");
        using (var run = RunFolder.Acquire(path, "train"))
        {
            Assert.False(File.Exists(killed));
            AssertUntouched(path, "checkpoint.safetensors.tmp-mine", "other.json.tmp-abcdefghijk", "notes.tmp");
            File.WriteAllText(Path.Combine(path, "loss.png"), "mine");       // the user's file of a name titans writes
            var replace = Assert.Throws<ArgumentException>(() => run.Claim("loss.png"));
            Assert.Contains("is there already and titans did not write it", replace.Message);
            // A second writer is refused while the first holds the folder.
            var second = Assert.Throws<ArgumentException>(() => RunFolder.Acquire(path, "train"));
            Assert.Contains("Another process is writing into the run folder", second.Message);
        }
        AssertUntouched(path, "loss.png");
    }

    [Fact]
    public void ARunOfAnotherKindOrDataSetIsRefusedAndALinkIsNeverTheLock()
    {
        string path = Path.Combine(folder, "forecast");
        var data = new Dictionary<string, string> { ["data"] = "/data/ETTh1.csv" };
        using (var run = RunFolder.Acquire(path, "forecast", identity: data)) run.Write("results.json", "[]");
        var other = Assert.Throws<ArgumentException>(() => RunFolder.Acquire(path, "forecast", identity: new Dictionary<string, string> { ["data"] = "/data/ETTh2.csv" }));
        Assert.Contains("holds the forecast run of data '/data/ETTh1.csv', not of '/data/ETTh2.csv'", other.Message);
        Assert.Contains("holds a titans forecast run, not a train run", Assert.Throws<ArgumentException>(() => RunFolder.Acquire(path, "train")).Message);
        using (RunFolder.Acquire(path, "forecast", identity: data)) { }      // the same data set: its own run again

        if (!OperatingSystem.IsLinux()) return;
        string linked = Path.Combine(folder, "linked");
        Directory.CreateDirectory(linked);
        File.WriteAllText(Path.Combine(folder, "victim"), "mine");
        File.CreateSymbolicLink(Path.Combine(linked, RunFolder.LockFile), Path.Combine(folder, "victim"));
        Assert.Contains("is not a plain file", Assert.Throws<ArgumentException>(() => RunFolder.Acquire(linked, "train")).Message);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(folder, "victim")));
    }

    /// <summary>
    /// Run folders of builds before the record (some before run.lock too) are titans runs: they resume, and a killed
    /// save's temporary file of those builds' naming is removed.
    /// </summary>
    [Fact]
    public void RunFoldersOfEarlierBuildsResumeAndLoseTheirOldLeftovers()
    {
        string run = Path.Combine(folder, "earlier");
        string[] train = ["train", "--data", corpus, "-a", "transformer++", "--steps", "1", "--batch-size", "2", "--seq-len", "16", "--eval-tokens", "64", "--out", run];
        Assert.Equal(0, TitansCli.Run(train).Code);
        File.Delete(Path.Combine(run, RunFolder.RecordFile));
        File.Delete(Path.Combine(run, RunFolder.LockFile));
        string killed = Path.Combine(run, "checkpoint.safetensors.tmp-abcd1234.xyz");   // an earlier build's temporary name
        File.WriteAllText(killed, "half a checkpoint");
        File.WriteAllText(Path.Combine(run, "notes.txt"), "mine");
        var resumed = TitansCli.Run("train", "--resume", run, "--steps", "2");
        Assert.True(resumed.Code == 0, resumed.Error + resumed.Output);
        Assert.False(File.Exists(killed));
        AssertUntouched(run, "notes.txt");

        // task eval writes its table beside the checkpoint only into a run folder it can hold, and never over a file of the user's.
        File.WriteAllText(Path.Combine(run, "eval-passkey.md"), "mine");
        string[] eval = ["task", "eval", "-c", run, "--task", "passkey", "--lengths", "128", "--depths", "0.5", "--examples", "1"];
        var refused = TitansCli.Run(eval);
        Assert.Equal(2, refused.Code);
        Assert.Contains("is there already and titans did not write it", refused.Error);
        AssertUntouched(run, "eval-passkey.md");
        using (RunFolder.Acquire(run, "train"))
            Assert.Contains("Another process is writing into the run folder", TitansCli.Run(eval).Error);
        File.Delete(Path.Combine(run, "eval-passkey.md"));
        Assert.Equal(0, TitansCli.Run(eval).Code);
        Assert.True(File.Exists(Path.Combine(run, "eval-passkey.png")));
    }

    /// <summary>Quickstart and the benchmarks cleared their folder before taking its lock; a second one wiped a live run.</summary>
    [Fact]
    public void QuickstartAndBenchmarksTakeTheLockBeforeClearingAnything()
    {
        string quick = Path.Combine(folder, "quick"), mac = Path.Combine(quick, "mac");
        using (var run = RunFolder.Acquire(quick, "quickstart")) { }
        using (var run = RunFolder.Acquire(mac, "train")) run.Write("checkpoint.safetensors", "a live run's");
        using (RunFolder.Acquire(quick, "quickstart"))                         // the first quickstart, still running
        {
            var second = TitansCli.Run("quickstart", "--out", quick, "--steps", "1");
            Assert.Equal(2, second.Code);
            Assert.Contains("Another process is writing into the run folder", second.Error);
        }
        Assert.Equal("a live run's", File.ReadAllText(Path.Combine(mac, "checkpoint.safetensors")));

        string runs = Path.Combine(folder, "bench");
        using (RunFolder.Acquire(runs, "bench-lm"))
        {
            var second = TitansCli.Run("bench", "lm", "--data", corpus, "--architectures", "lmm", "--steps", "1", "--runs", runs);
            Assert.Equal(2, second.Code);
            Assert.Contains("Another process is writing into the run folder", second.Error);
        }
    }

    [Fact]
    public void TrainIntoAFolderOfTheUsersOnlyWithForceAndExportNeverReplacesUnasked()
    {
        string mine = UserFolder("out");
        string[] train = ["train", "--data", corpus, "-a", "transformer++", "--steps", "1", "--batch-size", "2", "--seq-len", "16", "--eval-tokens", "64", "--out", mine];
        var refused = TitansCli.Run(train);
        Assert.Equal(2, refused.Code);
        Assert.Contains("is not empty and holds no titans run", refused.Error);
        AssertUntouched(mine, "notes.tmp", "data.tmp-backup", "model.json");
        var forced = TitansCli.Run([.. train, "--force"]);
        Assert.True(forced.Code == 0, forced.Error + forced.Output);
        AssertUntouched(mine, "notes.tmp", "data.tmp-backup");

        string export = UserFolder("export");
        File.WriteAllText(Path.Combine(export, "config.json"), "mine");
        var exported = TitansCli.Run("export", "-c", mine, "--out", export);
        Assert.Equal(2, exported.Code);
        Assert.Contains("already holds config.json", exported.Error);
        AssertUntouched(export, "config.json");
        Assert.Equal(0, TitansCli.Run("export", "-c", mine, "--out", export, "--force").Code);
    }

    [Fact]
    public void ForecastRunsOfTwoDataSetsNeverShareAFolder()
    {
        string[] Csv(string name)
        {
            string csv = Path.Combine(folder, name);
            File.WriteAllLines(csv, new[] { "x" }.Concat(Enumerable.Range(0, 200).Select(r => FormattableString.Invariant($"{Math.Sin(r / 4.0)}"))));
            return ["forecast", "train", "--data", csv, "--lookback", "16", "--horizons", "4", "--models", "naive", "--steps", "2"];
        }
        string run = Path.Combine(folder, "forecast");
        var first = TitansCli.Run([.. Csv("first.csv"), "--out", run]);
        Assert.True(first.Code == 0, first.Error + first.Output);
        var second = TitansCli.Run([.. Csv("second.csv"), "--out", run]);
        Assert.Equal(2, second.Code);
        Assert.Contains("first.csv', not of", second.Error);
        Assert.Contains(Path.Combine(folder, "first.csv"), File.ReadAllText(Path.Combine(run, RunFolder.RecordFile)));
    }
}
