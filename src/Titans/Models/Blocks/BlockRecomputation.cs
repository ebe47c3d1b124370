using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// Activation recomputation around a block (HF's gradient checkpointing, over groups of tokens): the block streams over
/// groups of tokens, each group one recomputed autograd node (<see cref="Recomputation"/>), so autograd keeps the block's
/// state at group boundaries only. Streaming in pieces equals one pass, so values are those of the block's own
/// <see cref="Block.Forward"/>. Groups end on the memory's chunk boundaries (MAC: on segment boundaries,
/// <see cref="Block.AlignedGroupTokens"/>), so no memory call spans two groups. <see cref="SequenceBackbone.RecomputeTokens"/>
/// is its setting.
/// </summary>
public static class BlockRecomputation
{
    /// <summary>The block over <paramref name="x"/> in recomputed groups of about <paramref name="groupTokens"/> tokens.</summary>
    public static (Tensor Output, BlockState State) Forward(Block block, Tensor x, BlockState? state, long groupTokens)
    {
        long group = block.AlignedGroupTokens(groupTokens);
        if (x.shape[1] <= group) return block.Forward(x, state);
        long position = block.MemoryPosition(state);
        var sizes = new List<long>();
        for (long done = 0; done < x.shape[1]; done += sizes[^1])
            sizes.Add(Math.Min(group - (position + done) % group, x.shape[1] - done));
        Tensor[] pieces = x.split(sizes.ToArray(), 1);   // one split, so x's gradient is assembled once (not a narrow per group)
        var outputs = new List<Tensor>();
        BlockState? current = state;
        var parameters = block.parameters().ToArray();
        foreach (Tensor piece in pieces)
        {
            BlockState? given = current, produced = null;
            Tensor[] Group(Tensor[] inputs)
            {
                var (output, next) = block.Forward(inputs[0], given?.WithTensors(inputs.Skip(1)));
                produced = next;   // the structure of the outputs, the same on recomputation
                return next.Tensors.Prepend(output).ToArray();
            }
            Tensor[] result = Recomputation.Apply(Group, (given?.Tensors ?? []).Prepend(piece).ToArray(), parameters);
            outputs.Add(result[0]);
            current = produced!.WithTensors(result.Skip(1));
        }
        return (cat(outputs, 1), current!);
    }
}
