using System.Buffers.Binary;
using Titans.Checkpoints;
using static TorchSharp.torch;

namespace Titans.Tests.Cli;

/// <summary>
/// The files the bad-input sweep points at, made once: good and bad corpora and configurations, a finished run, and
/// damaged copies of its checkpoint. Arguments name them as {corpus}, {run}, … (see <see cref="Expand"/>).
/// </summary>
public sealed class BadInputFiles : IDisposable
{
    public readonly string Folder = Directory.CreateTempSubdirectory("titans-bad-input-").FullName;
    readonly Dictionary<string, string> names = new();

    public BadInputFiles()
    {
        string Text(string name, string text) => names[name] = Write(name + ".txt", text);
        Text("corpus", string.Concat(Enumerable.Range(0, 300).Select(i => $"Line {i}: the whale is {(i % 5 == 0 ? "white" : "grey")}.\n")));
        Text("other", string.Concat(Enumerable.Range(0, 300).Select(i => $"Another text, line {i}.\n")));
        Text("empty", "  \n");
        Text("short", "too short for a sequence");
        names["latin1"] = Path.Combine(Folder, "latin1.txt");
        File.WriteAllBytes(names["latin1"], [(byte)'c', (byte)'a', (byte)'f', 0xE9, (byte)'\n']);
        names["truncated"] = Path.Combine(Folder, "truncated");
        Directory.CreateDirectory(names["truncated"]);
        File.WriteAllBytes(Path.Combine(names["truncated"], "checkpoint.safetensors"), [8, 0, 0, 0, 0, 0, 0, 0, (byte)'{']);
        names["file"] = Write("a-file", "not a folder");
        names["headeronly"] = Write("header-only.csv", "date,x\n");
        names["layerz"] = Write("layerz.json", """{"Architecture": "Lmm", "Layerz": 6}""");
        names["noarch"] = Write("no-architecture.json", "{}");
        names["nullmemory"] = Write("null-memory.json", """{"Architecture": "Mac", "Memory": null}""");
        names["memorytypo"] = Write("memory-typo.json", """{"Architecture": "Mac", "Memory": {"Deepth": 3}}""");
        names["memorydim"] = Write("memory-dim.json", """{"Architecture": "Lmm", "ModelDim": 128, "Memory": {"ModelDim": 64}}""");
        // Forecasting and classification inputs of the issue-31 sweep.
        string Series(Func<int, string> date, Func<int, double> value) =>
            "date,x\n" + string.Concat(Enumerable.Range(0, 300).Select(r => $"{date(r)},{value(r).ToString("R", System.Globalization.CultureInfo.InvariantCulture)}\n"));
        string Hour(int r) => $"{new DateTime(2020, 1, 1).AddHours(r):yyyy-MM-dd HH:mm:ss}";
        names["hello"] = Write("hello.csv", Series(r => r == 7 ? "hello" : Hour(r), r => Math.Sin(r)));
        names["reversed"] = Write("reversed.csv", Series(r => Hour(300 - r), r => Math.Sin(r)));
        names["outlier"] = Write("outlier.csv", Series(Hour, r => r == 290 ? 1e300 : Math.Sin(r)));
        string Labelled(int rows, Func<int, string> label) =>
            "seq\tlabel\n" + string.Concat(Enumerable.Range(0, rows).Select(r => $"{new string("ACGT"[r % 4], 8)}ACGT\t{label(r)}\n"));
        names["tenrows"] = Write("ten.tsv", Labelled(10, r => (r % 2).ToString()));
        names["manylabels"] = Write("many.tsv", Labelled(10_050, r => r.ToString()));
        names["labelled"] = Write("labelled.tsv", Labelled(60, r => (r % 2).ToString()));
        names["shared"] = Path.Combine(Folder, "shared");                  // a folder a user shares weights from
        Directory.CreateDirectory(names["shared"]);
        File.WriteAllText(Path.Combine(names["shared"], "config.json"), "{}");

        names["run"] = Path.Combine(Folder, "run");
        var train = TitansCli.Run("train", "--data", names["corpus"], "-a", "transformer++", "--steps", "1", "--batch-size", "2", "--seq-len", "16",
            "--eval-tokens", "64", "--out", names["run"]);
        if (train.Code != 0) throw new InvalidOperationException(train.Error + train.Output);
        string checkpoint = Path.Combine(names["run"], "checkpoint.safetensors");
        // A flipped bit inside tensor data, and a NaN saved as such (its checksum matches: only the value is wrong).
        names["damaged"] = Path.Combine(Folder, "damaged.safetensors");
        byte[] bytes = File.ReadAllBytes(checkpoint);
        bytes[8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes) + 100] ^= 0x04;
        File.WriteAllBytes(names["damaged"], bytes);
        names["nan"] = Path.Combine(Folder, "nan.safetensors");
        using (var content = SafeTensors.Load(checkpoint))
        {
            content["head.weight"][0, 0] = tensor(float.NaN);
            SafeTensors.Save(names["nan"], content.Tensors, content.Metadata);
        }
        names["folder"] = Folder;
    }

    string Write(string name, string text)
    {
        string path = Path.Combine(Folder, name);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>The arguments with every {name} replaced by its file.</summary>
    public string[] Expand(string[] arguments) =>
        arguments.Select(a => names.Aggregate(a, (text, n) => text.Replace("{" + n.Key + "}", n.Value))).ToArray();

    public string this[string name] => names[name];

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}

/// <summary>
/// The bad-input sweep, one case per row: each ends with exit code 2 and one line on standard error that says what is
/// wrong — never a stack trace, a hang, a native crash or silent garbage. A new way to fail gets a row here.
/// </summary>
public sealed class BadInputTests(BadInputFiles files) : IClassFixture<BadInputFiles>
{
    public static TheoryData<string[], string> Cases => new()
    {
        // Corpora
        { ["train", "--data", "{empty}", "--out", "{folder}/a"], "empty" },
        { ["train", "--data", "{latin1}", "--out", "{folder}/b"], "not UTF-8 text: invalid byte 0xE9 at offset 3" },
        { ["train", "--data", "{short}", "--seq-len", "64", "--out", "{folder}/c"], "sequence" },
        { ["train", "--data", "{folder}/missing.txt"], "No corpus" },
        { ["train", "--data", "/dev/zero", "--out", "{folder}/z"], "larger than 1 GiB (or endless" },
        { ["train", "--data", "{short}", "--seq-len", "8", "--stream-prefix", "4000", "--val-fraction", "0.5", "--out", "{folder}/m"], "Use a shorter prefix" },
        // Models and training settings
        { ["train", "--data", "{corpus}", "--preset", "huge", "--out", "{folder}/d"], "Unknown preset 'huge'" },
        { ["train", "--data", "{corpus}", "--tokenizer", "gpt2", "--out", "{folder}/e"], "Unknown tokenizer 'gpt2'" },
        { ["train", "--data", "{corpus}", "--mac-write", "output", "--out", "{folder}/i"], "Unknown MAC write 'output'" },
        { ["train", "--data", "{corpus}", "-a", "lmm", "--initial-forgetting", "1.5", "--out", "{folder}/j"], "must lie in (0, 1), got 1.5" },
        { ["train", "--data", "{corpus}", "--stream-prefix", "-5", "--out", "{folder}/k"], "StreamPrefix must not be negative, got -5" },
        { ["train", "--data", "{corpus}", "--stream-prefix", "100", "--stream-prefix-min", "200", "--out", "{folder}/n"], "MinStreamPrefix must lie in [0, StreamPrefix = 100], got 200" },
        { ["train", "--data", "{corpus}", "--initial-memory-decay", "-1", "--out", "{folder}/l"], "must not be negative, got -1" },
        { ["train", "--data", "{corpus}", "--memory", "{\"Retention\": true}", "--out", "{folder}/o"], "TitansConfig.Memory has no field 'Retention'" },
        { ["train", "--data", "{corpus}", "--memory", "{\"InnerGradientClip\": -1}", "--out", "{folder}/p"], "InnerGradientClip must be 0 (off)" },
        { ["train", "--data", "{corpus}", "--memory", "[1]", "--out", "{folder}/q"], "must be a JSON object" },
        { ["train", "--data", "{corpus}", "--threads", "0"], "--threads must be at least 1, got 0" },
        { ["train", "--data", "{corpus}", "--device", "tpu"], "Unknown device 'tpu'" },
        // --model-config
        { ["train", "--data", "{corpus}", "--model-config", "{layerz}", "--out", "{folder}/r"], "TitansConfig has no field 'Layerz'" },
        { ["train", "--data", "{corpus}", "--model-config", "{noarch}", "--out", "{folder}/r"], "must name its Architecture" },
        { ["train", "--data", "{corpus}", "--model-config", "{nullmemory}", "--out", "{folder}/r"], "TitansConfig.Memory must be a JSON object, got null" },
        { ["train", "--data", "{corpus}", "--model-config", "{memorytypo}", "--out", "{folder}/r"], "TitansConfig.Memory has no field 'Deepth'" },
        { ["train", "--data", "{corpus}", "--model-config", "{memorydim}", "--out", "{folder}/r"], "Memory.ModelDim is 64 but ModelDim is 128" },
        { ["train", "--data", "{corpus}", "--model-config", "{folder}", "--out", "{folder}/r"], "is a folder" },
        { ["train", "--data", "{corpus}", "--model-config", "{folder}/none.json", "--out", "{folder}/r"], "No model configuration at" },
        { ["train", "--data", "{corpus}", "--model-config", "{layerz}", "-a", "mac", "--out", "{folder}/r"], "--architecture cannot be given beside it" },
        // Run folders
        { ["train", "--data", "{corpus}", "--out", "{file}"], "is a file" },
        { ["train", "--data", "{corpus}", "--out", "/sys/titans-run"], "Cannot write into the run folder '/sys/titans-run'" },
        { ["train", "--data", "{corpus}", "--out", "{run}"], "already holds a checkpoint" },
        { ["train", "--data", "{corpus}", "--out", "{folder}"], "is not empty and holds no titans run" },
        { ["forecast", "train", "--data", "{outlier}", "--out", "{folder}"], "is not empty and holds no titans run" },
        { ["export", "-c", "{run}", "--out", "{shared}"], "already holds config.json; give another --out, or --force to replace them" },
        { ["quickstart", "--out", "{run}"], "holds a titans train run, not a quickstart run" },
        // Resuming keeps the run's settings and data
        { ["train", "--resume", "{run}", "--lr", "0.5"], "--lr cannot be given with it" },
        { ["train", "--resume", "{run}", "-a", "mac"], "--architecture cannot be given with it" },
        { ["train", "--resume", "{run}", "--data", "{other}", "--steps", "2"], "differs from the data" },
        { ["task", "train", "--resume", "{run}"], "is a `titans train` run; resume it with `titans train --resume`" },
        { ["dna", "pretrain", "--resume", "{run}"], "is a `titans train` run; resume it with `titans train --resume`" },
        // Checkpoints
        { ["eval", "-c", "{truncated}", "--data", "{corpus}"], "checkpoint.safetensors" },
        { ["eval", "-c", "{folder}/nowhere"], "No checkpoint" },
        { ["eval", "-c", "{damaged}", "--data", "{corpus}"], "is damaged: the SHA-256 of its tensor data" },
        { ["eval", "-c", "{nan}", "--data", "{corpus}"], "'head.weight' holds NaN or infinite values" },
        { ["generate", "-c", "{nan}", "-p", "a"], "'head.weight' holds NaN or infinite values" },
        { ["eval", "-c", "{run}", "--data", "{corpus}", "--max-context", "0"], "--max-context must be at least 1, got 0" },
        { ["eval", "-c", "{run}", "--data", "{corpus}", "--chunk", "0"], "chunk must be at least 1 token, got 0" },
        { ["dna", "eval", "-c", "{run}"], "needs a `dna pretrain` checkpoint" },
        // Generation: errors come before the prompt is echoed
        { ["generate", "-c", "{truncated}"], "--prompt" },
        { ["generate", "-c", "{truncated}", "-p", "a", "--prompt-file", "{corpus}"], "either --prompt or --prompt-file, not both" },
        { ["generate", "-c", "{truncated}", "--prompt-file", "{empty}"], "The prompt file" },
        { ["generate", "-c", "{truncated}", "--prompt-file", "{folder}/nowhere.txt"], "No prompt file at" },
        { ["generate", "-c", "{run}", "-p", "hi", "--top-p", "2"], "Top-p must lie in (0, 1], got 2" },
        { ["generate", "-c", "{run}", "-p", "hi", "--temperature", "-1"], "Temperature must be 0 (greedy) or positive" },
        { ["generate", "-c", "{run}", "-p", "hi", "-n", "-1"], "must not be negative, got -1" },
        { ["generate", "-c", "{run}", "-p", "hi", "--max-context", "0"], "--max-context must be at least 1, got 0" },
        // Tasks
        { ["task", "train", "--task", "needles", "--out", "{folder}/f"], "Unknown task 'needles'" },
        { ["task", "train", "--task", "passkey", "--length", "50", "--out", "{folder}/g"], "--seq-len 50 is too short" },
        { ["task", "train", "--task", "number", "--haystack", "{latin1}", "--out", "{folder}/h"], "not UTF-8 text" },
        { ["task", "eval", "-c", "{truncated}"], "checkpoint.safetensors" },
        { ["task", "show", "--task", "passkey", "--length", "5"], "5 is too short" },
        // Sizes, bounds and overflow: checked before anything is allocated
        { ["train", "--data", "{corpus}", "--set", "ModelDim=1000000000", "--out", "{folder}/s1"], "TitansConfig.ModelDim must lie in [1, 65,536], got 1000000000" },
        { ["train", "--data", "{corpus}", "--set", "ModelDim=16384", "--set", "Layers=3", "--out", "{folder}/s2"], "GiB; this machine (or its container) has" },
        { ["train", "--data", "{corpus}", "--set", "Layers=90000", "--out", "{folder}/s3"], "TitansConfig.Layers must lie in [1, 1,024], got 90000" },
        { ["train", "--data", "{corpus}", "--batch-size", "100000000", "--out", "{folder}/s4"], "× (SequenceLength + StreamPrefix) is 25,600,000,000 tokens per micro-batch" },
        { ["train", "--data", "{corpus}", "--memory", "{\"Expansion\": 100000}", "--out", "{folder}/s5"], "NeuralMemoryConfig.Expansion must lie in [1, 64], got 100000" },
        { ["generate", "-c", "{run}", "-p", "hi", "--temperature", "1e-310"], "Temperature must be 0 (greedy) or at least 0.001, got 1E-310" },
        // JSON: the user's own coordinates, never .NET's advice or positions in a document titans assembled
        { ["train", "--data", "{corpus}", "--memory", "{\"ChunkSize\": \"eight\"}", "--out", "{folder}/j1"], "TitansConfig.Memory.ChunkSize takes a whole number, got \"eight\"" },
        { ["train", "--data", "{corpus}", "--memory", "{\"ChunkSize\" 8}", "--out", "{folder}/j2"], "(line 1, character 14)" },
        { ["train", "--data", "{corpus}", "--set", "Memory.Activation=Tanh", "--out", "{folder}/j3"], "TitansConfig.Memory.Activation takes one of Gelu, Silu, got \"Tanh\"" },
        { ["train", "--data", "{corpus}", "--set", "Layers=two", "--out", "{folder}/j4"], "TitansConfig.Layers takes a whole number, got \"two\"" },
        // Forecasting, benchmarks, listings
        { ["forecast", "train", "--data", "{headeronly}"], "has a header but no data rows" },
        { ["forecast", "train", "--data", "{hello}", "--out", "{folder}/f1"], "line 9: the date column holds 'hello', which is not a date and time" },
        { ["forecast", "train", "--data", "{reversed}", "--out", "{folder}/f2"], "rows must run oldest first" },
        { ["forecast", "train", "--data", "{outlier}", "--models", "naive", "--horizons", "4", "--out", "{folder}/f3"], "row 291 of column 'x' holds 1E+300" },
        { ["forecast", "train", "--data", "{outlier}", "--models", "nonsense", "--out", "{folder}/f4"], "'nonsense' is not a forecasting model; use naive, dlinear, patchtst, lmm, mac, mag or mal" },
        { ["dna", "classify", "--data", "{tenrows}", "--models", "cnn", "--out", "{folder}/c1"], "leaves 0 for validation" },
        { ["dna", "classify", "--data", "{manylabels}", "--models", "cnn", "--out", "{folder}/c2"], "has 10,050 distinct labels; a classifier here takes at most 10,000 classes" },
        { ["dna", "classify", "--data", "{labelled}", "--pretrained", "{run}", "--out", "{folder}/c3"], "fine-tuning needs a `dna pretrain` checkpoint" },
        { ["forecast", "train", "--data", "{headeronly}", "--loss", "1"], "--loss must be mse, mae, huber, got '1'" },
        { ["bench", "stability", "--variants", "paper,strong"], "Unknown variant 'strong'" },
        { ["bench", "lm", "--data", "{corpus}", "--memory", "{\"Depth\": 0}"], "Depth" },
        { ["bench", "lm", "--steps", "0"], "TrainingConfig.Steps must be at least 1, got 0" },
        { ["models", "--preset", "nope"], "Unknown preset 'nope'" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EndsWithAOneLineError(string[] arguments, string expected)
    {
        var (code, output, error) = TitansCli.Run(files.Expand(arguments));
        Assert.True(code == 2, $"{string.Join(' ', arguments)} → exit {code}: {error}{output}");
        Assert.Contains(expected, error);
        Assert.Single(error.Trim().Split('\n'));
        if (arguments[0] == "generate") Assert.Equal("", output);   // the prompt is echoed only once generation can start
    }

    [Fact]
    public void ASecondWriterOfARunFolderIsRefused()
    {
        string run = files["run"];
        using (new FileStream(Path.Combine(run, "run.lock"), FileMode.Open, FileAccess.ReadWrite, FileShare.None))
        {
            var second = TitansCli.Run("train", "--resume", run, "--steps", "2");
            Assert.Equal(2, second.Code);
            Assert.Contains($"Another process is writing into the run folder '{run}'", second.Error);
        }
        int lines = File.ReadLines(Path.Combine(run, "metrics.jsonl")).Count();
        // Once the writer is gone the run continues, and temporary files a killed save left are removed.
        string leftover = Titans.Runtime.AtomicFile.TemporaryName(Path.Combine(run, "checkpoint.safetensors"));
        File.WriteAllBytes(leftover, new byte[4096]);
        var resumed = TitansCli.Run("train", "--resume", run, "--steps", "2");
        Assert.True(resumed.Code == 0, resumed.Error + resumed.Output);
        Assert.Contains("Removed 1 temporary file(s)", resumed.Output);
        Assert.False(File.Exists(leftover));
        Assert.True(File.ReadLines(Path.Combine(run, "metrics.jsonl")).Count() > lines);
    }
}
