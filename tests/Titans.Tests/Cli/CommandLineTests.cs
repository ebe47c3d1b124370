using System.Text.RegularExpressions;
using System.Text.Json;
using Titans.Cli;
using Titans.Tests.Text;
using Titans.Training;

namespace Titans.Tests.Cli;

/// <summary>The `titans` workflow end to end, in process: train, resume, eval, generate, and bad input.</summary>
public class CommandLineTests() : CorpusFolder("titans-cli-")
{
    static (int Code, string Output, string Error) Titans(params string[] args) => TitansCli.Run(args);

    string[] TrainArguments(string run, int steps, params string[] more) => new[]
    {
        "train", "--data", corpus, "--preset", "tiny", "-a", "mac", "--steps", steps.ToString(), "--batch-size", "2", "--seq-len", "32",
        "--warmup", "1", "--out", run, "--log-every", "1", "--eval-every", "2", "--eval-tokens", "256", "--checkpoint-every", "2",
    }.Concat(more).ToArray();

    static List<JsonElement> Metrics(string run) =>
        File.ReadLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    [Fact]
    public void TrainResumeEvaluateAndGenerate()
    {
        string run = Path.Combine(folder, "run");
        var train = Titans(TrainArguments(run, 4));
        Assert.True(train.Code == 0, train.Error + train.Output);
        foreach (string file in new[] { "checkpoint.safetensors", "metrics.jsonl", "loss.png", "model.json", "training.json" })
            Assert.True(File.Exists(Path.Combine(run, file)), $"{file} missing: {train.Output}");
        Assert.Contains("step      4/4", train.Output);
        Assert.Contains("validation loss", train.Output);
        Assert.Equal(new[] { 1, 2, 2, 3, 4, 4 }, Metrics(run).Select(m => m.GetProperty("step").GetInt32()));

        // Training into a folder that holds a checkpoint is refused; --resume extends the run.
        var again = Titans(TrainArguments(run, 4));
        Assert.Equal(2, again.Code);
        Assert.Contains("--resume", again.Error);
        var resumed = Titans("train", "--data", corpus, "--resume", run, "--steps", "6");
        Assert.True(resumed.Code == 0, resumed.Error + resumed.Output);
        Assert.Contains("Resuming MAC at step 4 of 6", resumed.Output);

        // A language model of text is not a DNA model.
        var dna = Titans("dna", "eval", "-c", run);
        Assert.Equal(2, dna.Code);
        Assert.Contains("needs a `dna pretrain` checkpoint", dna.Error);
        Assert.Equal(6, Metrics(run).Last().GetProperty("step").GetInt32());
        // Without --steps a run resumes to its own length, not to the option's default.
        var finished = Titans("train", "--data", corpus, "--resume", run);
        Assert.True(finished.Code == 0, finished.Error + finished.Output);
        Assert.Contains("at step 6 of 6", finished.Output);

        var eval = Titans("eval", "-c", run, "--data", corpus, "--chunk", "64");
        Assert.True(eval.Code == 0, eval.Error);
        Assert.Matches(@"step 6 on .*: [\d,]+ tokens, loss \d+\.\d+ nats, perplexity \d+\.\d+, \d+\.\d+ bits/byte", eval.Output);

        string[] generate = { "generate", "-c", run, "-p", "Line 7: the", "-n", "40", "--seed", "5" };
        var first = Titans(generate);
        var second = Titans(generate);
        Assert.True(first.Code == 0, first.Error);
        Assert.StartsWith("Line 7: the", first.Output);
        Assert.True(first.Output.Length > "Line 7: the".Length + 10, first.Output);
        Assert.Equal(first.Output, second.Output);
    }

    /// <summary>The tensor data's checksum a checkpoint recorded: equal checksums, equal weights and optimizer state.</summary>
    static string TensorDataChecksum(string run)
    {
        string file = Path.Combine(run, "checkpoint.safetensors");
        var bytes = File.ReadAllBytes(file);
        long n = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        return header.RootElement.GetProperty("__metadata__").GetProperty(global::Titans.Checkpoints.SafeTensors.DataChecksumKey).GetString()!;
    }

    [Fact]
    public void ResumeKeepsTheRunsSettingsAndData()
    {
        string[] Arguments(string run, int steps) =>
        [
            "train", "--data", corpus, "-a", "transformer++", "--steps", steps.ToString(), "--batch-size", "2", "--seq-len", "16", "--lr", "0.01",
            "--warmup", "50", "--out", run, "--eval-every", "2", "--eval-tokens", "128", "--checkpoint-every", "1",
        ];
        string straight = Path.Combine(folder, "straight"), interrupted = Path.Combine(folder, "interrupted");
        Assert.Equal(0, Titans(Arguments(straight, 4)).Code);
        Assert.Equal(0, Titans(Arguments(interrupted, 2)).Code);

        // Settings of the run cannot be changed by resuming it; each is named.
        foreach (var (option, value) in new[] { ("-a", "mac"), ("--lr", "0.5"), ("--seq-len", "32"), ("--batch-size", "4"), ("--seed", "2") })
        {
            var changed = Titans("train", "--resume", interrupted, option, value);
            Assert.Equal(2, changed.Code);
            Assert.Contains("--resume continues the run with its own settings", changed.Error);
            Assert.Contains(option == "-a" ? "--architecture" : option, changed.Error);
        }
        string other = Path.Combine(folder, "other.txt");
        File.WriteAllText(other, string.Concat(Enumerable.Range(0, 300).Select(i => $"Another text, line {i}.\n")));
        var otherData = Titans("train", "--resume", interrupted, "--data", other);
        Assert.Equal(2, otherData.Code);
        Assert.Contains("differs from the data", otherData.Error);

        // Without --data the run continues on its own corpus (not the shipped default), to its own step count.
        var alone = Titans("train", "--resume", interrupted, "--steps", "3");
        Assert.True(alone.Code == 0, alone.Error + alone.Output);
        Assert.Contains("at step 2 of 3", alone.Output);
        // A corpus that moved is named; a copy given with --data continues the run.
        string moved = Path.Combine(folder, "moved.txt");
        File.Move(corpus, moved);
        var gone = Titans("train", "--resume", interrupted, "--steps", "4");
        Assert.Equal(2, gone.Code);
        Assert.Contains("is gone", gone.Error);
        Assert.Contains(corpus, gone.Error);
        var copy = Titans("train", "--resume", interrupted, "--data", moved, "--steps", "4");
        Assert.True(copy.Code == 0, copy.Error + copy.Output);
        Assert.Equal(TensorDataChecksum(straight), TensorDataChecksum(interrupted));
        // Nothing in a checkpoint depends on the clock: the interrupted run's file is the straight run's, byte for byte.
        Assert.Equal(File.ReadAllBytes(Path.Combine(straight, "checkpoint.safetensors")), File.ReadAllBytes(Path.Combine(interrupted, "checkpoint.safetensors")));
        Assert.True(File.Exists(Path.Combine(interrupted, "timing.json")));
    }

    [Fact]
    public void SetOverridesAnyFieldByPathAndExportWritesWeightsPyTorchCanRead()
    {
        string run = Path.Combine(folder, "set");
        var train = Titans("train", "--data", corpus, "-a", "lmm", "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--eval-tokens", "128",
            "--set", "Layers=1", "--set", "Memory.InitialForgetting=0.002", "--set", "Memory.Activation=Silu", "--set", "WarmupSteps=7", "--out", run);
        Assert.True(train.Code == 0, train.Error + train.Output);
        var model = global::Titans.Models.TitansConfig.FromJson(File.ReadAllText(Path.Combine(run, "model.json")));
        var training = TrainingConfig.FromJson(File.ReadAllText(Path.Combine(run, "training.json")));
        Assert.Equal((1, 0.002, global::Titans.Memory.MemoryActivation.Silu, 7), (model.Layers, model.Memory.InitialForgetting, model.Memory.Activation, training.WarmupSteps));

        // The weights alone, with the configuration beside them: names and shapes as the model's, no optimizer state.
        string export = Path.Combine(folder, "export");
        var exported = Titans("export", "-c", run, "--out", export);
        Assert.True(exported.Code == 0, exported.Error + exported.Output);
        using (var weights = global::Titans.Checkpoints.SafeTensors.Load(Path.Combine(export, "model.safetensors")))
        using (var built = new global::Titans.Models.TitansLanguageModel("model", model))
        {
            Assert.Equal(built.named_parameters().Select(p => p.name).Order(), weights.Tensors.Keys.Order());
            Assert.DoesNotContain(weights.Tensors.Keys, k => k.StartsWith("optimizer."));
        }
        Assert.Equal(model, global::Titans.Models.TitansConfig.FromJson(File.ReadAllText(Path.Combine(export, "config.json"))));
        // It evaluates as the checkpoint does, and cannot be resumed.
        var fromRun = Titans("eval", "-c", run, "--data", corpus);
        var fromExport = Titans("eval", "-c", export, "--data", corpus);
        Assert.True(fromExport.Code == 0, fromExport.Error);
        Assert.Equal(Regex.Match(fromRun.Output, @"loss [\d.]+").Value, Regex.Match(fromExport.Output, @"loss [\d.]+").Value);
        var resume = Titans("train", "--resume", export, "--steps", "3");
        Assert.Equal(2, resume.Code);
        Assert.Contains("holds weights only", resume.Error);

        var unknown = Titans("train", "--data", corpus, "--set", "Layerz=1", "--out", Path.Combine(folder, "u"));
        Assert.Equal(2, unknown.Code);
        Assert.Contains("'Layerz' is a field of neither", unknown.Error);
        var nested = Titans("train", "--data", corpus, "--set", "Memory.Deepth=1", "--out", Path.Combine(folder, "u"));
        Assert.Equal(2, nested.Code);
        Assert.Contains("TitansConfig.Memory has no field 'Deepth'", nested.Error);
        var invalid = Titans("train", "--data", corpus, "--set", "Layers=0", "--out", Path.Combine(folder, "u"));
        Assert.Equal(2, invalid.Code);
        Assert.Contains("TitansConfig.Layers must lie in [1, 1,024], got 0", invalid.Error);
    }

    [Fact]
    public void TrainsWithASentencePieceTokenizer()
    {
        string run = Path.Combine(folder, "bpe");
        var train = Titans(TrainArguments(run, 2, "--tokenizer", TokenizerTests.SentencePieceModel));
        Assert.True(train.Code == 0, train.Error + train.Output);
        var eval = Titans("eval", "-c", run, "--data", corpus);
        Assert.True(eval.Code == 0, eval.Error);
        Assert.Contains("bits/byte", eval.Output);
    }

    [Fact]
    public void DnaPretrainThenEvaluateBesideMarkovReferences()
    {
        var random = new Random(2);
        string Genome(string name)
        {
            string path = Path.Combine(folder, name);
            File.WriteAllText(path, $">{name}\n" + string.Concat(Enumerable.Range(0, 3000).Select(_ => "ACGT"[random.Next(4)])) + "\n");
            return path;
        }
        string train = Genome("train.fa"), heldOut = Genome("held-out.fa"), run = Path.Combine(folder, "dna");
        var pretrain = Titans("dna", "pretrain", "--genome", train, "--held-out", heldOut, "--steps", "2", "--batch-size", "2", "--seq-len", "32",
            "--warmup", "1", "--eval-every", "2", "--eval-tokens", "64", "--out", run);
        Assert.True(pretrain.Code == 0, pretrain.Error + pretrain.Output);
        Assert.Contains("bits/nucleotide", pretrain.Output);
        string report = Path.Combine(folder, "bits.md");
        var eval = Titans("dna", "eval", "-c", run, "--genomes", heldOut, "--markov-genome", train, "--markov-orders", "0,2", "--nucleotides", "500", "--report", report);
        Assert.True(eval.Code == 0, eval.Error + eval.Output);
        Assert.Matches(@"held-out.fa: LMM step 2 [0-9.]+ bits/nucleotide over 499 nucleotides .*order 0 [0-9.]+, order 2 [0-9.]+", eval.Output);
        Assert.Contains("| Markov order 0 | Markov order 2 |", File.ReadAllText(report));
        var badOrder = Titans("dna", "eval", "-c", run, "--genomes", heldOut, "--markov-genome", train, "--markov-orders", "9");
        Assert.Equal(2, badOrder.Code);
        Assert.Contains("--markov-orders must be a comma-separated list of integers from 0 to 8, got '9'", badOrder.Error);
    }

    [Fact]
    public void ForecastTrainWithSeveralSeedsReportsTheirMeanAndSpread()
    {
        string csv = Path.Combine(folder, "series.csv");
        File.WriteAllLines(csv, new[] { "x,y" }.Concat(Enumerable.Range(0, 300).Select(r =>
            FormattableString.Invariant($"{Math.Sin(r / 4.0) + 0.1 * Math.Cos(r * 1.3)},{Math.Cos(r / 6.0)}"))));
        string run = Path.Combine(folder, "forecast");
        var train = Titans("forecast", "train", "--data", csv, "--lookback", "16", "--horizons", "4", "--models", "naive,dlinear", "--seeds", "1,2",
            "--loss", "mae", "--steps", "20", "--eval-every", "10", "--patience", "2", "--out", run);
        Assert.True(train.Code == 0, train.Error + train.Output);
        string table = File.ReadAllText(Path.Combine(run, "results.md"));
        Assert.Contains("training loss MAE", table);
        Assert.Contains("seeds 1, 2", table);
        Assert.Matches(@"\| DLinear \|.*[0-9.]+(\*\*)? ± [0-9.]+", table);
        foreach (string seed in new[] { "seed1", "seed2" })
            Assert.True(File.Exists(Path.Combine(run, $"dlinear-h4-{seed}", "forecaster.safetensors")), $"no checkpoint for {seed}: {train.Output}");
        // The two seeds train different models; each checkpoint re-scores as it was trained.
        var eval = Titans("forecast", "eval", "--checkpoint", Path.Combine(run, "dlinear-h4-seed2", "forecaster.safetensors"), "--data", csv);
        Assert.True(eval.Code == 0, eval.Error);
        Assert.Contains("test part", eval.Output);

        // The best (lowest) of each score column is bold, and only it (ties aside).
        var tables = table.Split("Per seed");
        Assert.Equal(2, tables.Length);                     // and after the means, the value of every seed behind them
        Assert.Matches(@"\| DLinear \| [0-9.]+ / [0-9.]+ \| [0-9.]+ / [0-9.]+ \|", tables[1]);
        var rows = tables[0].Split('\n').Where(l => l.StartsWith("| Naive") || l.StartsWith("| DLinear")).Select(l => l.Split('|')).ToList();
        Assert.Equal(2, rows.Count);
        for (int column = 3; column < rows[0].Length - 2; column++)
            Assert.Single(rows, r => r[column].Contains("**"));

        var badLoss = Titans("forecast", "train", "--data", csv, "--loss", "l2", "--out", Path.Combine(folder, "bad"));
        Assert.Equal(2, badLoss.Code);
        Assert.Contains("--loss must be mse, mae, huber, got 'l2'", badLoss.Error);
    }

    /// <summary>Labels as a data set writes them (splice sites: ei, ie, n), mapped to classes, reported per class.</summary>
    [Fact]
    public void DnaClassifyTakesTextLabelsAndReportsEveryClass()
    {
        var random = new Random(4);
        string tsv = Path.Combine(folder, "splice.tsv");
        File.WriteAllLines(tsv, new[] { "seq\tlabel" }.Concat(Enumerable.Range(0, 90).Select(i =>
            $"{new string(Enumerable.Range(0, 20).Select(_ => "ACGT"[random.Next(4)]).ToArray())}\t{new[] { "n", "ei", "ie" }[i % 3]}")));
        string run = Path.Combine(folder, "splice");
        var classify = Titans("dna", "classify", "--data", tsv, "--models", "cnn", "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--out", run);
        Assert.True(classify.Code == 0, classify.Error + classify.Output);
        Assert.Contains("3 classes: ei (train 21, validation 3, test 6), ie (train 21, validation 3, test 6), n (train 21, validation 3, test 6)", classify.Output);
        string report = File.ReadAllText(Path.Combine(run, "results.md"));
        Assert.Matches(@"\| `ei` \| 21 \| 3 \| 6 \| [0-9.]+% \|", report);
        Assert.Contains("| `n` |", report);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "results.json")));
        Assert.Equal(["ei", "ie", "n"], json.RootElement.GetProperty("classes").EnumerateArray().Select(c => c.GetString()!));
        Assert.Equal(3, json.RootElement.GetProperty("results")[0].GetProperty("ClassAccuracy").GetArrayLength());
    }

    [Fact]
    public void TrainResumeAndEvaluateOnATask()
    {
        string run = Path.Combine(folder, "task");
        string[] Train(int steps, params string[] more) => new[]
        {
            "task", "train", "--task", "qa1", "--haystack", corpus, "-a", "lmm", "--length", "200", "--steps", steps.ToString(), "--batch-size", "2",
            "--warmup", "1", "--out", run, "--log-every", "1", "--eval-every", "2", "--eval-examples", "4", "--checkpoint-every", "2",
        }.Concat(more).ToArray();
        var train = Titans(Train(2, "--stream-prefix", "100"));
        Assert.True(train.Code == 0, train.Error + train.Output);
        Assert.Contains("BABILong qa1", train.Output);
        Assert.Contains("each after up to 100 tokens streamed without gradient", train.Output);
        Assert.Contains("validation answer loss", train.Output);
        Assert.True(Metrics(run).Any(m => m.TryGetProperty("val_accuracy", out _)), "validation accuracy is logged");
        var resumed = Titans("task", "train", "--resume", run, "--steps", "3");
        Assert.True(resumed.Code == 0, resumed.Error + resumed.Output);
        Assert.Contains("Resuming LMM on qa1 at step 2 of 3", resumed.Output);

        // Scored over a grid: lengths given, depths meaningless for qa1 (its facts are scattered).
        string table = Path.Combine(folder, "qa1.md");
        var eval = Titans("task", "eval", "-c", run, "--lengths", "200,400", "--examples", "3", "--out", table);
        Assert.True(eval.Code == 0, eval.Error + eval.Output);
        Assert.Contains("length    400  depth scattered", eval.Output);
        Assert.True(File.Exists(Path.ChangeExtension(table, ".png")), "the heat map is written");
        Assert.Contains("| scattered |", File.ReadAllText(table));

        // Another task can be scored with the same model; a language model checkpoint needs --task.
        var passkey = Titans("task", "eval", "-c", run, "--task", "passkey", "--lengths", "120", "--depths", "0,1", "--examples", "2", "--out", Path.Combine(folder, "pk.md"));
        Assert.True(passkey.Code == 0, passkey.Error + passkey.Output);
        Assert.Contains("depth      100%", passkey.Output);
        var short_ = Titans("task", "eval", "-c", run, "--task", "passkey", "--lengths", "64", "--out", Path.Combine(folder, "x.md"));
        Assert.Equal(2, short_.Code);
        Assert.Contains("too short", short_.Error);
        foreach (var (depth, printed) in new[] { ("nan", "NaN"), ("1.5", "1.5"), ("-0.1", "-0.1") })
        {
            var bad = Titans("task", "eval", "-c", run, "--task", "passkey", "--lengths", "120", "--depths", $"0,{depth}", "--out", Path.Combine(folder, "y.md"));
            Assert.Equal(2, bad.Code);
            Assert.Contains($"--depths must lie in [0, 1], got {printed}.", bad.Error);
        }

        // The memory traced over one long example: a table per memory block and a plot.
        string trace = Path.Combine(folder, "trace.md");
        var traced = Titans("task", "trace", "-c", run, "--length", "400", "--window", "100", "--out", trace);
        Assert.True(traced.Code == 0, traced.Error + traced.Output);
        Assert.Contains("| 400 |", File.ReadAllText(trace));
        Assert.Contains("‖W₀‖ at the end", traced.Output);
        Assert.True(File.Exists(Path.ChangeExtension(trace, ".png")), "the plot is written");
        // A text instead of a task example: its first --length tokens.
        string textTrace = Path.Combine(folder, "text-trace.md");
        var text = Titans("task", "trace", "-c", run, "--text", corpus, "--length", "300", "--window", "100", "--out", textTrace);
        Assert.True(text.Code == 0, text.Error + text.Output);
        Assert.Contains("The first 300 tokens of", File.ReadAllText(textTrace));
        var badDepth = Titans("task", "trace", "-c", run, "--depth", "2", "--out", trace);
        Assert.Equal(2, badDepth.Code);
        Assert.Contains("--depth must lie in [0, 1]", badDepth.Error);
    }

    [Fact]
    public void ATaskRunResumesOnlyAsATaskRunAndOnItsOwnHaystack()
    {
        string haystack = Path.Combine(folder, "haystack.txt"), run = Path.Combine(folder, "task-haystack");
        File.Copy(corpus, haystack);
        string[] train = ["task", "train", "--task", "qa1", "--haystack", haystack, "-a", "lmm", "--length", "200", "--steps", "1", "--batch-size", "2",
            "--eval-every", "1", "--eval-examples", "2", "--out", run];
        Assert.Equal(0, Titans(train).Code);

        // `train --resume` of a task run would go on as language modelling on a corpus: refused, naming the right command.
        var asText = Titans("train", "--resume", run, "--data", corpus, "--steps", "2");
        Assert.Equal(2, asText.Code);
        Assert.Contains("is a `titans task train` run (task qa1); resume it with `titans task train --resume`", asText.Error);
        // The haystack changed under the run (or a copy that is not one): refused, where it used to resume on other text.
        File.AppendAllText(haystack, "One more line that was not there.\n");
        var changed = Titans("task", "train", "--resume", run, "--steps", "2");
        Assert.Equal(2, changed.Code);
        Assert.Contains("differs from the one", changed.Error);
        File.Move(haystack, haystack + ".moved");
        var other = Titans("task", "train", "--resume", run, "--haystack", haystack + ".moved", "--steps", "2");
        Assert.Equal(2, other.Code);
        Assert.Contains("differs from the one", other.Error);
        File.Copy(corpus, haystack);                                        // the run's own text again: it resumes
        var resumed = Titans("task", "train", "--resume", run, "--steps", "2");
        Assert.True(resumed.Code == 0, resumed.Error + resumed.Output);
    }

    [Fact]
    public void BenchTasksFineTunesEveryArchitectureFromAnEarlierBench()
    {
        string[] Bench(string runs, params string[] more) => new[]
        {
            "bench", "tasks", "--task", "passkey", "--haystack", corpus, "--architectures", "lmm", "--length", "128", "--steps", "2", "--batch-size", "2",
            "--factors", "1", "--depths", "1", "--examples", "2", "--eval-every", "2", "--runs", runs,
        }.Concat(more).ToArray();
        string first = Path.Combine(folder, "stage1"), second = Path.Combine(folder, "stage2"), report = Path.Combine(folder, "stage2.md");
        var scratch = Titans(Bench(first));
        Assert.True(scratch.Code == 0, scratch.Error + scratch.Output);

        var tuned = Titans(Bench(second, "--init-from", first, "--stream-prefix", "50", "--out", report));
        Assert.True(tuned.Code == 0, tuned.Error + tuned.Output);
        Assert.Contains($"Every architecture fine-tuned from its own finished run in `{first}` (after 2 steps there)", File.ReadAllText(report));
        Assert.Contains("(2 steps × 2 examples, each after up to 50 tokens streamed without gradient, peak learning rate", File.ReadAllText(report));
        string start = Path.Combine(first, "lmm", "checkpoint.safetensors"), end = Path.Combine(second, "lmm", "checkpoint.safetensors");
        var (model, header) = Checkpoint.LoadModel(end);
        model.Dispose();
        Assert.Equal(Path.GetFullPath(start), header.Metadata["init"]);

        // The fine-tune is exactly `task train --init` with the same training: the same weights, bit for bit.
        string single = Path.Combine(folder, "single");
        var alone = Titans("task", "train", "--task", "passkey", "--haystack", corpus, "--init", Path.Combine(first, "lmm"), "--length", "128", "--steps", "2",
            "--batch-size", "2", "--warmup", "2", "--stream-prefix", "50", "--eval-every", "2", "--eval-examples", "2", "--out", single);
        Assert.True(alone.Code == 0, alone.Error + alone.Output);
        AssertSameWeights(end, Path.Combine(single, "checkpoint.safetensors"));
        AssertDifferentWeights(start, end);

        // Run again, the finished fine-tune is reused; from scratch into the same folder it is not (it started elsewhere).
        var reused = Titans(Bench(second, "--init-from", first, "--stream-prefix", "50"));
        Assert.Contains("LMM: reusing the finished run", reused.Output);
        var fresh = Titans(Bench(second, "--stream-prefix", "50"));
        Assert.True(fresh.Code == 0, fresh.Error + fresh.Output);
        Assert.DoesNotContain("reusing", fresh.Output);

        var missing = Titans(Bench(second, "--init-from", Path.Combine(folder, "nowhere")));
        Assert.Equal(2, missing.Code);
        Assert.Contains("there is no LMM run to start from", missing.Error);
        Assert.Single(missing.Error.Trim().Split('\n'));
    }

    static void AssertSameWeights(string a, string b) => Assert.True(MaxDifference(a, b) == 0, $"{a} and {b} differ");

    static void AssertDifferentWeights(string a, string b) => Assert.True(MaxDifference(a, b) > 0, $"{a} and {b} are the same");

    static double MaxDifference(string a, string b)
    {
        var (first, _) = Checkpoint.LoadModel(a);
        var (second, _) = Checkpoint.LoadModel(b);
        using (first)
        using (second)
        using (TorchSharp.torch.NewDisposeScope())
        {
            var right = second.state_dict();
            return first.state_dict().Max(p => (p.Value - right[p.Key]).abs().max().item<float>());
        }
    }

    /// <summary>More threads than cores only wait for each other (1000 ran about 1000× slower): capped, and said so.</summary>
    [Fact]
    public void ThreadsBeyondTheCoresAreCappedWithAWarning()
    {
        var models = Titans("models", "--preset", "tiny", "-a", "lmm", "--threads", "1000");
        Assert.True(models.Code == 0, models.Error);
        Assert.Contains($"warning: --threads 1000 is more than the {Environment.ProcessorCount} core(s) this process may use; using {Environment.ProcessorCount}.", models.Error);
        Assert.Equal(Environment.ProcessorCount, TorchSharp.torch.get_num_threads());
        global::Titans.Runtime.CoreShare.Join();   // the suite shares the cores again, as at start-up
    }

    /// <summary>
    /// One merge rule for every route to the memory's configuration: --set Memory={…} used to replace the section (and so
    /// dropped the preset's stabilizers); it now sets the fields it names, as --memory and --set Memory.Field=… do.
    /// </summary>
    [Fact]
    public void EveryRouteToTheMemoryMergesTheSameWay()
    {
        var preset = global::Titans.Models.Presets.Get("tiny", global::Titans.Models.Architecture.Mac);
        var bySet = preset.With(["Memory={\"ChunkSize\": 8, \"InitialForgetting\": 0.002}"]);
        var byPath = preset.With(["Memory.ChunkSize=8", "Memory.InitialForgetting=0.002"]);
        var byPatch = preset.WithMemory("{\"ChunkSize\": 8}").WithInitialForgetting(0.002);
        Assert.Equal(byPath, bySet);
        Assert.Equal(byPath, byPatch);
        Assert.Equal(preset.Memory with { ChunkSize = 8, InitialForgetting = 0.002 }, bySet.Memory);   // the stabilizers stay
        Assert.True(bySet.Memory.RetainTowardInitial);
        Assert.Contains("Memory.ModelDim is 32 but ModelDim is 64", Assert.Throws<ArgumentException>(() => preset.WithMemory("{\"ModelDim\": 32}")).Message);
        // A patch (--forecaster) merges sections the same way: the backbone keeps what the patch does not name.
        var forecaster = new global::Titans.Forecasting.ForecasterConfig { Backbone = preset };
        var patched = global::Titans.Runtime.ConfigJson.Patch(forecaster, "{\"Backbone\": {\"Layers\": 1}}", c => c);
        Assert.Equal(preset with { Layers = 1 }, patched.Backbone);
    }

    [Fact]
    public void TheMemoryOptionSetsFieldsOverThePresetsMemory()
    {
        // The paper's plain memory is one option away from the presets' stable one.
        string run = Path.Combine(folder, "paper");
        var train = Titans(TrainArguments(run, 1, "--memory", "{\"RetainTowardInitial\": false, \"InitialMomentum\": 0.9}"));
        Assert.True(train.Code == 0, train.Error + train.Output);
        var memory = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "model.json"))).RootElement.GetProperty("Memory");
        Assert.False(memory.GetProperty("RetainTowardInitial").GetBoolean());
        Assert.Equal(0.9, memory.GetProperty("InitialMomentum").GetDouble());
        Assert.Equal(0.01, memory.GetProperty("InitialInnerLearningRate").GetDouble());   // the preset's, untouched
        Assert.Equal(64, memory.GetProperty("ModelDim").GetInt32());
    }

    [Fact]
    public void StabilityBenchWritesItsTables()
    {
        string output = Path.Combine(folder, "stability.md");
        var bench = Titans("bench", "stability", "--data", corpus, "--presets", "tiny", "--variants", "paper,default", "--lengths", "64,128",
            "--points", "64,256", "--seeds", "1", "--memory", "{\"Expansion\": 1}", "--out", output, "--plot", Path.Combine(folder, "stability.png"));
        Assert.True(bench.Code == 0, bench.Error + bench.Output);
        string text = File.ReadAllText(output);
        Assert.Contains("| tiny | paper |", text);
        Assert.Contains("| default | 256 |", text);
        Assert.Contains("'{\"Expansion\": 1}'", text);                     // the command, quoted as a shell needs it
        Assert.True(File.Exists(Path.Combine(folder, "stability.png")));
    }

    [Fact]
    public void TheKernelBenchTimesItsBuildingBlocks()
    {
        string table = Path.Combine(folder, "bench-kernel.md");
        var run = Titans("bench", "kernel", "--repeats", "1", "--out", table);
        Assert.True(run.Code == 0, run.Error + run.Output);
        string text = File.ReadAllText(table);
        Assert.Matches(@"\| product A·B \(SmallGemm.Multiply\) \| 16×64×256 \| [0-9.]+ µs \| [0-9.]+ GFLOP/s \|", text);
        Assert.Matches(@"\| transpose, tiles of 16 \(SmallGemm.Transpose\) \| 256×64 \| [0-9.]+ µs \| [0-9.]+× faster \|", text);
        Assert.Contains("must be at least 1", Titans("bench", "kernel", "--repeats", "0").Error);
    }

    [Fact]
    public void EvalAndGenerateBenchesCompareTheScansAndTimeTokens()
    {
        string mac = Path.Combine(folder, "bench-mac"), tpp = Path.Combine(folder, "bench-tpp");
        foreach (var (architecture, run) in new[] { ("mac", mac), ("transformer++", tpp) })
            Assert.Equal(0, Titans("train", "--data", corpus, "-a", architecture, "--steps", "2", "--batch-size", "2", "--seq-len", "32",
                "--eval-tokens", "64", "--out", run).Code);
        string evalTable = Path.Combine(folder, "bench-eval.md");
        var eval = Titans("bench", "eval", "-c", $"{mac},{tpp}", "--data", corpus, "--tokens", "300", "--repeats", "1", "--out", evalTable);
        Assert.True(eval.Code == 0, eval.Error + eval.Output);
        string text = File.ReadAllText(evalTable);
        Assert.Contains("| MAC | fused kernel |", text);
        Assert.Contains("| MAC | chunked (libtorch) |", text);
        // The same weights through either scan: the same bits per byte (the table's last column).
        var bits = text.Split('\n').Where(l => l.StartsWith("| MAC |")).Select(l => l.Split('|')[^2].Trim()).ToList();
        Assert.Equal(2, bits.Count);
        Assert.Equal(bits[0], bits[1]);

        string generateTable = Path.Combine(folder, "bench-generate.md");
        var generate = Titans("bench", "generate", "-c", $"{mac},{tpp}", "--data", corpus, "--contexts", "64,200", "--tokens", "4",
            "--full-attention-limit", "100", "--out", generateTable);
        Assert.True(generate.Code == 0, generate.Error + generate.Output);
        string timings = File.ReadAllText(generateTable);
        Assert.Matches(@"\| MAC \| [0-9.]+ \| [0-9.]+ \|", timings);
        Assert.Matches(@"\| Transformer\+\+ \| [0-9.]+ \| — \|", timings);        // past the limit: not run
        Assert.Contains("needs more", Titans("bench", "generate", "-c", mac, "--data", corpus, "--contexts", "100000000").Error);
    }
}
