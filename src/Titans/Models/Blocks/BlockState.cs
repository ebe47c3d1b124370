using Titans.Layers;
using Titans.Memory;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// What one block carries between streaming calls; each kind of block has its own (<see cref="AttentionBlockState"/>,
/// <see cref="MemoryBlockState"/>, <see cref="GatedBlockState"/> for MAG and MAL, <see cref="MacBlockState"/>).
/// </summary>
public abstract class BlockState : IDisposable
{
    /// <summary>Every tensor of the state, in a fixed order (<see cref="Read"/> takes them back in it).</summary>
    public abstract IEnumerable<Tensor> Tensors { get; }

    /// <summary>The neural memory's state, in blocks that have a memory; null in attention blocks.</summary>
    public virtual NeuralMemoryState? Memory => null;

    /// <summary>A state of this one's structure holding <paramref name="tensors"/>, in the order of <see cref="Tensors"/>.</summary>
    public BlockState WithTensors(IEnumerable<Tensor> tensors)
    {
        var reader = new TensorReader(tensors);
        var state = Read(reader);
        reader.End();
        return state;
    }

    /// <summary>A state of this one's structure from the next tensors of <paramref name="tensors"/>, in the order of <see cref="Tensors"/>.</summary>
    protected abstract BlockState Read(TensorReader tensors);

    protected static AttentionCache? Next(TensorReader tensors, AttentionCache? like) =>
        like is null ? null : like with { Keys = tensors.Next(), Values = tensors.Next() };

    protected static IEnumerable<Tensor> Of(AttentionCache? cache) => cache is null ? [] : [cache.Keys, cache.Values];

    public void Dispose()
    {
        foreach (var tensor in Tensors) tensor.Dispose();
    }
}

/// <summary>Transformer++ and SWA: the attention cache (bounded by the window in SWA).</summary>
public sealed class AttentionBlockState(AttentionCache? attention) : BlockState
{
    public AttentionCache? Attention { get; } = attention;
    public override IEnumerable<Tensor> Tensors => Of(Attention);
    protected override BlockState Read(TensorReader tensors) => new AttentionBlockState(Next(tensors, Attention));
}

/// <summary>LMM: the memory state.</summary>
public sealed class MemoryBlockState(NeuralMemoryState memory) : BlockState
{
    public override NeuralMemoryState Memory { get; } = memory;
    public override IEnumerable<Tensor> Tensors => Memory.Tensors;
    protected override BlockState Read(TensorReader tensors) => new MemoryBlockState(Memory.WithTensors(tensors));
}

/// <summary>MAG and MAL: the sliding-window attention cache and the memory state.</summary>
public sealed class GatedBlockState(AttentionCache? attention, NeuralMemoryState memory) : BlockState
{
    public AttentionCache? Attention { get; } = attention;
    public override NeuralMemoryState Memory { get; } = memory;
    public override IEnumerable<Tensor> Tensors => Of(Attention).Concat(Memory.Tensors);
    protected override BlockState Read(TensorReader tensors)
    {
        var attention = Next(tensors, Attention);
        return new GatedBlockState(attention, Memory.WithTensors(tensors));
    }
}

/// <summary>
/// MAC: the attention cache of the current segment only, the memory state, the memory weights as they were at the
/// start of the current segment (what its reads see), and the convolution cache of the read path's stream.
/// </summary>
public sealed class MacBlockState(AttentionCache? attention, NeuralMemoryState memory, IReadOnlyList<Tensor> segmentMemory, Tensor? readConvCache)
    : BlockState
{
    public AttentionCache? Attention { get; } = attention;
    public override NeuralMemoryState Memory { get; } = memory;
    public IReadOnlyList<Tensor> SegmentMemory { get; } = segmentMemory;
    public Tensor? ReadConvCache { get; } = readConvCache;

    public override IEnumerable<Tensor> Tensors =>
        Of(Attention).Concat(Memory.Tensors).Concat(SegmentMemory).Concat(ReadConvCache is null ? [] : [ReadConvCache]);

    protected override BlockState Read(TensorReader tensors)
    {
        var attention = Next(tensors, Attention);
        var memory = Memory.WithTensors(tensors);
        var segment = tensors.Take(SegmentMemory.Count);
        return new MacBlockState(attention, memory, segment, tensors.NextIf(ReadConvCache is not null));
    }
}

/// <summary>The state of a whole model between streaming calls: one <see cref="BlockState"/> per block.</summary>
public sealed record ModelState(IReadOnlyList<BlockState> Blocks, long Position) : IDisposable
{
    public IEnumerable<Tensor> Tensors => Blocks.SelectMany(b => b.Tensors);

    public void Dispose()
    {
        foreach (var block in Blocks) block.Dispose();
    }
}
