using Titans.Checkpoints;
using Titans.Generation;
using Titans.Models;
using Titans.Text;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tests.Training;

/// <summary>Training, checkpoints, resuming, evaluation and sampling on a small byte-level corpus.</summary>
public class TrainingTests : IDisposable
{
    readonly string folder = Directory.CreateTempSubdirectory("titans-training-").FullName;
    public void Dispose() => Directory.Delete(folder, recursive: true);

    static readonly string Text = string.Concat(Enumerable.Range(0, 400).Select(i => $"line {i}: the whale is {(i % 7 == 0 ? "white" : "grey")}.\n"));

    static TitansConfig SmallConfig(Architecture architecture) => Presets.Get("tiny", architecture) with
    {
        ModelDim = 32, Heads = 2, Layers = 2, Window = 8, SegmentLength = 8, PersistentTokens = 2, FeedForwardDim = 48,
        Memory = Presets.Get("tiny", architecture).Memory with { ChunkSize = 4 },
    };

    static TrainingConfig Training => new() { Steps = 6, BatchSize = 3, AccumulationSteps = 2, SequenceLength = 16, WarmupSteps = 2, LearningRate = 3e-3 };

    static TokenData Data(TrainingConfig config) => new(ByteTokenizer.Instance.Encode(Text), config.ValidationFraction, config.SequenceLength);

    static Trainer NewTrainer(Architecture architecture, double? initialMemoryDecay = null, int streamPrefix = 0)
    {
        manual_seed(3);
        var training = Training with { InitialMemoryWeightDecay = initialMemoryDecay, StreamPrefix = streamPrefix };
        return new Trainer(new TitansLanguageModel("model", SmallConfig(architecture)), training, Data(training));
    }

    [Theory]
    [InlineData(Architecture.Mac, null, 0)]
    [InlineData(Architecture.TransformerPlusPlus, null, 0)]
    [InlineData(Architecture.Mag, null, 0)]
    [InlineData(Architecture.Lmm, 0.0, 24)]
    public void ResumingContinuesBitForBit(Architecture architecture, double? initialMemoryDecay, int streamPrefix)
    {
        using var straight = NewTrainer(architecture, initialMemoryDecay, streamPrefix);
        var straightLosses = Enumerable.Range(0, 6).Select(_ => straight.TrainStep().Loss).ToList();

        string path = Path.Combine(folder, "checkpoint.safetensors");
        using (var first = NewTrainer(architecture, initialMemoryDecay, streamPrefix))
        {
            for (int i = 0; i < 3; i++) first.TrainStep();
            Checkpoint.Save(path, first, ByteTokenizer.Instance);
            first.Model.Dispose();
        }
        // On an explicit device (the CLI's --device; the CPU here): the model moves before the optimizer takes its parameters.
        var (resumed, header) = Checkpoint.Resume(path, _ => Data(Training), device: CPU);
        using (resumed)
        {
            Assert.Equal(3, header.Step);
            var resumedLosses = Enumerable.Range(0, 3).Select(_ => resumed.TrainStep().Loss).ToList();
            Assert.Equal(straightLosses.Skip(3), resumedLosses);
            foreach (var ((name, a), (_, b)) in straight.Model.named_parameters().Zip(resumed.Model.named_parameters()))
                Assert.True(a.eq(b).all().item<bool>(), $"{architecture}: {name} differs after resuming");
            resumed.Model.Dispose();
        }
        straight.Model.Dispose();
    }

    [Fact]
    public void AStepReportsTheParametersWithTheLargestGradients()
    {
        manual_seed(3);
        var training = Training with { GradientClip = 0 };                    // unclipped: the gradients stay as reported
        using var trainer = new Trainer(new TitansLanguageModel("model", SmallConfig(Architecture.Mal)), training, Data(training));
        var step = trainer.TrainStep();
        var norms = trainer.Model.named_parameters().Where(p => p.parameter.grad is not null)
            .Select(p => (p.name, Norm: p.parameter.grad!.to(ScalarType.Float64).norm().item<double>())).OrderByDescending(p => p.Norm).ToList();

        Assert.Equal(3, step.LargestGradients.Count);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(norms[i].name, step.LargestGradients[i].Parameter);
            Assert.Equal(norms[i].Norm, step.LargestGradients[i].Norm, 1e-9);
        }
        Assert.Equal(Math.Sqrt(norms.Sum(n => n.Norm * n.Norm)), step.GradientNorm, 1e-9);
        trainer.Model.Dispose();
    }

    [Fact]
    public void TheMemoriesInitialWeightsTakeTheirOwnWeightDecay()
    {
        // AdamW's decay is decoupled: p ← p·(1 − lr·λ) − lr·adam(g). One step from the same weights on the same batch
        // differs between λ_W₀ = 0 and the shared λ by exactly lr·λ·W₀ on every W₀, and by nothing elsewhere.
        using var shared = NewTrainer(Architecture.Mag);
        using var own = NewTrainer(Architecture.Mag, initialMemoryDecay: 0.0);
        var before = shared.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        shared.TrainStep();
        var step = own.TrainStep();
        int initialWeights = 0;
        foreach (var ((name, a), (_, b)) in shared.Model.named_parameters().Zip(own.Model.named_parameters()))
        {
            if (Titans.Memory.NeuralMemory.IsInitialWeight(name))
            {
                initialWeights++;
                var expected = before[name] * (step.LearningRate * Training.WeightDecay);
                TestTensors.AssertClose(expected.to(ScalarType.Float64), (b - a).to(ScalarType.Float64), 1e-6, name);
            }
            else Assert.True(a.eq(b).all().item<bool>(), $"{name} should not depend on the memories' W₀ decay");
        }
        int memories = own.Model.modules().OfType<Titans.Memory.NeuralMemory>().Count();
        Assert.True(memories > 0);
        Assert.Equal(memories * SmallConfig(Architecture.Mag).Memory.Depth, initialWeights);
        foreach (var t in before.Values) t.Dispose();
        shared.Model.Dispose();
        own.Model.Dispose();
    }

    [Theory]
    [InlineData(Architecture.Mag)]
    [InlineData(Architecture.Mac)]
    [InlineData(Architecture.TransformerPlusPlus)]
    public void WeightDecaySparesExactlyTheNamedParameters(Architecture architecture)
    {
        // One step with λ = 0.1 against λ = 0 from the same weights on the same batch: a decayed parameter differs by
        // exactly lr·λ·p, an exempt one not at all. Exempt are the norms' gains, the memory's LayerNorm gain and bias,
        // its gate biases and its convolution taps, whatever their rank.
        manual_seed(3);
        using var decayed = new Trainer(new TitansLanguageModel("model", SmallConfig(architecture)), Training, Data(Training));
        manual_seed(3);
        using var plain = new Trainer(new TitansLanguageModel("model", SmallConfig(architecture)), Training with { WeightDecay = 0 }, Data(Training));
        var before = decayed.Model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var step = decayed.TrainStep();
        plain.TrainStep();
        var exempt = new List<string>();
        foreach (var ((name, a), (_, b)) in decayed.Model.named_parameters().Zip(plain.Model.named_parameters()))
        {
            if (WeightDecay.IsExempt(name))
            {
                exempt.Add(name);
                Assert.True(a.eq(b).all().item<bool>(), $"{name} must not be decayed");
            }
            else
                TestTensors.AssertClose((before[name] * (step.LearningRate * Training.WeightDecay)).to(ScalarType.Float64),
                    (b - a).to(ScalarType.Float64), 1e-6, $"{name} must be decayed");
        }
        string[] kinds = exempt.Select(n => n.Split('.')[^1] == "weight" ? n.Split('.')[^2] : n.Split('.')[^1])
            .Select(k => k.EndsWith("norm") ? "norm" : k).Distinct().Order().ToArray();
        string[] expected = architecture == Architecture.TransformerPlusPlus
            ? new[] { "norm" }
            : new[] { "gate_bias", "ln_bias", "ln_weight", "norm", "qkv_conv" };
        Assert.Equal(expected, kinds);
        Assert.Contains(exempt, n => before[n].dim() >= 2 || architecture == Architecture.TransformerPlusPlus); // not a rule by rank
        foreach (var t in before.Values) t.Dispose();
        decayed.Model.Dispose();
        plain.Model.Dispose();
    }

    [Theory]
    [InlineData(Architecture.Mac)]
    [InlineData(Architecture.Lmm)]
    public void AStreamPrefixIsTheTextBeforeTheSequenceAndTheLossIsTheStreamsLoss(Architecture architecture)
    {
        // The prefix is the corpus right before each window; the step's loss is the model's loss on the window when it
        // has read the prefix first (here in one pass over both), not the loss of the window alone.
        const int prefix = 24;
        using var trainer = NewTrainer(architecture, streamPrefix: prefix);
        var data = (TokenData)trainer.Data;
        int drawn = BatchSeed.PrefixLength(Training.Seed, 0, 0, prefix);
        Assert.InRange(drawn, 1, prefix); // this seed's first micro-batch has a prefix
        double expected, alone;
        using (var batch = data.Batch(Training.Seed, 0, 0, Training.BatchSize, Training.SequenceLength, drawn))
        using (no_grad())
        {
            Assert.Equal(new long[] { Training.BatchSize, drawn }, batch.Prefix!.shape);
            for (int b = 0; b < Training.BatchSize; b++)
            {
                long[] stream = batch.Prefix[b].data<long>().Concat(batch.Tokens[b].data<long>()).ToArray();
                int start = Enumerable.Range(0, data.Train.Length - stream.Length + 1).First(i => data.Train.AsSpan(i, stream.Length).SequenceEqual(stream));
                Assert.Equal(data.Train[start + stream.Length], batch.Targets[b, -1].item<long>());
            }
            using var whole = cat(new[] { batch.Prefix, batch.Tokens }, 1);
            expected = batch.Loss(trainer.Model.forward(whole).narrow(1, drawn, Training.SequenceLength)).item<float>();
            alone = batch.Loss(trainer.Model.forward(batch.Tokens)).item<float>();
        }
        var perMicro = Enumerable.Range(0, Training.AccumulationSteps)
            .Select(micro => LossAfterPrefix(trainer, data, micro, BatchSeed.PrefixLength(Training.Seed, 0, micro, prefix))).ToList();
        Assert.True(Math.Abs(expected - alone) > 1e-5, $"the prefix changed nothing ({expected} against {alone} alone)");
        Assert.Equal(perMicro.Average(), trainer.TrainStep().Loss, 4);
        Assert.Equal(perMicro[0], expected, 6);
        trainer.Model.Dispose();
    }

    /// <summary>The loss of step 0's micro-batch on its window, with its prefix of the given length read first in one pass.</summary>
    static double LossAfterPrefix(Trainer trainer, TokenData data, int micro, int prefix)
    {
        using var batch = data.Batch(Training.Seed, 0, micro, Training.BatchSize, Training.SequenceLength, prefix);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var whole = batch.Prefix is null ? batch.Tokens.alias() : cat(new[] { batch.Prefix, batch.Tokens }, 1);
        return batch.Loss(trainer.Model.forward(whole).narrow(1, prefix, Training.SequenceLength)).item<float>();
    }

    [Theory]
    [InlineData(Architecture.Lmm)]
    [InlineData(Architecture.Mal)]
    public void TheMemoriesStartLearnsFromSequencesThatStartLateInAStream(Architecture architecture)
    {
        // Every micro-batch has a prefix, so no sequence starts a stream; W₀ must learn all the same.
        manual_seed(3);
        var training = Training with { StreamPrefix = 24, MinStreamPrefix = 24 };
        using var trainer = new Trainer(new TitansLanguageModel("model", SmallConfig(architecture)), training, Data(training));
        trainer.TrainStep();
        var initial = trainer.Model.named_parameters().Where(p => Titans.Memory.NeuralMemory.IsInitialWeight(p.name)).ToList();
        Assert.NotEmpty(initial);
        foreach (var (name, w0) in initial)
            Assert.True(w0.grad is not null && w0.grad.abs().max().item<float>() > 0, $"{name} got no gradient");
        trainer.Model.Dispose();
    }

    [Fact]
    public void PrefixLengthsAreUniformOverTheirRangeAndTheOldDrawWithoutAMinimum()
    {
        // Without a minimum the draw is the one earlier runs were trained with, so they resume bit for bit.
        var plain = Enumerable.Range(0, 400).Select(step => BatchSeed.PrefixLength(7, step, 0, 896)).ToList();
        Assert.Equal(Enumerable.Range(0, 400).Select(step => new Random(BatchSeed.Of(7, step, 0) ^ 0x2545F491).Next(897)), plain);
        var ranged = Enumerable.Range(0, 400).Select(step => BatchSeed.PrefixLength(7, step, 0, 896, 448)).ToList();
        Assert.All(ranged, p => Assert.InRange(p, 448, 896));
        Assert.True(ranged.Min() < 460 && ranged.Max() > 884, $"the draws span {ranged.Min()}–{ranged.Max()}");
        Assert.All(Enumerable.Range(0, 50), step => Assert.Equal(896, BatchSeed.PrefixLength(7, step, 1, 896, 896)));
        Assert.Equal(0, BatchSeed.PrefixLength(7, 3, 0, 0, 0));
    }

    [Fact]
    public void AFixedStreamPrefixPutsThatManyTokensBeforeEveryMicroBatch()
    {
        const int prefix = 24;
        manual_seed(3);
        var training = Training with { StreamPrefix = prefix, MinStreamPrefix = prefix };
        using var trainer = new Trainer(new TitansLanguageModel("model", SmallConfig(Architecture.Lmm)), training, Data(training));
        var data = (TokenData)trainer.Data;
        var perMicro = Enumerable.Range(0, Training.AccumulationSteps).Select(micro => LossAfterPrefix(trainer, data, micro, prefix)).ToList();
        Assert.Equal(perMicro.Average(), trainer.TrainStep().Loss, 4);
        Assert.Throws<ArgumentException>(() => (training with { MinStreamPrefix = prefix + 1 }).Validate());
        Assert.Throws<ArgumentException>(() => (training with { MinStreamPrefix = -1 }).Validate());
        trainer.Model.Dispose();
    }

    [Fact]
    public void ABatchMovesToItsModelsDeviceAndStaysWhenItIsThere()
    {
        using var scope = NewDisposeScope();
        var batch = Data(Training).Batch(1, 0, 0, 2, 16, prefixLength: 4);
        Assert.Same(batch, batch.To(CPU));
        var meta = new Device(TorchSharp.DeviceType.META);   // a second device every build has: shapes without data
        var moved = batch.To(meta);
        Assert.NotSame(batch, moved);
        Assert.All(new[] { moved.Tokens, moved.Targets, moved.Prefix! }, t => Assert.Equal(TorchSharp.DeviceType.META, t.device.type));
        Assert.Equal(new long[] { 2, 16 }, moved.Tokens.shape);
        Assert.True(batch.Tokens.IsInvalid, "the batch that was moved is disposed");
    }

    [Fact]
    public void CheckpointWeightsLoadByNameAndGiveTheSameLogits()
    {
        using var trainer = NewTrainer(Architecture.Mal);
        trainer.TrainStep();
        string path = Path.Combine(folder, "c.safetensors");
        Checkpoint.Save(path, trainer, ByteTokenizer.Instance);
        using (var content = SafeTensors.Load(path))
        {
            Assert.Contains("embedding.weight", content.Tensors.Keys);
            Assert.Contains(content.Tensors.Keys, k => k.StartsWith("optimizer.") && k.EndsWith(".exp_avg_sq"));
            Assert.Equal(Checkpoint.Format, content.Metadata["format"]);
        }
        var (model, _) = Checkpoint.LoadModel(path, CPU);
        using (model)
        using (var scope = NewDisposeScope())
        {
            Assert.Equal(TorchSharp.DeviceType.CPU, model.Device.type);
            trainer.Model.eval();
            var tokens = tensor(ByteTokenizer.Instance.Encode("the whale"), new long[] { 1, 9 });
            Assert.True(trainer.Model.forward(tokens).eq(model.forward(tokens)).all().item<bool>());
        }
        trainer.Model.Dispose();
    }

    [Fact]
    public void BrokenCheckpointsGiveClearErrors()
    {
        using var trainer = NewTrainer(Architecture.Lmm);
        trainer.TrainStep();
        string path = Path.Combine(folder, "c.safetensors");
        Checkpoint.Save(path, trainer, ByteTokenizer.Instance);
        byte[] bytes = File.ReadAllBytes(path);

        // An edit of the header (the step, a configuration) is caught by its checksum, before anything is built.
        string edited = Path.Combine(folder, "edited.safetensors");
        string text = System.Text.Encoding.Latin1.GetString(bytes);
        Assert.Contains("\"step\":\"1\"", text);
        File.WriteAllBytes(edited, System.Text.Encoding.Latin1.GetBytes(text.Replace("\"step\":\"1\"", "\"step\":\"0\"")));
        foreach (var load in new Action[] { () => Checkpoint.LoadModel(edited), () => Checkpoint.Resume(edited, _ => Data(Training)) })
            Assert.Contains("the SHA-256 of its header", Assert.Throws<InvalidDataException>(load).Message);

        string truncated = Path.Combine(folder, "truncated.safetensors");
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        Assert.Contains("truncated", Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(truncated)).Message);

        // The same weights under a configuration of another width: the first mismatching tensor is named.
        string mismatched = Path.Combine(folder, "mismatched.safetensors");
        using (var content = SafeTensors.Load(path))
        {
            var metadata = content.Metadata.ToDictionary();
            metadata["model_config"] = (SmallConfig(Architecture.Lmm) with { ModelDim = 16, Heads = 1 }).ToJson();
            SafeTensors.Save(mismatched, content.Tensors, metadata);
            var message = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(mismatched)).Message;
            Assert.Contains("parameters, but it holds", message);
            // Rewritten whole (so its checksums match): a thousand layers are refused before a single one is built.
            metadata["model_config"] = (SmallConfig(Architecture.Lmm) with { Layers = 1000 }).ToJson();
            SafeTensors.Save(mismatched, content.Tensors, metadata);
            var watch = System.Diagnostics.Stopwatch.StartNew();
            foreach (var load in new Action[] { () => Checkpoint.LoadModel(mismatched), () => Checkpoint.Resume(mismatched, _ => Data(Training)) })
                Assert.Contains("the configuration does not belong to these weights", Assert.Throws<InvalidDataException>(load).Message);
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"{watch.Elapsed}: the model was built first");
            // A step that disagrees with the optimizer's count would resume mid-schedule: refused.
            metadata["model_config"] = SmallConfig(Architecture.Lmm).ToJson();
            metadata["step"] = "5";
            SafeTensors.Save(mismatched, content.Tensors, metadata);
            Assert.Contains("saved at step 5, but its optimizer state has counted 1 steps",
                Assert.Throws<InvalidDataException>(() => Checkpoint.Resume(mismatched, _ => Data(Training))).Message);

            metadata.Remove("format");
            SafeTensors.Save(mismatched, content.Tensors, metadata);
            Assert.Contains("not a Titans checkpoint", Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(mismatched)).Message);
        }

        // A NaN in any weight is refused on load, naming the file and the tensor, for evaluation as for resuming.
        string poisoned = Path.Combine(folder, "nan.safetensors");
        using (var content = SafeTensors.Load(path))
        {
            var tensors = content.Tensors.ToDictionary(t => t.Key, t => t.Value.clone());
            tensors["norm.weight"][3] = float.NaN;
            SafeTensors.Save(poisoned, tensors, content.Metadata.ToDictionary());
        }
        foreach (var load in new Action[] { () => Checkpoint.LoadModel(poisoned), () => Checkpoint.Resume(poisoned, _ => Data(Training)) })
        {
            var message = Assert.Throws<InvalidDataException>(load).Message;
            Assert.Contains("nan.safetensors", message);
            Assert.Contains("'norm.weight' holds NaN", message);
        }
        trainer.Model.Dispose();
    }

    [Theory]
    [InlineData(Architecture.TransformerPlusPlus)]
    [InlineData(Architecture.Mac)]   // the memory refuses the NaN itself; the trainer reports it as divergence all the same
    [InlineData(Architecture.Lmm)]
    public void ADivergingStepIsRefusedAndLeavesTheWeights(Architecture architecture)
    {
        using var trainer = NewTrainer(architecture);
        trainer.TrainStep();
        var embedding = trainer.Model.named_parameters().First(p => p.name == "embedding.weight").parameter;
        using (no_grad()) embedding[(long)'e', 0] = tensor(float.NaN);           // a byte the text uses
        using var before = embedding.detach().clone();
        var error = Assert.Throws<TrainingDivergedException>(() => { for (int i = 0; i < 5; i++) trainer.TrainStep(); });
        Assert.Contains("diverged", error.Message);
        Assert.Equal(1, trainer.Step);
        Assert.True(embedding.isnan().sum().item<long>() == 1, "the refused step did not touch the weights");
        trainer.Model.Dispose();
    }

    [Theory]
    [InlineData(Architecture.Mac)]
    [InlineData(Architecture.Lmm)]
    [InlineData(Architecture.Mag)]
    public void StreamedEvaluationEqualsOnePass(Architecture architecture)
    {
        manual_seed(5);
        using var model = new TitansLanguageModel("model", SmallConfig(architecture));
        var tokens = ByteTokenizer.Instance.Encode(Text[..301]);
        var whole = Evaluation.Run(model, tokens, ByteTokenizer.Instance, chunk: 300, maxContext: 300);
        var streamed = Evaluation.Run(model, tokens, ByteTokenizer.Instance, chunk: 7, maxContext: 300);
        Assert.Equal(300, whole.Tokens);
        Assert.Equal(whole.Loss, streamed.Loss, 1e-5);
        Assert.Equal(whole.Loss / Math.Log(2), whole.BitsPerByte, 1e-12);            // bytes: one token per byte
    }

    [Theory]
    [InlineData(Architecture.Mac, 40)]
    [InlineData(Architecture.Lmm, 40)]
    [InlineData(Architecture.Mac, 512)]
    [InlineData(Architecture.Lmm, 7)]
    [InlineData(Architecture.TransformerPlusPlus, 512)]
    [InlineData(Architecture.TransformerPlusPlus, 30)]
    public void WindowedEvaluationScoresEachWindowAfresh(Architecture architecture, int chunk)
    {
        // Whatever the chunk (larger than the window, or not a divisor of it), every window is exactly 40 tokens.
        manual_seed(6);
        using var model = new TitansLanguageModel("model", SmallConfig(architecture));
        var tokens = ByteTokenizer.Instance.Encode(Text[..121]);
        var windows = Evaluation.Run(model, tokens, ByteTokenizer.Instance, chunk: chunk, maxContext: 40, restartEveryModel: true);
        // The same 120 predictions as three separate 40-token documents, each scored in one pass.
        double sum = 0;
        for (int w = 0; w < 3; w++)
            sum += 40 * Evaluation.Run(model, tokens.AsSpan(40 * w, 41), ByteTokenizer.Instance, chunk: 40, maxContext: 40).Loss;
        Assert.Equal(sum / 120, windows.Loss, 1e-5);
        var streamed = Evaluation.Run(model, tokens, ByteTokenizer.Instance, chunk: chunk, maxContext: 40);
        if (architecture == Architecture.TransformerPlusPlus)
            Assert.Equal(windows.Loss, streamed.Loss, 1e-5);                                   // it always restarts
        else
            Assert.True(Math.Abs(streamed.Loss - windows.Loss) > 1e-6, "streaming carries the state, so it differs from fresh windows");
    }

    [Fact]
    public void LearningRateWarmsUpThenDecaysToItsFloor()
    {
        var config = new TrainingConfig { Steps = 100, WarmupSteps = 10, LearningRate = 1.0, MinLearningRateRatio = 0.1 };
        Assert.Equal(0.1, config.LearningRateAt(0), 12);
        Assert.Equal(1.0, config.LearningRateAt(9), 12);
        Assert.Equal(0.55, config.LearningRateAt(55), 12);                                      // half way down the cosine
        Assert.Equal(0.1, config.LearningRateAt(100), 12);
        for (int s = 10; s < 100; s++) Assert.True(config.LearningRateAt(s + 1) <= config.LearningRateAt(s));
    }

    [Fact]
    public void SamplingObeysTemperatureTopKAndTopP()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 1f, 3f, 2f, 0f });
        using var generator = new Generator(1);
        Assert.Equal(1, TextGenerator.Sample(logits, new SamplingOptions(Temperature: 0), generator));
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal(1, TextGenerator.Sample(logits, new SamplingOptions(1.0, TopK: 1, TopP: 1), generator));
            Assert.Equal(1, TextGenerator.Sample(logits, new SamplingOptions(1.0, TopK: 0, TopP: 0.01), generator));
            Assert.Contains(TextGenerator.Sample(logits, new SamplingOptions(1.0, TopK: 2, TopP: 1), generator), new long[] { 1, 2 });
        }
        Assert.Throws<ArgumentException>(() => new SamplingOptions(TopP: 0).Validate());
        Assert.Throws<ArgumentException>(() => new SamplingOptions(Temperature: -1).Validate());
    }

    [Fact]
    public void GenerationIsSeededAndStreamsLongPrompts()
    {
        manual_seed(5);
        using var model = new TitansLanguageModel("model", SmallConfig(Architecture.Mag));
        var prompt = ByteTokenizer.Instance.Encode(Text[..200]);
        var options = new SamplingOptions(Temperature: 1.0, Seed: 9);
        var read = new List<(long Done, long Total)>();
        var a = TextGenerator.Generate(model, prompt, 20, options, promptChunk: 64, promptProgress: (done, total) => read.Add((done, total))).ToList();
        var b = TextGenerator.Generate(model, prompt, 20, options, promptChunk: 7).ToList();
        Assert.Equal(20, a.Count);
        Assert.Equal([(64, 200), (128, 200), (192, 200), (200, 200)], read);   // a long prompt's reading is reported piece by piece
        Assert.Equal(a, b);                                      // the prompt's pieces do not change what follows
        var greedy = TextGenerator.Generate(model, prompt, 5, new SamplingOptions(Temperature: 0)).ToList();
        using var scope = NewDisposeScope();
        var logits = model.forward(tensor(prompt, new long[] { 1, prompt.Length }));
        Assert.Equal(logits[0, -1].argmax().item<long>(), greedy[0]);
    }

    [Fact]
    public void TransformerGenerationKeepsABoundedContext()
    {
        manual_seed(5);
        using var model = new TitansLanguageModel("model", SmallConfig(Architecture.TransformerPlusPlus));
        var prompt = ByteTokenizer.Instance.Encode(string.Concat(Enumerable.Repeat(Text[..200], 20)));   // 4,000 tokens
        var greedy = new SamplingOptions(Temperature: 0);
        var bounded = TextGenerator.Generate(model, prompt, 40, greedy, maxContext: 16).ToList();
        // Only the prompt's last 16 tokens count, and generating past the context restarts from the last half of it.
        Assert.Equal(bounded, TextGenerator.Generate(model, prompt[^16..], 40, greedy, maxContext: 16).ToList());
        using var scope = NewDisposeScope();
        var seen = prompt[^16..].ToList();
        int read = 16;                                             // what the cache holds, as the generator keeps it
        var expected = new List<long>();
        for (int i = 0; i < 40; i++)
        {
            var context = seen.Skip(seen.Count - read).ToArray();
            long next = model.forward(tensor(context, new long[] { 1, context.Length }))[0, -1].argmax().item<long>();
            expected.Add(next);
            seen.Add(next);
            read = read >= 16 ? 8 : read + 1;                      // full: restart from the last 8 (the new token among them)
        }
        Assert.Equal(expected, bounded);
        // Models whose state does not grow ignore the bound.
        using var memory = new TitansLanguageModel("memory", SmallConfig(Architecture.Lmm));
        Assert.Equal(TextGenerator.Generate(memory, prompt[..300], 10, greedy).ToList(),
            TextGenerator.Generate(memory, prompt[..300], 10, greedy, maxContext: 16).ToList());
        Assert.Throws<ArgumentException>(() => TextGenerator.Generate(model, prompt, 1, new SamplingOptions(TopP: 2)));   // eagerly
    }

    [Fact]
    public void BadCorporaAreRefusedWithTheReason()
    {
        string bad = Path.Combine(folder, "bad.txt");
        File.WriteAllBytes(bad, new byte[] { 0x61, 0x62, 0xFF, 0x63 });
        var message = Assert.Throws<InvalidDataException>(() => TextCorpus.Load(bad)).Message;
        Assert.Contains("not UTF-8", message);
        Assert.Contains("offset 2", message);
        string empty = Path.Combine(folder, "empty.txt");
        File.WriteAllText(empty, " \n");
        Assert.Contains("empty", Assert.Throws<InvalidDataException>(() => TextCorpus.Load(empty)).Message);
        Assert.Throws<FileNotFoundException>(() => TextCorpus.Load(Path.Combine(folder, "missing.txt")));
        var sub = Directory.CreateDirectory(Path.Combine(folder, "none"));
        Assert.Contains("no *.txt", Assert.Throws<InvalidDataException>(() => TextCorpus.Load(sub.FullName)).Message);
        var tooShort = Assert.Throws<ArgumentException>(() => new TokenData(new long[100], 0.1, 50)).Message;
        Assert.Contains("sequence length of 50", tooShort);
    }
    /// <summary>A module whose backward (recomputation) fails the way an allocation fails, and the loss of its output.</summary>
    sealed class FailingBackward : TorchSharp.torch.nn.Module<Tensor, Tensor>, ITrainingObjective
    {
        readonly TorchSharp.Modules.Parameter weight = new(ones(3));
        int calls;

        public FailingBackward() : base("failing") => RegisterComponents();

        public override Tensor forward(Tensor x) => Titans.Runtime.Recomputation.Apply(inputs =>
        {
            if (++calls == 2) throw new OutOfMemoryException("the recompute could not allocate 9 GiB");
            return [inputs[0] * weight];
        }, [x], [weight])[0];

        public Tensor MicroBatchLoss(TrainingConfig config, int step, int micro) => forward(ones(3)).sum();
    }

    /// <summary>An error in a backward of ours (out of memory included) is that error, not NaN gradients reported as divergence.</summary>
    [Fact]
    public void AFailedBackwardIsReportedAsItselfNotAsDivergence()
    {
        using var model = new FailingBackward();
        using var trainer = new Trainer<FailingBackward>(model, Training with { AccumulationSteps = 1 }, model);
        var error = Assert.Throws<OutOfMemoryException>(() => trainer.TrainStep());
        Assert.Contains("the recompute could not allocate 9 GiB", error.Message);
        Assert.Equal(0, trainer.Step);
        Assert.True(model.parameters().First().eq(1).all().item<bool>(), "the step was applied");
    }
    /// <summary>Runs each replica's steps on its own thread (every collective waits for all of them) and returns what each threw.</summary>
    static Exception?[] OnThreads(IReadOnlyList<Trainer> replicas, int steps)
    {
        var thrown = new Exception?[replicas.Count];
        var threads = replicas.Select((trainer, r) => new Thread(() =>
        {
            try { for (int i = 0; i < steps; i++) trainer.TrainStep(); }
            catch (Exception e) { thrown[r] = e; }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => Assert.True(t.Join(TimeSpan.FromMinutes(2)), "a replica hung"));
        return thrown;
    }

    static Trainer Replica(IGradientReducer? replicas)
    {
        manual_seed(3);
        return new Trainer(new TitansLanguageModel("model", SmallConfig(Architecture.Lmm)), Training, Data(Training), new TrainingEnvironment(replicas));
    }

    static void AssertSameWeights(Trainer a, Trainer b)
    {
        foreach (var ((name, x), (_, y)) in a.Model.named_parameters().Zip(b.Model.named_parameters()))
            Assert.True(x.eq(y).all().item<bool>(), $"{name} differs");
    }

    /// <summary>
    /// The trainer's data-parallel logic through its injected replicas (threads here; MPI processes under mpirun): two
    /// replicas train one process's weights bit for bit, and a non-finite gradient on one stops both at that step,
    /// with the step not applied. The fault is injected here, in the test, around the replicas the trainer is given.
    /// </summary>
    [Fact]
    public void ReplicasTrainOneProcesssWeightsAndStopTogether()
    {
        using var alone = Replica(null);
        for (int i = 0; i < 3; i++) alone.TrainStep();
        var group = new ThreadReplicas(2);
        var replicas = new[] { Replica(group.Rank(0)), Replica(group.Rank(1)) };
        Assert.All(OnThreads(replicas, 3), e => Assert.Null(e));
        foreach (var replica in replicas) AssertSameWeights(alone, replica);

        using var oneStep = Replica(null);
        oneStep.TrainStep();
        var failing = new ThreadReplicas(2);
        var stopped = new[] { Replica(failing.Rank(0)), Replica(new NonFiniteGradientAt(failing.Rank(1), step: 2)) };
        var thrown = OnThreads(stopped, 3);
        Assert.All(thrown, e => Assert.Contains("Training diverged at step 2", Assert.IsType<TrainingDivergedException>(e).Message));
        foreach (var replica in stopped) AssertSameWeights(oneStep, replica);   // the failed step was not applied anywhere
        foreach (var trainer in replicas.Concat(stopped).Append(alone).Append(oneStep)) trainer.Model.Dispose();
        foreach (var trainer in replicas.Concat(stopped)) trainer.Dispose();
    }
}
