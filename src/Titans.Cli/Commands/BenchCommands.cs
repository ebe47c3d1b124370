using System.CommandLine;
using Titans.Cli.Benchmarks;
using Titans.Memory;
using Titans.Models;
using Titans.Tasks.LongContext;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>`titans bench ...`: measurements that print numbers and write result tables under docs/.</summary>
public static class BenchCommands
{
    public static Command Create()
    {
        var bench = new Command("bench", "Benchmarks: tokens/s, GFLOP/s against the matmul ceiling, peak memory.");
        bench.Subcommands.Add(MemoryBench());
        bench.Subcommands.Add(KernelBench());
        bench.Subcommands.Add(StreamBench());
        bench.Subcommands.Add(EvalBench());
        bench.Subcommands.Add(GenerateBench());
        bench.Subcommands.Add(ThroughputBench());
        bench.Subcommands.Add(LanguageModelBench());
        bench.Subcommands.Add(TaskBench());
        bench.Subcommands.Add(StabilityBench());
        bench.Subcommands.Add(ConcurrencyBench());
        bench.Subcommands.Add(DataParallelBench());
        return bench;
    }

    static Command KernelBench()
    {
        var repeats = new Option<int>("--repeats") { Description = "rounds, every contender once per round (medians reported)", DefaultValueFactory = _ => 15 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here" };
        var command = new Command("kernel", "The fused memory kernel's building blocks timed alone: its products, transposes and element-wise passes.")
            { repeats, output };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            KernelBenchmark.Run(parse.GetValue(repeats), parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command DataParallelBench()
    {
        var processes = new Option<int>("--processes") { Description = "ranks of the mpirun job", DefaultValueFactory = _ => 2 };
        var steps = new Option<int>("--steps") { Description = "optimizer steps per run", DefaultValueFactory = _ => 60 };
        var repeats = new Option<int>("--repeats") { Description = "runs of each (medians reported)", DefaultValueFactory = _ => 2 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/distributed/bench.md)" };
        var command = new Command("data-parallel",
            "Training tokens/s of one process against N under mpirun (one thread each), with the all-reduce's time and bytes per step.")
            { processes, steps, repeats, output };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            DataParallelBenchmark.Run(parse.GetValue(processes), parse.GetValue(steps), parse.GetValue(repeats), parse.GetValue(output),
                CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command ConcurrencyBench()
    {
        var processes = new Option<int>("--processes") { Description = "workers run at once", DefaultValueFactory = _ => 2 };
        var preset = new Option<string>("--preset") { Description = "size of the MAC each worker trains", DefaultValueFactory = _ => "tiny" };
        var seconds = new Option<double>("--seconds") { Description = "seconds each worker trains", DefaultValueFactory = _ => 20 };
        var rounds = new Option<int>("--rounds") { Description = "rounds over the settings (medians reported)", DefaultValueFactory = _ => 3 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/concurrency/results.md)" };
        var worker = new Option<bool>("--worker") { Description = "run as one worker (the benchmark starts these)", Hidden = true };
        var command = new Command("concurrency",
            "Tokens/s a training process keeps beside others on the same cores, per thread setting and OpenMP wait policy.")
            { preset, processes, seconds, rounds, output, worker };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            if (parse.GetValue(worker)) ConcurrencyBenchmark.Work(parse.GetValue(preset)!, parse.GetValue(seconds));
            else ConcurrencyBenchmark.Run(parse.GetValue(preset)!, parse.GetValue(processes), parse.GetValue(seconds), parse.GetValue(rounds),
                parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command ThroughputBench()
    {
        var preset = new Option<string>("--preset") { Description = "model size (tiny, small, ...)", DefaultValueFactory = _ => "small" };
        var layers = new Option<int?>("--layers") { Description = "override the preset's layer count (sizes stay balanced)" };
        var lengths = new Option<string>("--lengths") { Description = "comma-separated sequence lengths", DefaultValueFactory = _ => "1024,2048,4096,8192,16384,32768" };
        var depths = new Option<string>("--lmm-depths") { Description = "extra LMM rows at these memory depths", DefaultValueFactory = _ => "1,2,3,4" };
        var repeats = new Option<int>("--repeats") { Description = "timed steps per cell (median reported)", DefaultValueFactory = _ => 3 };
        var budget = new Option<double>("--budget") { Description = "seconds per step beyond which longer lengths are skipped", DefaultValueFactory = _ => 90 };
        var limit = new Option<double>("--memory-limit") { Description = "GiB of RSS beyond which longer lengths are skipped (default: 70% of RAM)" };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/bench-throughput.md)" };
        var plot = new Option<string?>("--plot") { Description = "write a PNG plot here (e.g. docs/bench-throughput.png)" };
        var architectures = new Option<string?>("--architectures") { Description = "comma-separated architectures to measure (default: all)" };
        var memoryPatch = new Option<string?>("--memory") { Description = "JSON fields set over every model's memory, e.g. '{\"RecomputeGroup\": 16}'" };
        var command = new Command("throughput",
            "Training tokens/s and peak memory of every architecture at equal parameter count over sequence lengths, and LMM over memory depths.")
            { preset, layers, lengths, depths, repeats, budget, limit, architectures, memoryPatch, output, plot };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            double memoryLimit = parse.GetValue(limit) is double gib and > 0 ? gib
                : 0.7 * GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1024.0 * 1024 * 1024);
            var options = new ThroughputBenchmark.Options(parse.GetValue(preset)!, parse.GetValue(layers),
                Lists.PositiveIntegers(parse.GetValue(lengths), "--lengths"), Lists.PositiveIntegers(parse.GetValue(depths), "--lmm-depths"),
                parse.GetValue(repeats), parse.GetValue(budget), memoryLimit, device,
                parse.GetValue(architectures) is string a ? Lists.Architectures(a, "--architectures").ToList() : null,
                parse.GetValue(memoryPatch));
            if (options.MemoryPatch is not null) Presets.Get(options.Preset, Architecture.Lmm).WithMemory(options.MemoryPatch);   // a bad patch fails before any timing
            ThroughputBenchmark.Run(options, parse.GetValue(output), parse.GetValue(plot), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command LanguageModelBench()
    {
        var optimizer = new OptimizerOptions(new TrainingConfig { Steps = 1500, BatchSize = 8, Seed = 1 }, "optimizer steps per model", "sequences per micro-batch");
        var data = new Option<string>("--data") { Description = "UTF-8 text file or folder (SOTU: run scripts/fetch-corpora.sh sotu first)", DefaultValueFactory = _ => Path.Combine("data", "sotu") };
        var preset = new Option<string>("--preset") { Description = "model size, the same for every architecture", DefaultValueFactory = _ => "tiny" };
        var architectures = new Option<string>("--architectures") { Description = "comma-separated architectures", DefaultValueFactory = _ => "lmm,mac,mag,mal,transformer++,swa" };
        var length = new Option<int>("--seq-len") { Description = "tokens per training sequence", DefaultValueFactory = _ => 256 };
        var evalTokens = new Option<int>("--eval-tokens") { Description = "held-out tokens of the final score", DefaultValueFactory = _ => 262144 };
        var evalEvery = new Option<int>("--eval-every") { Description = "steps between validations during training (on up to 64K tokens)", DefaultValueFactory = _ => 250 };
        var runs = new Option<string>("--runs") { Description = "folder of the runs (one per architecture)", DefaultValueFactory = _ => Path.Combine("runs", "bench-lm") };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/bench-lm-sotu.md)" };
        var shared = new SharedTrainingOptions();
        var macWrite = TrainingOptions.MacWriteOption();
        var plot = new Option<string?>("--plot") { Description = "write the loss curves here (e.g. docs/bench-lm-sotu.png; validation curves go beside it)" };
        var lmForce = CommonOptions.Force();
        var command = new Command("lm",
            "Train every architecture at equal parameter count on the same tokens and compare validation bits per byte (table and loss curves).")
            { data, preset, architectures, macWrite, length, evalTokens, evalEvery, runs, lmForce, output, plot };
        foreach (var option in optimizer.All.Concat(shared.All)) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var training = shared.Apply(parse, optimizer.Apply(parse, new TrainingConfig { SequenceLength = parse.GetValue(length) })).Validate();
            var chosen = Lists.Architectures(parse.GetValue(architectures), "--architectures").ToList();
            if (parse.GetValue(evalEvery) < 1) throw new ArgumentException($"--eval-every must be at least 1, got {parse.GetValue(evalEvery)}.");
            Presets.Get(parse.GetValue(preset)!, Architecture.Mac).WithMemory(parse.GetValue(shared.Memory));   // an unknown preset or bad --memory fails before any training
            var options = new LanguageModelBenchmark.Options
            {
                Corpus = parse.GetValue(data)!, Models = Compared(parse, preset, chosen, macWrite, shared), Training = training,
                EvalTokens = parse.GetValue(evalTokens), EvalEvery = parse.GetValue(evalEvery), RunsDirectory = parse.GetValue(runs)!, Force = parse.GetValue(lmForce),
            };
            LanguageModelBenchmark.Run(options, parse.GetValue(output), parse.GetValue(plot), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command TaskBench()
    {
        var task = new Option<string>("--task", "-t") { Description = string.Join(", ", LongContextTasks.Names), DefaultValueFactory = _ => "passkey" };
        var haystack = new Option<string>("--haystack") { Description = "real text for the needles (default: Moby Dick, shipped)", DefaultValueFactory = _ => LanguageModelCommands.DefaultCorpus };
        var preset = new Option<string>("--preset") { Description = "model size, the same for every architecture", DefaultValueFactory = _ => "tiny" };
        var architectures = new Option<string>("--architectures") { Description = "comma-separated architectures", DefaultValueFactory = _ => "lmm,mac,mag,mal,transformer++,swa" };
        var optimizer = new OptimizerOptions(new TrainingConfig { Steps = 800, BatchSize = 16, Seed = 1, WarmupSteps = 50 }, "optimizer steps per model",
            "examples per micro-batch", warmup: "linear warmup steps (default: 50, or the steps when fewer; then cosine decay to 10% of the peak)");
        var length = new Option<int>("--seq-len", "--length") { Description = "training length L (tokens)", DefaultValueFactory = _ => 128 };
        var factors = new Option<string>("--factors") { Description = "test lengths as multiples of L", DefaultValueFactory = _ => "1,2,4,8,16" };
        var depths = new Option<int>("--depths") { Description = "needle depths, spread evenly over 0–100%", DefaultValueFactory = _ => 5 };
        var examples = new Option<int>("--examples") { Description = "examples per (length, depth) cell", DefaultValueFactory = _ => 20 };
        var evalEvery = new Option<int>("--eval-every") { Description = "steps between validations during training", DefaultValueFactory = _ => 200 };
        var runs = new Option<string?>("--runs") { Description = "folder of the runs (default: runs/bench-tasks-<task>-<L>)" };
        var macWrite = TrainingOptions.MacWriteOption();
        var shared = new SharedTrainingOptions();
        var initFrom = new Option<string?>("--init-from")
        {
            Description = "fine-tune: start each architecture from its finished run in this runs folder (e.g. an earlier bench's --runs), keeping its model",
        };
        var output = new Option<string?>("--out") { Description = "write the table here (e.g. docs/bench-tasks-passkey.md; heat maps go in a folder beside it)" };
        var taskForce = CommonOptions.Force();
        var command = new Command("tasks",
            "Train every architecture on a long-context task at length L and score each at L … 16L over needle depths (table, heat maps, plot).")
            { task, haystack, preset, architectures, macWrite, initFrom, length, factors, depths, examples, evalEvery, runs, taskForce, output };
        foreach (var option in optimizer.All.Concat(shared.All)) command.Options.Add(option);
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var training = shared.Apply(parse, optimizer.Apply(parse, new TrainingConfig { SequenceLength = parse.GetValue(length) }));
            if (parse.GetResult(optimizer.Warmup) is null or { Implicit: true }) training = training with { WarmupSteps = Math.Min(training.WarmupSteps, training.Steps) };
            training = training.Validate();
            var chosen = Lists.Architectures(parse.GetValue(architectures), "--architectures").ToList();
            Presets.Get(parse.GetValue(preset)!, Architecture.Mac).WithMemory(parse.GetValue(shared.Memory));   // an unknown preset or bad --memory fails before any training
            string name = parse.GetValue(task)!;
            var options = new TaskBenchmark.Options
            {
                Task = name, Haystack = parse.GetValue(haystack)!, Models = Compared(parse, preset, chosen, macWrite, shared), Training = training, Factors = Lists.NonEmpty(Lists.PositiveIntegers(parse.GetValue(factors), "--factors"), "--factors"),
                Depths = TrainingOptions.Positive(parse, depths), Examples = TrainingOptions.Positive(parse, examples), EvalEvery = TrainingOptions.Positive(parse, evalEvery),
                RunsDirectory = parse.GetValue(runs) ?? Path.Combine("runs", $"bench-tasks-{name}-{training.SequenceLength}"), Force = parse.GetValue(taskForce),
                InitFrom = parse.GetValue(initFrom),
            };
            TaskBenchmark.Run(options, parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    /// <summary>The models a comparison's options describe.</summary>
    static ComparedModels Compared(ParseResult parse, Option<string> preset, IReadOnlyList<Architecture> architectures, Option<string> macWrite,
        SharedTrainingOptions shared) => new()
    {
        Preset = parse.GetValue(preset)!, Architectures = architectures, MacWrite = ArchitectureNames.ParseMacWrite(parse.GetValue(macWrite)!),
        InitialForgetting = parse.GetValue(shared.InitialForgetting), MemoryPatch = parse.GetValue(shared.Memory),
    };

    static Command MemoryBench()
    {
        var quick = new Option<bool>("--quick") { Description = "reduced grid, under a minute" };
        var width = new Option<int>("--width") { Description = "model width d", DefaultValueFactory = _ => 512 };
        var heads = new Option<int>("--heads") { Description = "memory heads", DefaultValueFactory = _ => 8 };
        var repeats = new Option<int>("--repeats") { Description = "timed runs per cell (median reported)", DefaultValueFactory = _ => 3 };
        var group = new Option<int>("--recompute-group") { Description = "chunks per recomputed group for the lean backward's columns (0: leave them out)", DefaultValueFactory = _ => 16 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/bench-memory.md)" };
        var command = new Command("memory", "Forward and forward+backward speed of the neural memory over lengths, chunk sizes and depths; ops per chunk.")
            { quick, width, heads, repeats, group, output };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            var options = new MemoryBenchmark.Options(parse.GetValue(quick), parse.GetValue(width), parse.GetValue(heads),
                parse.GetValue(repeats), device, parse.GetValue(group));
            MemoryBenchmark.Run(options, parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command EvalBench()
    {
        var checkpoints = new Option<string>("--checkpoints", "-c") { Description = "comma-separated run folders or checkpoint files", Required = true };
        var text = new Option<string>("--data") { Description = "UTF-8 text to stream (file or folder of *.txt)", Required = true };
        var tokens = new Option<int>("--tokens") { Description = "stream the first this many tokens of it", DefaultValueFactory = _ => 120_000 };
        var chunk = new Option<int>("--chunk") { Description = "tokens per forward pass", DefaultValueFactory = _ => 128 };
        var repeats = new Option<int>("--repeats") { Description = "rounds, every variant once per round (medians reported)", DefaultValueFactory = _ => 3 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here" };
        var command = new Command("eval",
            "How fast checkpoints stream a text as eval does: each memory model with the fused kernel and with the chunked scan, alternated.")
            { checkpoints, text, tokens, chunk, repeats, output };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var files = Lists.NonEmpty(Lists.Items(parse.GetValue(checkpoints)), "--checkpoints").Select(TrainingOptions.CheckpointPath).ToList();
            EvalBenchmark.Run(new EvalBenchmark.Options(files, parse.GetValue(text)!, TrainingOptions.Positive(parse, tokens), TrainingOptions.Positive(parse, chunk),
                TrainingOptions.Positive(parse, repeats)), parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command GenerateBench()
    {
        var checkpoints = new Option<string>("--checkpoints", "-c") { Description = "comma-separated run folders or checkpoint files", Required = true };
        var text = new Option<string>("--data") { Description = "UTF-8 text whose first tokens are the context (file or folder of *.txt)", Required = true };
        var contexts = new Option<string>("--contexts") { Description = "comma-separated context lengths in tokens", DefaultValueFactory = _ => "1024,8192,16384,102400" };
        var tokens = new Option<int>("--tokens") { Description = "tokens generated (and timed) after each context", DefaultValueFactory = _ => 64 };
        var limit = new Option<int?>("--full-attention-limit") { Description = "Transformer++ is not run past this context", DefaultValueFactory = _ => 16384 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here" };
        var command = new Command("generate", "Time per generated token after contexts of growing length, for each checkpoint.")
            { checkpoints, text, contexts, tokens, limit, output };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var files = Lists.NonEmpty(Lists.Items(parse.GetValue(checkpoints)), "--checkpoints").Select(TrainingOptions.CheckpointPath).ToList();
            GenerateBenchmark.Run(new GenerateBenchmark.Options(files, parse.GetValue(text)!,
                Lists.NonEmpty(Lists.PositiveIntegers(parse.GetValue(contexts), "--contexts"), "--contexts"), TrainingOptions.Positive(parse, tokens),
                parse.GetValue(limit)), parse.GetValue(output), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command StreamBench()
    {
        var tokens = new Option<long>("--tokens") { Description = "tokens to stream", DefaultValueFactory = _ => 1_000_000 };
        var piece = new Option<int>("--piece") { Description = "tokens per call", DefaultValueFactory = _ => 2048 };
        var width = new Option<int>("--width") { Description = "model width d", DefaultValueFactory = _ => 128 };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/bench-stream.md)" };
        var command = new Command("stream", "Stream a long sequence through a small memory in pieces: tokens/s, RSS, finiteness.")
            { tokens, piece, width, output };
        command.SetAction(parse => CommonOptions.Run(parse, device =>
        {
            StreamBenchmark.Run(parse.GetValue(tokens), parse.GetValue(piece), parse.GetValue(width), device, parse.GetValue(output),
                CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }

    static Command StabilityBench()
    {
        var quick = new Option<bool>("--quick") { Description = "tiny memory only, lengths to 4K, streams to 64K tokens, one seed: under 2 minutes" };
        var data = new Option<string>("--data") { Description = "UTF-8 text read as bytes (default: Moby Dick, shipped)", DefaultValueFactory = _ => LanguageModelCommands.DefaultCorpus };
        var presets = new Option<string?>("--presets") { Description = "comma-separated presets whose memory to measure (default: tiny,small; wider ones are cut to 2 heads)" };
        var variants = new Option<string?>("--variants") { Description = $"comma-separated variants (default: all of {string.Join(", ", StabilityBenchmark.Variants.Select(v => v.Name))})" };
        var lengths = new Option<string?>("--lengths") { Description = "outer-gradient lengths (default: 256,1024,4096,16384)" };
        var points = new Option<string?>("--points") { Description = "stream points in tokens (default: 1K … 1M)" };
        var seeds = new Option<int?>("--seeds") { Description = "initializations per outer-gradient cell, median reported (default: 3)" };
        var tracePreset = new Option<string?>("--trace-preset") { Description = "preset whose memory is streamed (default: tiny)" };
        var memoryPatch = new Option<string?>("--memory") { Description = "JSON fields set over every preset's memory before the variants, e.g. '{\"InitialInnerLearningRate\": 0.01}'" };
        var output = new Option<string?>("--out") { Description = "write a markdown table here (e.g. docs/memory-stability/bench.md)" };
        var plot = new Option<string?>("--plot") { Description = "write the plot of the outer gradient against length here (PNG; the state along the stream goes beside it, -state.png)" };
        var command = new Command("stability",
            "Outer-gradient norm against length and the memory's state along a long real-text stream, for the paper's memory and each stabilizer.")
            { quick, data, presets, variants, lengths, points, seeds, tracePreset, memoryPatch, output, plot };
        command.SetAction(parse => CommonOptions.Run(parse, _ =>
        {
            var options = StabilityBenchmark.Defaults(parse.GetValue(quick), parse.GetValue(data)!);
            if (parse.GetValue(presets) is string p)
            {
                var names = Lists.Items(p).ToArray();
                foreach (var name in names) Presets.Get(name, Architecture.Lmm);   // unknown presets fail first
                options = options with { Presets = names };
            }
            if (parse.GetValue(variants) is string v)
                options = options with
                {
                    Variants = Lists.Items(v).Select(name =>
                        StabilityBenchmark.Variants.FirstOrDefault(x => x.Name == name) ?? throw new ArgumentException(
                            $"Unknown variant '{name}'; the variants are {string.Join(", ", StabilityBenchmark.Variants.Select(x => x.Name))}.")).ToList(),
                };
            if (parse.GetValue(lengths) is string l) options = options with { Lengths = Lists.PositiveIntegers(l, "--lengths") };
            if (parse.GetValue(points) is string pts) options = options with { Points = Lists.PositiveIntegers(pts, "--points").Select(x => (long)x).ToList() };
            if (parse.GetValue(seeds) is int s)
                options = options with { Seeds = s >= 1 ? s : throw new ArgumentException($"--seeds must be at least 1, got {s}.") };
            if (parse.GetValue(tracePreset) is string t)
            {
                Presets.Get(t, Architecture.Lmm);
                options = options with { TracePreset = t };
            }
            if (parse.GetValue(memoryPatch) is string patch)
            {
                NeuralMemoryConfig.Patch(new NeuralMemoryConfig(), patch);   // a bad patch fails before any work
                options = options with { MemoryPatch = patch };
            }
            if (options.Lengths.Count == 0 || options.Points.Count == 0 || options.Variants.Count == 0 || options.Presets.Count == 0)
                throw new ArgumentException("--lengths, --points, --variants and --presets must each name at least one.");
            StabilityBenchmark.Run(options, parse.GetValue(output), parse.GetValue(plot), CommonOptions.CommandLine(parse));
            return 0;
        }));
        return command;
    }
}
