using TorchSharp;
using Titans.Memory;
using Titans.Models;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Models;

/// <summary>The language model around each mixer: causality, streaming, gradients, configuration, bad input.</summary>
public class LanguageModelTests
{
    static TitansConfig Tiny(Architecture architecture, MacWrite write = MacWrite.AttentionOutput) => new()
    {
        Architecture = architecture, MacWrite = write, VocabSize = 32, ModelDim = 16, Layers = 2, Heads = 2, Window = 5, SegmentLength = 8,
        PersistentTokens = 3,
        Memory = new NeuralMemoryConfig { Heads = 2, Depth = 2, Expansion = 2, ChunkSize = 4 },
    };

    static TitansLanguageModel Build(Architecture architecture, MacWrite write = MacWrite.AttentionOutput, int recomputeGroup = 0,
        bool handWritten = true, bool fused = true, bool blocks = true)
    {
        manual_seed(1);
        var config = Tiny(architecture, write);
        var model = new TitansLanguageModel("model", config with
        {
            Memory = config.Memory with { RecomputeGroup = recomputeGroup, HandWrittenBackward = handWritten, FusedKernel = fused,
                RecomputeBlocks = blocks ? RecomputeBlocksMode.Always : RecomputeBlocksMode.Never },
        });
        model.to(F64);
        return model;
    }

    static Tensor Tokens(long seed, long batch, long length) =>
        randint(0, 32, new long[] { batch, length }, dtype: ScalarType.Int64, generator: Seeded(seed));

    /// <summary>Every architecture, and MAC once more with its other write.</summary>
    public static TheoryData<Architecture, MacWrite> Models()
    {
        var data = new TheoryData<Architecture, MacWrite>();
        foreach (var a in Enum.GetValues<Architecture>()) data.Add(a, MacWrite.AttentionOutput);
        data.Add(Architecture.Mac, MacWrite.SegmentInput);
        return data;
    }

    /// <summary>
    /// Training with recomputation streams each memory block over groups of tokens (RecomputeGroup 4 chunks of 4 = 16
    /// tokens; MAC: two segments of 8), each group one recomputed autograd node. Streamed in two pieces (11 tokens, then
    /// 30 from the state, in groups that end on the memory's chunk or MAC's segment boundaries), the logits and every
    /// parameter's gradient equal plain autograd's, with the memory's backward by autograd or written by hand, by libtorch
    /// calls or by the fused kernel (which also computes the memory in the forward passes without a graph).
    /// </summary>
    [Theory]
    [InlineData(Architecture.Lmm)]
    [InlineData(Architecture.Mac)]
    [InlineData(Architecture.Mag)]
    [InlineData(Architecture.Mal)]
    public void RecomputedGroupsGiveThePlainLogitsAndGradients(Architecture architecture)
    {
        using var scope = NewDisposeScope();
        Tensor tokens = Tokens(40, 2, 41), probe = Normal(Seeded(41), 2, 41, 32);
        // Plain autograd first (the oracle), then groups and the hand-written backward of the memory, alone and together.
        // The last run keeps groups of 4 chunks inside the memory but no block recomputation: the kernel replays groups.
        var runs = new[] { (0, false, false, true), (4, false, false, true), (0, true, false, true), (4, true, false, true), (0, true, true, true),
            (4, true, true, true), (4, true, true, false) }.Select(run =>
        {
            var model = Build(architecture, recomputeGroup: run.Item1, handWritten: run.Item2, fused: run.Item3, blocks: run.Item4);
            Assert.Equal(run.Item4 ? run.Item1 * 4 : 0, model.Backbone.RecomputeTokens);
            var (first, state) = model.Forward(tokens.narrow(1, 0, 11), null);
            var (second, _) = model.Forward(tokens.narrow(1, 11, 30), state);
            Tensor logits = cat(new[] { first, second }, 1);
            (logits * probe).sum().backward();
            return (logits: logits.detach(), grads: Gradients(model));
        }).ToList();
        foreach (var run in runs.Skip(1))
        {
            AssertClose(runs[0].logits, run.logits, 1e-12, "logits");
            AssertClose(runs[0].grads, run.grads, 1e-9, architecture.ToString());
        }
        Assert.Contains(runs[0].grads, g => g.Name.Contains("memory") && g.Grad is not null && g.Grad.abs().max().item<double>() > 0);
    }

    [Fact]
    public void AutoRecomputesBlocksOnlyWhereTheirActivationsWouldNotFitTheBudget()
    {
        SequenceBackbone Backbone(RecomputeBlocksMode mode)
        {
            var config = Tiny(Architecture.Mal);
            return new SequenceBackbone("backbone", config with { Memory = config.Memory with { RecomputeGroup = 4, RecomputeBlocks = mode } });
        }
        var auto = Backbone(RecomputeBlocksMode.Auto);
        long budget = auto.ActivationBytes(1000, 4);
        Assert.Equal(1000L * 2 * 80 * 16 * 4, budget);                  // tokens × blocks × 80 × width × bytes
        Assert.False(auto.Recomputes(1000, 4, budget));                  // fits: every block's forward runs once
        Assert.True(auto.Recomputes(1001, 4, budget));
        Assert.True(auto.Recomputes(501, 8, budget));                    // float64 takes twice the room
        Assert.True(Backbone(RecomputeBlocksMode.Always).Recomputes(1, 4, budget));
        var never = Backbone(RecomputeBlocksMode.Never);
        Assert.Equal(0, never.RecomputeTokens);
        Assert.False(never.Recomputes(1L << 30, 4, budget));
        Assert.Equal(16, auto.RecomputeTokens);                          // groups of RecomputeGroup × ChunkSize tokens
        Assert.True(SequenceBackbone.ActivationBudget > 0);
        // MAC keeps more per token (its segments' states and scores beside a narrow width): its own estimate.
        Assert.Equal(1000L * 2 * 180 * 16 * 4, new SequenceBackbone("mac", Tiny(Architecture.Mac)).ActivationBytes(1000, 4));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void LogitsAtTDoNotDependOnLaterTokens(Architecture architecture, MacWrite write)
    {
        using var scope = NewDisposeScope();
        var model = Build(architecture, write);
        Tensor tokens = Tokens(2, 2, 19), changed = tokens.clone();
        changed[.., 11..] = Tokens(3, 2, 8);
        Tensor a = model.forward(tokens), b = model.forward(changed);
        AssertClose(a.narrow(1, 0, 11), b.narrow(1, 0, 11), 1e-12, "logits before the change");
        Assert.True((a.narrow(1, 11, 8) - b.narrow(1, 11, 8)).abs().max().item<double>() > 1e-6);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void StreamingInPiecesEqualsWhole(Architecture architecture, MacWrite write)
    {
        using var scope = NewDisposeScope();
        var model = Build(architecture, write);
        Tensor tokens = Tokens(4, 2, 27);
        Tensor whole = model.forward(tokens);
        var pieces = new List<Tensor>();
        ModelState? state = null;
        foreach (var (start, size) in new (long, long)[] { (0, 3), (3, 1), (4, 7), (11, 2), (13, 9), (22, 5) })
        {
            var (logits, next) = model.Forward(tokens.narrow(1, start, size), state);
            state?.Dispose();
            pieces.Add(logits);
            state = next;
        }
        AssertClose(whole, cat(pieces, 1), 1e-12, "logits");
        Assert.Equal(27, state!.Position);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void AdvancingWithoutLogitsLeavesTheSameStateAsAForward(Architecture architecture, MacWrite write)
    {
        // Read text with Advance, then continue: the logits are those of one pass over everything.
        using var scope = NewDisposeScope();
        var model = Build(architecture, write);
        Tensor tokens = Tokens(5, 2, 21);
        Tensor whole = model.forward(tokens);
        ModelState read = model.Advance(tokens.narrow(1, 0, 6), null);
        ModelState advanced = model.Advance(tokens.narrow(1, 6, 7), read);
        var (_, forwarded) = model.Forward(tokens.narrow(1, 6, 7), read);
        Assert.Equal(13, advanced.Position);
        Assert.Equal(forwarded.Tensors.Count(), advanced.Tensors.Count());
        Assert.All(advanced.Tensors.Zip(forwarded.Tensors), pair => Assert.True(pair.First.shape.SequenceEqual(pair.Second.shape) && pair.First.allclose(pair.Second, rtol: 0, atol: 0), "the states differ"));
        var (rest, _) = model.Forward(tokens.narrow(1, 13, 8), advanced);
        AssertClose(whole.narrow(1, 13, 8), rest, 1e-12, "logits after the advanced state");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void GradientsReachEveryParameter(Architecture architecture, MacWrite write)
    {
        using var scope = NewDisposeScope();
        var model = Build(architecture, write);
        Tensor tokens = Tokens(5, 2, 13);
        Tensor logits = model.forward(tokens.narrow(1, 0, 12));
        nn.functional.cross_entropy(logits.reshape(-1, 32), tokens.narrow(1, 1, 12).reshape(-1)).backward();
        foreach (var (name, p) in model.named_parameters())
        {
            Assert.True(p.grad is not null && p.grad.isfinite().all().item<bool>(), $"{name}: missing or non-finite gradient");
            Assert.True(p.grad!.abs().max().item<double>() > 0, $"{name}: zero gradient");
        }
    }

    [Fact]
    public void ConfigurationRoundTripsThroughJson()
    {
        var config = Tiny(Architecture.SlidingWindow) with { Window = 7, FeedForwardDim = 40 };
        var back = TitansConfig.FromJson(config.ToJson());
        Assert.Equal(config, back);
        Assert.Equal(config.ModelDim, back.Memory.ModelDim);   // the memory reads at the model's width, whatever it was given with
        Assert.Equal(config with { Memory = config.Memory with { ModelDim = 7 } }, config);   // so its own ModelDim is not a setting
        Assert.Equal(back, TitansConfig.FromJson(back.ToJson()));
    }

    [Theory]
    [InlineData("{\"Architecture\": \"Lmm\", \"Layers\": 0}", "Layers")]
    [InlineData("{\"Layers\": 2}", "must name its Architecture")]
    [InlineData("{\"Architecture\": \"Lmm\", \"Layerz\": 2}", "has no field 'Layerz'")]
    [InlineData("{\"Architecture\": \"Lmm\", \"Memory\": {\"Deepth\": 2}}", "TitansConfig.Memory has no field 'Deepth'")]
    [InlineData("{\"Architecture\": \"Lmm\", \"Memory\": null}", "TitansConfig.Memory must be a JSON object, got null")]
    [InlineData("{\"Architecture\": \"Lmm\", \"ModelDim\": 32, \"Memory\": {\"ModelDim\": 64}}", "Memory.ModelDim is 64 but ModelDim is 32")]
    [InlineData("[1]", "must be an object")]
    [InlineData("{\"Architecture\": \"TransformerPlusPlus\", \"ModelDim\": 10, \"Heads\": 4}", "Heads")]
    [InlineData("{\"Architecture\": \"SlidingWindow\", \"Window\": 0}", "Window")]
    [InlineData("{\"Architecture\": \"Lmm\", \"Memory\": {\"Depth\": 0}}", "Depth")]
    [InlineData("{\"Architecture\": \"Nope\"}", "TitansConfig.Architecture takes one of TransformerPlusPlus, SlidingWindow, Lmm, Mac, Mag, Mal, got \"Nope\"")]
    public void BadConfigurationIsRejectedWithItsName(string json, string named)
    {
        var error = Assert.Throws<ArgumentException>(() => TitansConfig.FromJson(json));
        Assert.Contains(named, error.Message);
    }

    [Fact]
    public void TokensOutsideTheVocabularyAreRejected()
    {
        using var scope = NewDisposeScope();
        var model = Build(Architecture.Lmm);
        Assert.Contains("[0, 32)", Assert.Throws<ArgumentException>(() => model.forward(tensor(new long[,] { { 1, 32 } }))).Message);
        Assert.Contains("int64", Assert.Throws<ArgumentException>(() => model.forward(zeros(1, 3))).Message);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void AStateReachedWithoutGradientIsTiedBackToTheMemoriesStart(Architecture architecture, MacWrite write)
    {
        // A stream prefix runs without gradient; tied back to the start, the logits are the same bit for bit, and W₀ gets
        // the gradient of the state the prefix left: Σ over the batch of ∂L/∂W_prefix (straight-through, ∂W/∂W₀ = I).
        using var scope = NewDisposeScope();
        var model = Build(architecture, write);
        Tensor prefix = Tokens(30, 2, 13), tokens = Tokens(31, 2, 11);
        Tensor probe = Normal(Seeded(32), 2, 11, 32);
        ModelState state;
        using (no_grad()) state = model.Advance(prefix, null);
        var initial = model.named_parameters().Where(p => NeuralMemory.IsInitialWeight(p.name)).ToList();
        Assert.Equal(architecture is Architecture.TransformerPlusPlus or Architecture.SlidingWindow ? 0 : 4, initial.Count);

        var (linkedLogits, _) = model.Forward(tokens, model.WithGradientToStart(state));
        Assert.True(model.Forward(tokens, state).Output.eq(linkedLogits).all().item<bool>(), "tying back must not change the logits");
        (linkedLogits * probe).sum().backward();
        foreach (var (name, w0) in initial)
            Assert.True(w0.grad is not null && w0.grad.abs().max().item<double>() > 0, $"{name} learns nothing after a prefix");
        if (architecture != Architecture.Lmm) return;

        // LMM: the same gradient from the prefix's weights made leaves.
        var leaves = state.Blocks.Select(b => b.Memory!.Memory.Weights.Select(w => w.detach().requires_grad_(true)).ToArray()).ToArray();
        var leafState = new ModelState(state.Blocks.Select((b, i) => (BlockState)new MemoryBlockState(new NeuralMemoryState(
            new MemoryWeights(leaves[i], b.Memory!.Memory.Momentum), b.Memory.PendingKeys, b.Memory.PendingValues, b.Memory.PendingGates,
            b.Memory.ConvCache, b.Memory.Position))).ToArray(), state.Position);
        (model.Forward(tokens, leafState).Output * probe).sum().backward();
        for (int i = 0; i < initial.Count; i++)
            AssertClose(leaves[i / 2][i % 2].grad!.sum(dim: 0), initial[i].parameter.grad!, 1e-12, initial[i].name);
    }
}
