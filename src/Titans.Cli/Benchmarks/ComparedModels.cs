using Titans.Models;

namespace Titans.Cli.Benchmarks;

/// <summary>
/// The models a comparison trains: the given architectures of one preset, at equal parameter count, with the same memory
/// settings set over every memory (the one merge rule of <see cref="TitansConfig.With"/>).
/// </summary>
public sealed record ComparedModels
{
    public string Preset { get; init; } = "tiny";
    public required IReadOnlyList<Architecture> Architectures { get; init; }
    /// <summary>What MAC writes (its only effect is on MAC).</summary>
    public MacWrite MacWrite { get; init; } = MacWrite.AttentionOutput;
    /// <summary>--initial-forgetting and --memory: set over every memory model's memory.</summary>
    public double? InitialForgetting { get; init; }
    public string? MemoryPatch { get; init; }

    /// <summary>The model of <paramref name="architecture"/>, validated.</summary>
    public TitansConfig Config(Architecture architecture) =>
        Presets.Get(Preset, architecture).WithMacWrite(MacWrite).WithInitialForgetting(InitialForgetting).WithMemory(MemoryPatch).Validate();
}
