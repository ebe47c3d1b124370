using TorchSharp;
using Titans.Memory;
using Titans.Models;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Models;

/// <summary>
/// The backbone every head uses (language model, forecaster, classifier) on real-valued inputs: causality and streaming
/// in pieces, for every architecture; and the language model's weight names, which checkpoints rely on.
/// </summary>
public class SequenceBackboneTests
{
    static SequenceBackbone Build(Architecture architecture)
    {
        manual_seed(1);
        var backbone = new SequenceBackbone("backbone", new TitansConfig
        {
            Architecture = architecture, VocabSize = 2, ModelDim = 16, Layers = 2, Heads = 2, Window = 5, SegmentLength = 4, PersistentTokens = 3,
            Memory = new NeuralMemoryConfig { Heads = 2, Depth = 2, Expansion = 2, ChunkSize = 4 },
        });
        backbone.to(F64);
        return backbone;
    }

    public static TheoryData<Architecture> Architectures() => new(Enum.GetValues<Architecture>());

    [Theory]
    [MemberData(nameof(Architectures))]
    public void OutputsAtTDoNotDependOnLaterInputs(Architecture architecture)
    {
        using var scope = NewDisposeScope();
        using var backbone = Build(architecture);
        Tensor x = Normal(Seeded(2), 2, 19, 16), changed = x.clone();
        changed[.., 11..] = Normal(Seeded(3), 2, 8, 16);
        Tensor a = backbone.forward(x), b = backbone.forward(changed);
        Assert.True((a[.., ..11] - b[.., ..11]).abs().max().item<double>() < 1e-12, "outputs before the change moved");
        Assert.True((a[.., 11..] - b[.., 11..]).abs().max().item<double>() > 1e-6);
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void StreamingInPiecesEqualsWhole(Architecture architecture)
    {
        using var scope = NewDisposeScope();
        using var backbone = Build(architecture);
        Tensor x = Normal(Seeded(4), 2, 27, 16);
        Tensor whole = backbone.forward(x);
        var pieces = new List<Tensor>();
        ModelState? state = null;
        foreach (var (start, size) in new (long, long)[] { (0, 3), (3, 1), (4, 7), (11, 2), (13, 9), (22, 5) })
        {
            var (output, next) = backbone.Forward(x.narrow(1, start, size), state);
            state?.Dispose();
            pieces.Add(output);
            state = next;
        }
        Assert.True((whole - cat(pieces, 1)).abs().max().item<double>() < 1e-12);
        Assert.Equal(27, state!.Position);
    }

    [Fact]
    public void TheLanguageModelKeepsItsCheckpointWeightNames()
    {
        using var model = new TitansLanguageModel("model", new TitansConfig { Architecture = Architecture.Mac, VocabSize = 8, ModelDim = 16, Layers = 2, Heads = 2, SegmentLength = 16 });
        var names = model.named_parameters().Select(p => p.name).ToList();
        Assert.Equal("embedding.weight", names[0]);
        Assert.Equal("blocks.0.mixer_norm.weight", names[1]);
        Assert.Contains("blocks.1.memory.initial_weights.0", names);
        Assert.Contains("blocks.0.attention.persistent_memory", names);
        Assert.Equal(new[] { "norm.weight", "head.weight" }, names.TakeLast(2));
        Assert.DoesNotContain(names, n => n.StartsWith("backbone."));
        Assert.Equal(model.Config.ParameterCount, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void AWrongInputWidthIsAnError()
    {
        using var backbone = Build(Architecture.Lmm);
        Assert.Contains("[batch, time, 16]", Assert.Throws<ArgumentException>(() => backbone.forward(zeros(1, 4, 8, dtype: F64))).Message);
    }
}
