using Titans.Memory;
using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Tests.Models;

/// <summary>Named presets, parameter counts without building, equal size across architectures, names.</summary>
public class PresetTests
{
    static long Built(TitansConfig config)
    {
        using var scope = NewDisposeScope();
        using var model = new TitansLanguageModel("model", config);
        return model.parameters().Sum(p => p.numel());
    }

    public static TheoryData<Architecture> Architectures() => new(Enum.GetValues<Architecture>());

    [Theory]
    [MemberData(nameof(Architectures))]
    public void CountedParametersEqualThoseOfTheBuiltModel(Architecture architecture)
    {
        var baseConfig = new TitansConfig
        {
            Architecture = architecture, VocabSize = 40, ModelDim = 24, Layers = 2, Heads = 3, PersistentTokens = 5,
            SegmentLength = 8, Memory = new NeuralMemoryConfig { Heads = 2, Depth = 2, Expansion = 3, ChunkSize = 4 },
        };
        foreach (var config in new[]
                 {
                     baseConfig, baseConfig with { FeedForwardDim = 40, PersistentTokens = 0 },
                     baseConfig with { Memory = baseConfig.Memory with { ChannelwiseForgetting = true, Depth = 3 } },
                     baseConfig with { Memory = baseConfig.Memory with { ConvKernel = 0, DataDependentGates = false } },
                     baseConfig with { Memory = baseConfig.Memory with { OutputGate = OutputGate.None, ResidualLayerNorm = false } },
                 })
            Assert.Equal(Built(config), config.ParameterCount);
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("small")]
    [InlineData("170m")]
    [InlineData("340m")]
    [InlineData("760m")]
    public void EveryArchitectureOfAPresetHasTheSameSize(string preset)
    {
        long reference = Presets.Get(preset, Architecture.TransformerPlusPlus).ParameterCount;
        foreach (var architecture in Enum.GetValues<Architecture>())
        {
            var config = Presets.Get(preset, architecture);
            Assert.Equal(architecture, config.Architecture);
            double ratio = config.ParameterCount / (double)reference;
            Assert.True(Math.Abs(ratio - 1) < 0.015, $"{preset} {architecture}: {config.ParameterCount} vs {reference}");
            if (preset is "tiny" or "small") Assert.Equal(config.ParameterCount, Built(config));
        }
    }

    [Fact]
    public void PaperShapedPresetsHaveTheirNamedSizes()
    {
        foreach (var (preset, millions) in new[] { ("small", 14.0), ("170m", 170.0), ("340m", 340.0), ("760m", 760.0) })
        {
            double actual = Presets.Get(preset, Architecture.Mac).ParameterCount / 1e6;
            Assert.True(Math.Abs(actual / millions - 1) < 0.06, $"{preset}: {actual:F1}M parameters");
        }
    }

    [Fact]
    public void PresetsRoundTripThroughJson()
    {
        foreach (var architecture in Enum.GetValues<Architecture>())
        {
            var config = Presets.Get("small", architecture);
            Assert.Equal(config.ToJson(), TitansConfig.FromJson(config.ToJson()).ToJson());
        }
    }

    [Theory]
    [InlineData("transformer++", Architecture.TransformerPlusPlus)]
    [InlineData("TPP", Architecture.TransformerPlusPlus)]
    [InlineData("swa", Architecture.SlidingWindow)]
    [InlineData("SlidingWindow", Architecture.SlidingWindow)]
    [InlineData("Mac", Architecture.Mac)]
    [InlineData(" mal ", Architecture.Mal)]
    public void ArchitectureNamesParse(string text, Architecture expected) =>
        Assert.Equal(expected, ArchitectureNames.Parse(text));

    [Fact]
    public void UnknownNamesListTheKnownOnes()
    {
        Assert.Contains("tiny, small", Assert.Throws<ArgumentException>(() => Presets.Get("huge", Architecture.Mac)).Message);
        Assert.Contains("MAC", Assert.Throws<ArgumentException>(() => ArchitectureNames.Parse("rnn")).Message);
    }

    [Fact]
    public void InitialForgettingChangesOnlyTheMemorysStartingGate()
    {
        var lmm = Presets.Get("tiny", Architecture.Lmm);
        var changed = lmm.WithInitialForgetting(0.001);
        Assert.Equal(0.001, changed.Memory.InitialForgetting);
        Assert.Equal((lmm with { Memory = lmm.Memory with { InitialForgetting = 0.001 } }).ToJson(), changed.ToJson());
        Assert.Equal(lmm.ParameterCount, changed.ParameterCount);
        Assert.Same(lmm, lmm.WithInitialForgetting(null));
        var transformer = Presets.Get("tiny", Architecture.TransformerPlusPlus);
        Assert.Same(transformer, transformer.WithInitialForgetting(0.001));
        Assert.Contains("InitialForgetting", Assert.Throws<ArgumentException>(() => lmm.WithInitialForgetting(0).Validate()).Message);
    }

    [Fact]
    public void MacSegmentMustEndOnAChunkBoundary()
    {
        var config = Presets.Get("tiny", Architecture.Mac) with { SegmentLength = 30 };
        Assert.Contains("SegmentLength", Assert.Throws<ArgumentException>(() => config.Validate()).Message);
    }
}
