using Titans.Experiments;
using Titans.Memory;
using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Tests.Experiments;

/// <summary>The memory trace reports what the memory computes: its gates and the state a plain stream ends in.</summary>
public class MemoryTraceTests
{
    static TitansLanguageModel Model(Architecture architecture, bool channelwise = false)
    {
        manual_seed(5);
        var config = new TitansConfig
        {
            Architecture = architecture, VocabSize = 32, ModelDim = 16, Layers = 2, Heads = 2, SegmentLength = 8, Window = 8,
            PersistentTokens = 2, Memory = new NeuralMemoryConfig { Heads = 2, Depth = 2, Expansion = 2, ChunkSize = 4, ChannelwiseForgetting = channelwise },
        };
        return new TitansLanguageModel("model", config.Validate());
    }

    static long[] Tokens(int count) => Enumerable.Range(0, count).Select(i => (long)((i * 7 + i / 5) % 32)).ToArray();

    [Theory]
    [InlineData(Architecture.Lmm)]
    [InlineData(Architecture.Mac)]
    [InlineData(Architecture.Mal)]
    public void TheLastWindowEndsInTheStateOfAPlainStream(Architecture architecture)
    {
        using var model = Model(architecture);
        long[] tokens = Tokens(40);
        var trace = MemoryTrace.Run(model, tokens, window: 16);

        Assert.Equal(new long[] { 0, 16, 32 }, trace.Windows.Select(w => w.Start));
        Assert.Equal(40, trace.Windows[^1].End);
        using var noGrad = no_grad();
        model.eval();
        var (logits, state) = model.Forward(tensor(tokens).unsqueeze(0), null);
        for (int b = 0; b < 2; b++)
        {
            var memory = model.Blocks[b].Memory!;
            var weights = memory.CurrentMemory(state.Blocks[b].Memory!);
            var traced = trace.Windows[^1].Blocks[b];
            Assert.Equal(b, traced.Block);
            for (int l = 0; l < 2; l++)
            {
                Assert.Equal(weights.Weights[l].norm().item<float>(), traced.WeightNorms[l], 3);
                Assert.Equal(weights.Momentum[l].norm().item<float>(), traced.MomentumNorms[l], 3);
            }
            // The retention since token 0 only shrinks as the stream goes on.
            for (int h = 0; h < 2; h++)
                Assert.True(traced.HeadLog10Retention[h] < trace.Windows[0].Blocks[b].HeadLog10Retention[h], $"block {b} head {h}");
            var initial = memory.InitialState(1).Memory.Weights;
            for (int l = 0; l < 2; l++) Assert.Equal(initial[l].norm().item<float>(), trace.InitialWeightNorms[b][l], 4);
        }
        // The loss of the first window: positions 0..15 predicting tokens 1..16.
        double expected = nn.functional.cross_entropy(logits[0].narrow(0, 0, 16), tensor(tokens).narrow(0, 1, 16)).item<float>();
        Assert.Equal(expected, trace.Windows[0].Loss, 3);
        Assert.All(model.Blocks, b => Assert.Null(b.Memory!.GateObserver));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheGatesAreTheMeansOfWhatTheMemoryComputes(bool channelwise)
    {
        using var model = Model(Architecture.Lmm, channelwise);
        long[] tokens = Tokens(24);
        var trace = MemoryTrace.Run(model, tokens, window: 24);
        using var noGrad = no_grad();
        // LMM's first block writes RMSNorm(embedding): observe the gates of a plain forward pass.
        var seen = new List<(double Theta, double Alpha, double Eta, float[] HeadAlpha, float[] HeadLogKept)>();
        model.Blocks[0].Memory!.GateObserver = g => seen.Add((g.Theta.mean().item<float>(),
            (1 - g.LayerLogDecay(0).exp()).mean().item<float>(), g.LogEta.exp().mean().item<float>(),
            (1 - g.LayerLogDecay(0).exp())[0].mean(new long[] { 1, 2 }).data<float>().ToArray(),
            g.LayerLogDecay(0)[0].mean(new long[] { -1 }).sum(-1).data<float>().ToArray()));
        model.Forward(tensor(tokens).unsqueeze(0), null);
        model.Blocks[0].Memory!.GateObserver = null;
        var traced = trace.Windows[0].Blocks[0];
        Assert.Single(seen);
        Assert.Equal(seen[0].Theta, traced.Theta, 5);
        Assert.Equal(seen[0].Alpha, traced.Alpha, 6);
        Assert.Equal(seen[0].Eta, traced.Eta, 5);
        // Per head: the mean α, and log₁₀ Π (1 − α) over the whole (single-window) stream.
        Assert.Equal(2, traced.HeadAlpha.Count);
        for (int h = 0; h < 2; h++)
        {
            Assert.Equal(seen[0].HeadAlpha[h], traced.HeadAlpha[h], 6);
            Assert.Equal(seen[0].HeadLogKept[h] / Math.Log(10), traced.HeadLog10Retention[h], 5);
            Assert.True(traced.HeadLog10Retention[h] < 0, "forgetting leaves less than all");
        }
        var config = model.Config.Memory;
        Assert.InRange(traced.Theta, 0, config.MaxInnerLearningRate);
        Assert.InRange(traced.Alpha, 0, 1);
        Assert.InRange(traced.Eta, 0, 1);
    }

    [Fact]
    public void AModelWithoutMemoryIsRefused()
    {
        using var model = Model(Architecture.TransformerPlusPlus);
        var error = Assert.Throws<ArgumentException>(() => MemoryTrace.Run(model, Tokens(16), 8));
        Assert.Contains("no neural memory", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => MemoryTrace.Run(Model(Architecture.Lmm), Tokens(16), 0));
    }
}
