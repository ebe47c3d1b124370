using Titans.Layers;
using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// What one block carries between streaming calls. Attention blocks: the attention cache (bounded by the window;
/// MAC: the current segment only). Memory blocks: the memory state. MAC also keeps the memory weights as they were
/// at the start of the current segment (what its reads see) and the convolution cache of the read path's stream.
/// </summary>
public sealed record BlockState(
    AttentionCache? Attention,
    NeuralMemoryState? Memory,
    IReadOnlyList<Tensor>? SegmentMemory = null,
    Tensor? ReadConvCache = null) : IDisposable
{
    public IEnumerable<Tensor> Tensors =>
        (Attention is null ? Enumerable.Empty<Tensor>() : new[] { Attention.Keys, Attention.Values })
        .Concat(Memory?.Tensors ?? Enumerable.Empty<Tensor>())
        .Concat(SegmentMemory ?? Enumerable.Empty<Tensor>())
        .Concat(ReadConvCache is null ? Enumerable.Empty<Tensor>() : new[] { ReadConvCache });

    /// <summary>A state of this one's structure holding <paramref name="tensors"/>, in the order of <see cref="Tensors"/>.</summary>
    public BlockState WithTensors(IEnumerable<Tensor> tensors)
    {
        using var e = tensors.GetEnumerator();
        Tensor Next() => e.MoveNext() ? e.Current : throw new ArgumentException("Too few tensors for the block state.");
        var attention = Attention is null ? null : Attention with { Keys = Next(), Values = Next() };
        var memory = Memory?.WithTensors(e);
        var segment = SegmentMemory?.Select(_ => Next()).ToArray();
        var conv = ReadConvCache is null ? null : Next();
        if (e.MoveNext()) throw new ArgumentException("Too many tensors for the block state.");
        return new BlockState(attention, memory, segment, conv);
    }

    public void Dispose()
    {
        Attention?.Dispose();
        Memory?.Dispose();
        foreach (var t in SegmentMemory ?? Array.Empty<Tensor>()) t.Dispose();
        ReadConvCache?.Dispose();
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
