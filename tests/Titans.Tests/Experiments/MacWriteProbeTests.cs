using Titans.Experiments;
using Titans.Memory;
using Titans.Models;
using Titans.Tasks.LongContext;
using static TorchSharp.torch;

namespace Titans.Tests.Experiments;

/// <summary>The write probe reads the signals it names, at the needle's and the question's positions.</summary>
public class MacWriteProbeTests
{
    static TitansLanguageModel Model(Architecture architecture, MacWrite write)
    {
        manual_seed(3);
        var config = new TitansConfig
        {
            Architecture = architecture, VocabSize = 32, ModelDim = 16, Layers = 2, Heads = 2, SegmentLength = 8, Window = 8,
            PersistentTokens = 2, MacWrite = write, Memory = new NeuralMemoryConfig { Heads = 2, Depth = 2, Expansion = 2, ChunkSize = 4 },
        };
        return new TitansLanguageModel("model", config.Validate());
    }

    /// <summary>24 tokens of filler (20–31) with a 3-token needle of "digits" (1–5) at a random place, asked for at the end.</summary>
    static List<TaskExample> Examples(int count, int seed = 1)
    {
        var random = new Random(seed);
        var examples = new List<TaskExample>();
        for (int e = 0; e < count; e++)
        {
            long[] tokens = Enumerable.Range(0, 24).Select(_ => (long)random.Next(20, 32)).ToArray();
            long[] needle = Enumerable.Range(0, 3).Select(_ => (long)random.Next(1, 6)).ToArray();
            int at = random.Next(0, 12);
            needle.CopyTo(tokens, at);
            needle.CopyTo(tokens, 21);
            examples.Add(new TaskExample(tokens, new[] { new AnswerSpan(21, 3, string.Concat(needle)) }, at / 24.0, new[] { "needle" }, "?", at));
        }
        return examples;
    }

    [Fact]
    public void TheSegmentInputNamesTheNeedleAndTheSegmentWriteWritesIt()
    {
        using var model = Model(Architecture.Mac, MacWrite.SegmentInput);
        var results = MacWriteProbe.Run(model, Examples(60), batchSize: 16);

        Assert.Equal(2 * MacWriteProbe.Features.Length, results.Count);
        // Block 0's input at a token is that token's normalized embedding, so a probe at the right positions names it
        // on unseen examples; at wrong positions it would see filler.
        var input = results.Single(r => r.Block == 0 && r.Feature == MacWriteProbe.Features[0]);
        Assert.Equal(1.0, input.TestAccuracy);
        Assert.Equal(40 * 3, input.TrainSamples);
        Assert.Equal(20 * 3, input.TestSamples);
        Assert.InRange(input.Chance, 0.2, 0.5);
        // The segment write writes the segment input itself: the same signal, the same probe.
        for (int b = 0; b < 2; b++)
            Assert.Equal(results.Single(r => r.Block == b && r.Feature == MacWriteProbe.Features[0]).TestAccuracy,
                results.Single(r => r.Block == b && r.Feature == MacWriteProbe.Features[1]).TestAccuracy);
        Assert.All(model.Blocks.OfType<MacBlock>(), b => Assert.Null(b.Observer));
    }

    [Fact]
    public void ThePapersWriteIsADifferentSignal()
    {
        using var model = Model(Architecture.Mac, MacWrite.AttentionOutput);
        var seen = new List<(Tensor Input, Tensor Written)>();
        var results = MacWriteProbe.Run(model, Examples(30), batchSize: 30);
        Assert.Equal(6, results.Count);
        // Unlike the segment write (the test above: the same accuracy as the input), the paper's write is another signal:
        // from it the probe names the needle less well than from the segment input, in both blocks.
        for (int b = 0; b < 2; b++)
        {
            var input = results.Single(r => r.Block == b && r.Feature == MacWriteProbe.Features[0]);
            var written = results.Single(r => r.Block == b && r.Feature == MacWriteProbe.Features[1]);
            Assert.Equal(1.0, input.TestAccuracy);
            Assert.True(written.TestAccuracy < input.TestAccuracy, $"block {b}: the written value names the needle as well as the input ({written.TestAccuracy})");
        }
        // Observed directly: the paper's write is the normalized attention output, not the input.
        ((MacBlock)model.Blocks[0]).Observer = (input, _, written) => seen.Add((input.clone().DetachFromDisposeScope(), written.clone().DetachFromDisposeScope()));
        using (no_grad()) model.Forward(tensor(Examples(1)[0].Tokens).unsqueeze(0), null).State.Dispose();
        ((MacBlock)model.Blocks[0]).Observer = null;
        Assert.Equal(3, seen.Count);                                    // 24 tokens in segments of 8
        Assert.All(seen, s => Assert.False(s.Input.allclose(s.Written)));
        Assert.All(seen, s => Assert.Equal(1.0, s.Written.square().mean(new long[] { -1 }).mean().item<float>(), 3));
        foreach (var (i, w) in seen) { i.Dispose(); w.Dispose(); }
    }

    [Fact]
    public void BadInputGetsClearErrors()
    {
        using var lmm = Model(Architecture.Lmm, MacWrite.AttentionOutput);
        Assert.Contains("MAC", Assert.Throws<ArgumentException>(() => MacWriteProbe.Run(lmm, Examples(10))).Message);
        using var mac = Model(Architecture.Mac, MacWrite.AttentionOutput);
        var noNeedle = Examples(10);
        noNeedle[4] = noNeedle[4] with { Tokens = noNeedle[4].Tokens.Select((t, i) => i < 21 ? 20L : t).ToArray() };
        Assert.Contains("does not occur before the question", Assert.Throws<ArgumentException>(() => MacWriteProbe.Run(mac, noNeedle)).Message);
        Assert.All(mac.Blocks.OfType<MacBlock>(), b => Assert.Null(b.Observer));
        Assert.Contains("at least 6", Assert.Throws<ArgumentException>(() => MacWriteProbe.Run(mac, Examples(3))).Message);
    }
}
