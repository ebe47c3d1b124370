using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>LMM: the neural memory alone, a recurrent model: h = x + memory(RMSNorm(x)).</summary>
public sealed class MemoryBlock : Block
{
    readonly NeuralMemory memory;

    public MemoryBlock(string name, TitansConfig config) : base(name, config)
    {
        memory = new NeuralMemory("memory", config.Memory);
        Register(config, ("memory", memory));
    }

    internal override NeuralMemory Memory => memory;

    protected override (Tensor Output, BlockState State) Mix(Tensor x, BlockState? state)
    {
        var (mixed, memoryState) = memory.Forward(mixer_norm.forward(x), StateOf<MemoryBlockState>(state)?.Memory);
        return (x + mixed, new MemoryBlockState(memoryState));
    }

    internal override BlockState WithGradientToStart(BlockState state) =>
        TiedToStart<MemoryBlockState>(state, (given, start) => new MemoryBlockState(NeuralMemory.WithGradientToStart(given.Memory, start)));
}
