using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>
/// The chunked scan (<see cref="ChunkedMemoryScan"/>) with a lean backward: the sequence is cut into groups of G chunks,
/// and each group is one recomputed autograd node (<see cref="Recomputation"/>). Its forward runs without autograd and keeps only what the group
/// started from (its inputs and starting state); its backward recomputes the group with autograd and back-propagates
/// through it. Autograd therefore holds one state per group instead of several state-sized tensors per chunk, so
/// training memory grows with length through the activations alone. Values and gradients are those of the chunked
/// path (tests pin them to it and to the sequential reference). <see cref="MemoryScan.Choose"/> takes it in training where
/// <see cref="HandWrittenScan"/> does not reach (channel-wise forgetting, fixed norms) or is off, for calls longer than one group.
/// </summary>
public static class RecomputedMemoryScan
{
    /// <param name="groupChunks">G, chunks per recomputed group</param>
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, int groupChunks, MemoryStabilizers? stabilizers = null)
    {
        if (groupChunks < 1) throw new ArgumentOutOfRangeException(nameof(groupChunks), $"a group needs at least one chunk, got {groupChunks}");
        stabilizers ??= MemoryStabilizers.None;
        var shared = SharedTensors(mlp, stabilizers);
        long length = keys.shape[2], full = length / chunkSize * chunkSize, group = (long)groupChunks * chunkSize;

        // Full groups first (each ends on a chunk boundary), then the trailing partial chunk as a group of its own, so
        // every group's end state is either the boundary state or the final one.
        var sizes = new List<long>();
        for (long start = 0; start < full; start += group) sizes.Add(Math.Min(group, full - start));
        if (full < length) sizes.Add(length - full);
        // One split per input, not a narrow per group: autograd then assembles each input's gradient once, where a narrow
        // per group would add a zero-filled full-length gradient per group (quadratic in length).
        long[] splitSizes = sizes.ToArray();
        Tensor[] Pieces(Tensor t, long dim) => t.split(splitSizes, dim);
        Tensor[] q = Pieces(queries, 2), k = Pieces(keys, 2), v = Pieces(values, 2);
        Tensor[][] gatePieces = gates.Tensors.Select(t => Pieces(t, 2)).ToArray();   // every gate tensor has time at dim 2
        var outputs = new List<Tensor>();
        MemoryWeights current = state, boundary = state;
        for (int i = 0; i < sizes.Count; i++)
        {
            current = Apply(i);
            if (i < sizes.Count - 1 || full == length) boundary = current;
        }
        Tensor output = outputs.Count == 0 ? queries.narrow(2, 0, 0) : outputs.Count == 1 ? outputs[0] : cat(outputs, 2);
        return new MemoryScanResult(output, boundary, full, current);

        MemoryWeights Apply(int i)
        {
            var inputs = new List<Tensor> { q[i], k[i], v[i] };
            inputs.AddRange(gatePieces.Select(p => p[i]));
            inputs.AddRange(current.Tensors);
            inputs.AddRange(shared);
            // Every tensor the group reads is an input (W₀'s targets and the LayerNorm affine included), so no parameters.
            Tensor[] result = Recomputation.Apply(t =>
            {
                MemoryScanResult r = Run(t, mlp, stabilizers!, chunkSize, state.Depth, gates.ChannelLogDecay is not null);
                return r.Final.Tensors.Prepend(r.Outputs).ToArray();
            }, inputs, []);
            outputs.Add(result[0]);
            int depth = state.Depth;
            return new MemoryWeights(result.Skip(1).Take(depth).ToArray(), result.Skip(1 + depth).Take(depth).ToArray());
        }
    }

    /// <summary>Tensors every group reads: the wrapper's LayerNorm affine and the stabilizers' targets, in a fixed order.</summary>
    internal static List<Tensor> SharedTensors(MemoryMlp mlp, MemoryStabilizers s)
    {
        var list = new List<Tensor>();
        if (mlp.LnWeight is not null) list.Add(mlp.LnWeight);
        if (mlp.LnBias is not null) list.Add(mlp.LnBias);
        if (s.RetentionTarget is not null) list.AddRange(s.RetentionTarget);
        if (s.NormTarget is not null) list.AddRange(s.NormTarget);
        return list;
    }

    /// <summary>
    /// One group's scan from the flat tensor list (the order of <see cref="Scan"/>'s Apply): <paramref name="mlp"/> and
    /// <paramref name="stabilizers"/> give the form, the list gives every tensor.
    /// </summary>
    static MemoryScanResult Run(IReadOnlyList<Tensor> t, MemoryMlp mlp, MemoryStabilizers stabilizers, int chunkSize, int depth, bool channelwise)
    {
        var r = new Runtime.TensorReader(t);
        Tensor q = r.Next(), k = r.Next(), v = r.Next();
        var gates = new MemoryGates(r.Next(), r.Next(), r.Next()) { ChannelLogDecay = r.TakeIf(channelwise, depth) };
        var state = new MemoryWeights(r.Take(depth), r.Take(depth));
        var groupMlp = new MemoryMlp(mlp.Activation, mlp.ResidualLayerNorm, r.NextIf(mlp.LnWeight is not null), r.NextIf(mlp.LnBias is not null));
        var groupStabilizers = stabilizers with
        {
            RetentionTarget = r.TakeIf(stabilizers.RetentionTarget is not null, depth),
            NormTarget = r.TakeIf(stabilizers.NormTarget is not null, depth),
        };
        r.End();
        return ChunkedMemoryScan.Scan(groupMlp, q, k, v, gates, state, chunkSize, groupStabilizers);
    }
}
