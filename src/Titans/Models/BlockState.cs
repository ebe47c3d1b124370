using Titans.Layers;
using Titans.Memory;

namespace Titans.Models;

/// <summary>What one block carries between streaming calls: its attention cache or its memory state.</summary>
public sealed record BlockState(AttentionCache? Attention, NeuralMemoryState? Memory) : IDisposable
{
    public IEnumerable<TorchSharp.torch.Tensor> Tensors =>
        (Attention is null ? Enumerable.Empty<TorchSharp.torch.Tensor>() : new[] { Attention.Keys, Attention.Values })
        .Concat(Memory?.Tensors ?? Enumerable.Empty<TorchSharp.torch.Tensor>());

    public void Dispose()
    {
        Attention?.Dispose();
        Memory?.Dispose();
    }
}

/// <summary>The state of a whole model between streaming calls: one <see cref="BlockState"/> per block.</summary>
public sealed record ModelState(IReadOnlyList<BlockState> Blocks, long Position) : IDisposable
{
    public IEnumerable<TorchSharp.torch.Tensor> Tensors => Blocks.SelectMany(b => b.Tensors);

    public void Dispose()
    {
        foreach (var block in Blocks) block.Dispose();
    }
}
