using TorchSharp;
using Titans.Memory;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Memory;

/// <summary>The module (docs/method.md §2) as a user sees it: streaming, causality, outer-loop gradients, switches, bad input.</summary>
public class NeuralMemoryTests
{
    static NeuralMemoryConfig Tiny(int chunk = 4) => new()
    {
        ModelDim = 8, Heads = 2, Depth = 2, Expansion = 2, ChunkSize = chunk, MaxInnerLearningRate = 0.2,
        InitialInnerLearningRate = 0.1,
    };

    /// <summary>Every stabilizer on: retention toward W₀, row norms fixed to W₀'s, the inner gradient soft-clamped.</summary>
    static NeuralMemoryConfig Stabilized(int chunk = 4) =>
        Tiny(chunk) with { RetainTowardInitial = true, FixedNorm = FastWeightNorm.Rows, InnerGradientClip = 0.5 };

    static NeuralMemory Build(NeuralMemoryConfig config, long seed = 1)
    {
        manual_seed(seed);
        var memory = new NeuralMemory("memory", config);
        memory.to(F64);
        return memory;
    }

    /// <summary>
    /// A read (MAC's step 1) computes only the queries, with the query channels of the convolution: it must equal the
    /// query path of the full projection, and stream in pieces through its own cache.
    /// </summary>
    [Fact]
    public void AReadEqualsTheQueriesOfTheFullProjectionAndStreams()
    {
        using var scope = NewDisposeScope();
        var memory = Build(Tiny() with { ConvKernel = 4 });
        Tensor x = Normal(Seeded(4), 2, 13, 8);
        var weights = memory.InitialState(2, F64).Memory.Weights.Select(w => w + 0.1 * Normal(Seeded(5), w.shape)).ToArray();

        var (whole, wholeCache) = memory.Read(x, weights, null);
        MemoryInputs full = memory.Project(x, null);
        AssertClose(memory.ReadOut(memory.Mlp.Forward(weights, full.Queries), x), whole, 1e-12, "read");
        long inner = memory.Config.Heads * memory.Config.HeadDim;
        Assert.Equal(new long[] { 2, 3, inner }, wholeCache!.shape);                 // K − 1 = 3 steps of the query channels
        AssertClose(full.ConvCache!.narrow(2, 0, inner), wholeCache, 1e-15, "the query channels of the full cache");

        var (first, cache) = memory.Read(x.narrow(1, 0, 5), weights, null);
        var (second, _) = memory.Read(x.narrow(1, 5, 8), weights, cache);
        AssertClose(whole, cat(new[] { first, second }, 1), 1e-12, "pieces");
    }

    [Theory]
    [InlineData(MemoryAlgorithm.Chunked, 4)]
    [InlineData(MemoryAlgorithm.Chunked, 16)]
    [InlineData(MemoryAlgorithm.Sequential, 3)]
    [InlineData(MemoryAlgorithm.Chunked, 5, true)]
    [InlineData(MemoryAlgorithm.Chunked, 4, false, true)]
    [InlineData(MemoryAlgorithm.Chunked, 5, true, true)]
    [InlineData(MemoryAlgorithm.Sequential, 3, false, true)]
    public void StreamingInRandomPiecesEqualsOnePass(MemoryAlgorithm algorithm, int chunk, bool channelwise = false, bool stabilized = false)
    {
        using var scope = NewDisposeScope();
        var memory = Build((stabilized ? Stabilized(chunk) : Tiny(chunk)) with { Algorithm = algorithm, ChannelwiseForgetting = channelwise });
        Tensor x = Normal(Seeded(2), 2, 41, 8);
        var (whole, wholeState) = memory.Forward(x, null);

        var random = new Random(3);
        var pieces = new List<Tensor>();
        NeuralMemoryState? state = null;
        for (long start = 0; start < 41;)
        {
            long size = Math.Min(random.Next(1, 9), 41 - start); // split points not aligned with chunks
            var (y, next) = memory.Forward(x.narrow(1, start, size), state);
            state?.Dispose(); // the new state must not depend on the old one's handles
            pieces.Add(y);
            state = next;
            start += size;
        }
        AssertClose(whole, cat(pieces, 1), 1e-12, "outputs");
        Assert.Equal(41, state!.Position);
        Assert.Equal(wholeState.PendingTokens, state.PendingTokens);
        foreach (var (a, b) in wholeState.Tensors.Zip(state.Tensors))
            AssertClose(a, b, 1e-12, "state");
        var current = memory.CurrentMemory(state);
        AssertClose(memory.CurrentMemory(wholeState), current, 1e-12, "memory after every token");
    }

    /// <summary>
    /// Recomputed groups in a module streamed in pieces not aligned with chunks or groups, the state carried with its
    /// gradient from piece to piece: every parameter's gradient equals plain autograd through the chunked path.
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void RecomputedGroupsStreamWithTheGradientsOfThePlainPath(bool channelwise, bool stabilized)
    {
        using var scope = NewDisposeScope();
        var config = (stabilized ? Stabilized(3) : Tiny(3)) with { ChannelwiseForgetting = channelwise };
        Tensor x = Normal(Seeded(12), 2, 40, 8), probe = Normal(Seeded(13), 2, 40, 8);
        var gradients = new[] { 0, 2 }.Select(group =>
        {
            var memory = Build(config with { RecomputeGroup = group });
            var pieces = new List<Tensor>();
            NeuralMemoryState? state = null;
            foreach (long size in new long[] { 7, 13, 1, 19 })
            {
                var (y, next) = memory.Forward(x.narrow(1, pieces.Sum(p => p.shape[1]), size), state);
                pieces.Add(y);
                state = next;
            }
            var loss = (cat(pieces, 1) * probe).sum() + state!.Memory.Weights.Select(w => w.square().sum()).Aggregate((a, b) => a + b);
            loss.backward();
            return (outputs: cat(pieces, 1).detach(), grads: Gradients(memory));
        }).ToList();
        AssertClose(gradients[0].outputs, gradients[1].outputs, 1e-12, "outputs");
        Assert.All(gradients[0].grads, g => Assert.True(g.Grad is not null && g.Grad.abs().max().item<double>() > 0, $"{g.Name}: no gradient"));
        AssertClose(gradients[0].grads, gradients[1].grads, 1e-9, "recomputed");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ChunkedModuleEqualsSequentialModule(bool stabilized)
    {
        using var scope = NewDisposeScope();
        var config = stabilized ? Stabilized(5) : Tiny(5);
        var chunked = Build(config);
        var sequential = Build(config with { Algorithm = MemoryAlgorithm.Sequential });
        Tensor x = Normal(Seeded(4), 2, 23, 8);
        AssertClose(sequential.forward(x), chunked.forward(x), 1e-12, "outputs");
    }

    [Fact]
    public void OuterGradientsOfTheModulesAgreeOverALongSequence()
    {
        // 1024 tokens of the tiny preset's memory, where the gradients have grown 20-fold over those at 256 tokens:
        // the fast path's backward must still be the reference's (the growth is the recurrence's, not a numerical error).
        using var scope = NewDisposeScope();
        var config = Titans.Models.Presets.Get("tiny", Titans.Models.Architecture.Lmm).Memory;
        Tensor x = Normal(Seeded(8), 1, 1024, config.ModelDim), w = Normal(Seeded(9), 1, 1024, config.ModelDim);
        var gradients = new[] { MemoryAlgorithm.Chunked, MemoryAlgorithm.Sequential }.Select(algorithm =>
        {
            var memory = Build(config with { Algorithm = algorithm }, seed: 7);
            (memory.forward(x) * w).sum().backward();
            return memory.named_parameters().Select(p => (p.name, grad: p.parameter.grad!.detach().clone())).ToList();
        }).ToList();
        foreach (var ((name, fast), (_, reference)) in gradients[0].Zip(gradients[1]))
        {
            double scale = reference.abs().max().item<double>();
            Assert.True((fast - reference).abs().max().item<double>() <= 1e-9 * scale, $"{name}: chunked and sequential gradients differ");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void OutputAtTDoesNotDependOnLaterInputs(int chunk)
    {
        using var scope = NewDisposeScope();
        var memory = Build(Tiny(chunk));
        Tensor x = Normal(Seeded(5), 1, 13, 8);
        Tensor changed = x.clone();
        changed[.., 7..] = Normal(Seeded(6), 1, 6, 8);
        Tensor a = memory.forward(x), b = memory.forward(changed);
        AssertClose(a.narrow(1, 0, 7), b.narrow(1, 0, 7), 1e-13, "outputs before the change");
        Assert.True((a.narrow(1, 7, 6) - b.narrow(1, 7, 6)).abs().max().item<double>() > 1e-6, "later outputs must change");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    [InlineData(false, true)]
    public void OuterGradientsReachEveryParameter(bool channelwise, bool stabilized = false)
    {
        using var scope = NewDisposeScope();
        var memory = Build((stabilized ? Stabilized() : Tiny()) with { ChannelwiseForgetting = channelwise });
        Tensor x = Normal(Seeded(7), 2, 19, 8);
        memory.forward(x).square().sum().backward();
        foreach (var (name, p) in memory.named_parameters())
        {
            Assert.NotNull(p.grad);
            Assert.True(p.grad!.isfinite().all().item<bool>(), $"{name}: non-finite gradient");
            Assert.True(p.grad!.abs().max().item<double>() > 0, $"{name}: zero gradient");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void OuterGradientsAgreeWithFiniteDifferences(bool stabilized)
    {
        using var scope = NewDisposeScope();
        var memory = Build(stabilized ? Stabilized(3) : Tiny(3));
        Tensor x = Normal(Seeded(8), 1, 10, 8);
        Tensor probe = Normal(Seeded(9), 1, 10, 8);
        double Loss() { using (no_grad()) return (memory.forward(x) * probe).sum().item<double>(); }

        memory.zero_grad();
        (memory.forward(x) * probe).sum().backward();
        var random = new Random(10);
        foreach (var (name, p) in memory.named_parameters())
        {
            for (int trial = 0; trial < 2; trial++)
            {
                long index = random.NextInt64(p.numel());
                Tensor flat = p.detach().view(-1);
                double original = flat[index].item<double>(), h = 1e-6;
                flat[index] = original + h;
                double up = Loss();
                flat[index] = original - h;
                double down = Loss();
                flat[index] = original;
                double numeric = (up - down) / (2 * h);
                double analytic = p.grad!.view(-1)[index].item<double>();
                Assert.True(Math.Abs(numeric - analytic) <= 1e-6 * Math.Max(1, Math.Abs(numeric)),
                    $"{name}[{index}]: autograd {analytic:E6}, finite difference {numeric:E6}");
            }
        }
    }

    [Fact]
    public void SwitchesSetTheGatesTheyName()
    {
        using var scope = NewDisposeScope();
        Tensor x = Normal(Seeded(11), 1, 6, 8);
        var noMomentum = Build(Tiny() with { Momentum = false }).Project(x, null).Gates;
        Assert.True(noMomentum.LogEta.eq(double.NegativeInfinity).all().item<bool>(), "η must be exactly 0");
        var noForgetting = Build(Tiny() with { Forgetting = false }).Project(x, null).Gates;
        Assert.True(noForgetting.LogDecay.eq(0).all().item<bool>(), "α must be exactly 0");
        var fixedGates = Build(Tiny() with { DataDependentGates = false }).Project(x, null).Gates;
        foreach (var gate in new[] { fixedGates.Theta, fixedGates.LogDecay, fixedGates.LogEta })
            Assert.True((gate - gate.narrow(2, 0, 1)).abs().max().item<double>() == 0, "fixed gates must not vary over tokens");
        var dataGates = Build(Tiny()).Project(x, null).Gates;
        Assert.True((dataGates.Theta - dataGates.Theta.narrow(2, 0, 1)).abs().max().item<double>() > 0);
        Assert.True(dataGates.Theta.le(0.2).all().item<bool>() && dataGates.Theta.gt(0).all().item<bool>(), "θ must lie in (0, θ_max]");
    }

    [Fact]
    public void EveryAblationRunsAndStreams()
    {
        using var scope = NewDisposeScope();
        Tensor x = Normal(Seeded(12), 1, 11, 8);
        foreach (var config in new[]
                 {
                     Tiny() with { Depth = 1 }, Tiny() with { Momentum = false }, Tiny() with { Forgetting = false },
                     Tiny() with { ConvKernel = 0 }, Tiny() with { DataDependentGates = false },
                     Tiny() with { ResidualLayerNorm = false }, Tiny() with { Activation = MemoryActivation.Silu },
                     Tiny() with { OutputGate = OutputGate.None }, Tiny() with { OutputGate = OutputGate.Sigmoid },
                     Tiny() with { Depth = 4 }, Tiny() with { ChannelwiseForgetting = true },
                     Tiny() with { ChannelwiseForgetting = true, DataDependentGates = false, Depth = 1 },
                     Tiny() with { RetainTowardInitial = true }, Tiny() with { FixedNorm = FastWeightNorm.Rows },
                     Tiny() with { FixedNorm = FastWeightNorm.Layers }, Tiny() with { InnerGradientClip = 0.1 },
                     Stabilized() with { ChannelwiseForgetting = true, Depth = 3 },
                 }.Concat(Enum.GetValues<MemoryVariant>().Select(v => Tiny().As(v))))
        {
            var memory = Build(config);
            var (whole, _) = memory.Forward(x, null);
            var (first, state) = memory.Forward(x.narrow(1, 0, 5), null);
            var (second, _) = memory.Forward(x.narrow(1, 5, 6), state);
            AssertClose(whole, cat(new[] { first, second }, 1), 1e-12, config.ToString());
        }
    }

    [Theory]
    [InlineData(MemoryVariant.DeltaRule)]
    [InlineData(MemoryVariant.GatedDeltaRule)]
    public void NamedVariantsAreTheRulesTheyName(MemoryVariant variant)
    {
        // Through the module, set by config alone: M_t = (1 − α_t) M_{t−1} − θ_t · 2 (M_{t−1} k_t − v_t) k_tᵀ, y_t = M_t q_t,
        // with α = 0 for the delta rule; written by hand from the module's own q, k, v and gates.
        using var scope = NewDisposeScope();
        var memory = Build(Tiny(1).As(variant));
        Tensor x = Normal(Seeded(30), 2, 9, 8);
        var inputs = memory.Project(x, null);
        Tensor decay = inputs.Gates.LogDecay.exp();
        Assert.Equal(variant == MemoryVariant.DeltaRule, decay.eq(1).all().item<bool>());
        Tensor m = memory.InitialState(2, F64).Memory.Weights[0];
        var expected = new List<Tensor>();
        for (long t = 0; t < 9; t++)
        {
            Tensor kt = inputs.Keys.select(2, t).unsqueeze(-1), vt = inputs.Values.select(2, t).unsqueeze(-1);
            Tensor theta = inputs.Gates.Theta.select(2, t).unsqueeze(-1).unsqueeze(-1);
            Tensor keep = decay.select(2, t).unsqueeze(-1).unsqueeze(-1);
            m = keep * m - theta * 2 * (m.matmul(kt) - vt).matmul(kt.transpose(-1, -2));
            expected.Add(m.matmul(inputs.Queries.select(2, t).unsqueeze(-1)).transpose(-1, -2));
        }
        var scan = memory.Scan(inputs.Queries, inputs.Keys, inputs.Values, inputs.Gates, memory.InitialState(2, F64).Memory);
        AssertClose(cat(expected, 2), scan.Outputs, 1e-12, $"{variant} outputs");
        AssertClose(m, scan.Final.Weights[0], 1e-12, $"{variant} memory");
        Assert.Single(scan.Final.Weights);
    }

    [Fact]
    public void StateDoesNotChangeWhenParametersAreUpdatedLater()
    {
        // A stream paused inside its first chunk must not see an optimizer step taken afterwards.
        using var scope = NewDisposeScope();
        var memory = Build(Tiny(16));
        Tensor x = Normal(Seeded(20), 1, 3, 8);
        var (_, state) = memory.Forward(x, null);
        Tensor before = state.Memory.Weights[0].clone();
        using (no_grad())
            foreach (var p in memory.parameters()) p.add_(1.0);
        AssertClose(before, state.Memory.Weights[0], 0, "state weights after a parameter update");
    }

    [Fact]
    public void ShortInputStillWritesTheMemory()
    {
        // 3 tokens, chunk 16: the memory must still change, and a later piece must see it.
        using var scope = NewDisposeScope();
        var memory = Build(Tiny(16));
        Tensor x = Normal(Seeded(13), 1, 3, 8), later = Normal(Seeded(14), 1, 2, 8);
        var (_, state) = memory.Forward(x, null);
        var initial = memory.InitialState(1, F64);
        Assert.True((memory.CurrentMemory(state).Weights[0] - initial.Memory.Weights[0]).abs().max().item<double>() > 1e-4);
        var (withHistory, _) = memory.Forward(later, state);
        Assert.True((withHistory - memory.forward(later)).abs().max().item<double>() > 1e-6);
    }

    [Fact]
    public void DivergingInnerLoopStopsWithAClearError()
    {
        // θ up to 1e6 with no LayerNorm wrapper and no forgetting: the inner loop blows up within a few chunks.
        using var scope = NewDisposeScope();
        var memory = Build(Tiny() with { MaxInnerLearningRate = 1e6, InitialInnerLearningRate = 5e5, ResidualLayerNorm = false, Forgetting = false });
        Tensor x = Normal(Seeded(19), 1, 200, 8) * 10;
        var error = Assert.Throws<NonFiniteValueException>(() => memory.forward(x));
        Assert.Contains("non-finite", error.Message);
        Assert.Contains("MaxInnerLearningRate", error.Message);
        using (no_grad())                                   // inference: the fused kernel sees it and says the same
            Assert.Contains("MaxInnerLearningRate", Assert.Throws<NonFiniteValueException>(() => memory.forward(x)).Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void MultiTimescaleHeadsStartLogSpacedFromTheFirstHeadToTheLast(bool channelwise)
    {
        using var scope = NewDisposeScope();
        Tensor x = Normal(Seeded(12), 1, 3, 8);
        var config = Tiny() with { Heads = 4, DataDependentGates = false, ChannelwiseForgetting = channelwise, InitialForgetting = 0.01 };
        var alike = Build(config).Project(x, null).Gates;
        var spread = Build(config with { LastHeadInitialForgetting = 1e-5, LastHeadInitialInnerLearningRate = 0.001 }).Project(x, null).Gates;
        double[] Heads(Tensor gate) => gate[0].select(-1, 0).to(F64).data<double>().ToArray(); // [H] at token 0
        // α per head (every channel of a head alike), from log(1 − α).
        double[] Alpha(MemoryGates g) => Heads(1 - g.LayerLogDecay(0).mean(new long[] { -1 }).exp());
        for (int h = 0; h < 4; h++)
        {
            Assert.Equal(0.1, Heads(alike.Theta)[h], 6);
            Assert.Equal(0.01, Alpha(alike)[h], 6);
            Assert.Equal(0.1 * Math.Pow(0.01, h / 3.0), Heads(spread.Theta)[h], 6);   // 0.1 … 0.001
            Assert.Equal(0.01 * Math.Pow(0.001, h / 3.0), Alpha(spread)[h], 6);     // 0.01 … 10⁻⁵
        }
        if (channelwise)
            foreach (var layer in spread.ChannelLogDecay!)
                Assert.True((layer - layer.narrow(-1, 0, 1)).abs().max().item<double>() < 1e-6, "a head's channels start alike");
        Assert.Equal(alike.LogEta.to(F64).data<double>().ToArray(), spread.LogEta.to(F64).data<double>().ToArray());
    }

    [Theory]
    [InlineData("{\"LastHeadInitialForgetting\": 1.5}", "LastHeadInitialForgetting")]
    [InlineData("{\"LastHeadInitialInnerLearningRate\": 0.5}", "LastHeadInitialInnerLearningRate")]
    [InlineData("{\"Depth\": 0}", "Depth")]
    [InlineData("{\"ModelDim\": 10, \"Heads\": 4}", "Heads")]
    [InlineData("{\"ChunkSize\": 0}", "ChunkSize")]
    [InlineData("{\"ConvKernel\": -1}", "ConvKernel")]
    [InlineData("{\"MaxInnerLearningRate\": -1}", "MaxInnerLearningRate")]
    [InlineData("{\"Activation\": \"Tanh\"}", "Activation")]
    [InlineData("{\"Depth\": ", "Malformed")]
    [InlineData("{\"ChannelwiseForgetting\": true, \"Forgetting\": false}", "ChannelwiseForgetting")]
    [InlineData("{\"RetainTowardInitial\": true, \"Forgetting\": false}", "RetainTowardInitial")]
    [InlineData("{\"InnerGradientClip\": -1}", "InnerGradientClip")]
    [InlineData("{\"FixedNorm\": \"Columns\"}", "FixedNorm")]
    [InlineData("{\"RecomputeGroup\": -1}", "RecomputeGroup")]
    [InlineData("{\"RecomputeBlocks\": \"Sometimes\"}", "RecomputeBlocks")]
    public void BadConfigurationIsRejectedWithItsName(string json, string named)
    {
        var error = Assert.Throws<ArgumentException>(() => NeuralMemoryConfig.FromJson(json));
        Assert.Contains(named, error.Message);
    }

    [Fact]
    public void ConfigurationRoundTripsThroughJson()
    {
        var config = Tiny() with { Depth = 3, Activation = MemoryActivation.Silu, Momentum = false, Algorithm = MemoryAlgorithm.Sequential,
            RecomputeBlocks = RecomputeBlocksMode.Never };
        Assert.Equal(config, NeuralMemoryConfig.FromJson(config.ToJson()));
        Assert.Contains("\"RecomputeBlocks\": \"Never\"", config.ToJson());            // by name, as every setting
    }

    [Fact]
    public void BadInputGivesAClearError()
    {
        using var scope = NewDisposeScope();
        var memory = Build(Tiny());
        Tensor nan = Normal(Seeded(15), 1, 4, 8);
        nan[0, 2, 3] = double.NaN;
        Assert.Contains("NaN", Assert.Throws<NonFiniteValueException>(() => memory.forward(nan)).Message);
        using (no_grad())
            Assert.Contains("NaN", Assert.Throws<NonFiniteValueException>(() => memory.forward(nan)).Message);
        Assert.Contains("shape", Assert.Throws<ArgumentException>(() => memory.forward(Normal(Seeded(16), 1, 4, 7))).Message);
        var (_, state) = memory.Forward(Normal(Seeded(17), 2, 4, 8), null);
        Assert.Contains("batch", Assert.Throws<ArgumentException>(() => memory.Forward(Normal(Seeded(18), 1, 4, 8), state)).Message);
    }

    /// <summary>The smallest and largest ‖W‖/‖W₀‖ of any head and layer after streaming x through the memory.</summary>
    static (double Min, double Max) WeightRatios(NeuralMemoryConfig config, Tensor x)
    {
        using var scope = NewDisposeScope();
        var memory = Build(config with { DataDependentGates = false });
        using var noGrad = no_grad();
        var (_, state) = memory.Forward(x, null);
        var initial = memory.InitialState(1, F64).Memory.Weights;
        var ratios = memory.CurrentMemory(state).Weights.Zip(initial, (w, w0) =>
            (w.square().sum(new long[] { -2, -1 }).sqrt() / w0.square().sum(new long[] { -2, -1 }).sqrt())).Select(r => r.flatten()).ToArray();
        Tensor all = cat(ratios, 0);
        return (all.min().item<double>(), all.max().item<double>());
    }

    /// <summary>
    /// A stream on which the plain memory leaves the band [0.5, 2] of ‖W‖/‖W₀‖, and the same memory with one stabilizer
    /// stays in it: forgetting toward 0 with few writes shrinks the plain memory (retention holds it at W₀); a large inner
    /// step grows it (a fixed norm holds it exactly; a clamped gradient keeps the steps small).
    /// </summary>
    [Theory]
    [InlineData("retention")]
    [InlineData("rows")]
    [InlineData("layers")]
    [InlineData("clip")]
    public void EachStabilizerKeepsTheMemoryInItsBand(string stabilizer)
    {
        using var scope = NewDisposeScope();
        Tensor x = Normal(Seeded(50), 1, 512, 8);
        NeuralMemoryConfig plain = stabilizer == "retention"
            ? Tiny(8) with { InitialForgetting = 0.05, InitialInnerLearningRate = 0.001, MaxInnerLearningRate = 0.01 }   // forgets more than it writes
            : Tiny(8) with { InitialForgetting = 0.0001, InitialInnerLearningRate = 0.15 };                              // writes hard, forgets little
        NeuralMemoryConfig stabilized = stabilizer switch
        {
            "retention" => plain with { RetainTowardInitial = true },
            "rows" => plain with { FixedNorm = FastWeightNorm.Rows },
            "layers" => plain with { FixedNorm = FastWeightNorm.Layers },
            _ => plain with { InnerGradientClip = 0.05 },
        };
        var (plainMin, plainMax) = WeightRatios(plain, x);
        var (min, max) = WeightRatios(stabilized, x);
        Assert.True(plainMin < 0.5 || plainMax > 2, $"the plain memory stayed in the band ({plainMin:G3}–{plainMax:G3}); the test shows nothing");
        Assert.True(min >= 0.5 && max <= 2, $"{stabilizer}: ‖W‖/‖W₀‖ {min:G3}–{max:G3} left the band [0.5, 2]");
        if (stabilizer is "rows" or "layers")
            Assert.True(Math.Abs(min - 1) < 1e-9 && Math.Abs(max - 1) < 1e-9, $"{stabilizer}: the norm is not fixed ({min}–{max})");
    }
}
