using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// The chunked scan (<see cref="ChunkedMemoryScan"/>) with a lean backward: the sequence is cut into groups of G chunks,
/// and each group is one custom autograd function. Its forward runs without autograd and keeps only what the group
/// started from (its inputs and starting state); its backward recomputes the group with autograd and back-propagates
/// through it. Autograd therefore holds one state per group instead of several state-sized tensors per chunk, so
/// training memory grows with length through the activations alone. Values and gradients are those of the chunked
/// path (tests pin them to it and to the sequential reference).
/// </summary>
public static class RecomputedMemoryScan
{
    /// <param name="groupChunks">G, chunks per recomputed group</param>
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, int groupChunks, MemoryStabilizers? stabilizers = null)
    {
        if (groupChunks < 1) throw new ArgumentOutOfRangeException(nameof(groupChunks), $"a group needs at least one chunk, got {groupChunks}");
        stabilizers ??= MemoryStabilizers.None;
        var layout = new GroupLayout(mlp, stabilizers, chunkSize, state.Depth, gates.ChannelLogDecay is not null);
        var shared = layout.SharedTensors(mlp, stabilizers);
        bool needsGraph = is_grad_enabled() && new[] { queries, keys, values }.Concat(gates.Tensors).Concat(state.Tensors)
            .Concat(shared).Any(t => t.requires_grad);
        long length = keys.shape[2], full = length / chunkSize * chunkSize, group = (long)groupChunks * chunkSize;
        // One group would hold every chunk's graph during its recomputation anyway: plain autograd costs the same memory
        // and saves the second forward.
        if (!needsGraph || length <= group)
            return ChunkedMemoryScan.Scan(mlp, queries, keys, values, gates, state, chunkSize, stabilizers);

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
            var args = new List<object> { layout, q[i], k[i], v[i] };
            args.AddRange(gatePieces.Select(p => p[i]));
            args.AddRange(current.Tensors);
            args.AddRange(shared);
            List<Tensor> result = GroupFunction.apply(args.ToArray());
            outputs.Add(result[0]);
            int depth = state.Depth;
            return new MemoryWeights(result.Skip(1).Take(depth).ToArray(), result.Skip(1 + depth).Take(depth).ToArray());
        }
    }

    /// <summary>What a group's function needs besides tensors: the memory's form, the stabilizers' switches, the chunk size.</summary>
    sealed record GroupLayout(MemoryActivation Activation, bool ResidualLayerNorm, bool HasLnWeight, bool HasLnBias,
        bool HasRetention, bool HasNorm, bool RowNorms, double GradientClip, int ChunkSize, int Depth, bool Channelwise)
    {
        public GroupLayout(MemoryMlp mlp, MemoryStabilizers s, int chunkSize, int depth, bool channelwise)
            : this(mlp.Activation, mlp.ResidualLayerNorm, mlp.LnWeight is not null, mlp.LnBias is not null,
                s.RetentionTarget is not null, s.NormTarget is not null, s.RowNorms, s.GradientClip, chunkSize, depth, channelwise) { }

        /// <summary>Tensors every group reads: the wrapper's LayerNorm affine and the stabilizers' targets, in a fixed order.</summary>
        public List<Tensor> SharedTensors(MemoryMlp mlp, MemoryStabilizers s)
        {
            var list = new List<Tensor>();
            if (mlp.LnWeight is not null) list.Add(mlp.LnWeight);
            if (mlp.LnBias is not null) list.Add(mlp.LnBias);
            if (s.RetentionTarget is not null) list.AddRange(s.RetentionTarget);
            if (s.NormTarget is not null) list.AddRange(s.NormTarget);
            return list;
        }

        /// <summary>Rebuilds the scan's arguments from the flat tensor list (the order of <see cref="Scan"/>'s Apply).</summary>
        public (MemoryMlp, Tensor, Tensor, Tensor, MemoryGates, MemoryWeights, MemoryStabilizers) Unpack(IReadOnlyList<Tensor> t)
        {
            int i = 0;
            Tensor Next() => t[i++];
            Tensor[] Take(int n) => Enumerable.Range(0, n).Select(_ => Next()).ToArray();
            Tensor q = Next(), k = Next(), v = Next();
            var gates = new MemoryGates(Next(), Next(), Next()) { ChannelLogDecay = Channelwise ? Take(Depth) : null };
            var state = new MemoryWeights(Take(Depth), Take(Depth));
            Tensor? lnWeight = HasLnWeight ? Next() : null, lnBias = HasLnBias ? Next() : null;
            var stabilizers = new MemoryStabilizers
            {
                RetentionTarget = HasRetention ? Take(Depth) : null,
                NormTarget = HasNorm ? Take(Depth) : null,
                RowNorms = RowNorms,
                GradientClip = GradientClip,
            };
            return (new MemoryMlp(Activation, ResidualLayerNorm, lnWeight, lnBias), q, k, v, gates, state, stabilizers);
        }

        public MemoryScanResult Run(IReadOnlyList<Tensor> tensors)
        {
            var (mlp, q, k, v, gates, state, stabilizers) = Unpack(tensors);
            return ChunkedMemoryScan.Scan(mlp, q, k, v, gates, state, ChunkSize, stabilizers);
        }
    }

    /// <summary>
    /// One group as an autograd node: inputs (layout, q, k, v, gates, start state, shared tensors), outputs (the group's
    /// retrieved values, its end state's weights, then momentum).
    /// </summary>
    sealed class GroupFunction : autograd.MultiTensorFunction<GroupFunction>
    {
        public override string Name => "RecomputedMemoryScan";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var layout = (GroupLayout)vars[0];
            var tensors = vars.Skip(1).Cast<Tensor>().ToList();
            ctx.save_for_backward(tensors);
            ctx.save_data("layout", layout);
            ctx.save_data("needs", tensors.Select(t => t.requires_grad).ToArray());
            // Undefined output gradients stay undefined (zero): TorchSharp would fill them from a cached tensor that the
            // caller's dispose scope has already freed.
            ctx.set_materialize_grads(false);
            MemoryScanResult result = layout.Run(tensors);
            // Outputs must be new tensors, not inputs (a group of one partial chunk would otherwise not be distinct).
            return new[] { result.Outputs }.Concat(result.Final.Tensors).Select(t => tensors.Any(x => ReferenceEquals(x, t)) ? t.clone() : t).ToList();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            // An exception must not cross the native autograd engine (the process would die): report it and return NaN
            // gradients, which the trainer's finiteness check turns into a clear stop.
            try { return Backward(ctx, gradOutputs); }
            catch (Exception e)
            {
                Console.Error.WriteLine($"error: the recomputed memory scan's backward failed: {e.Message}");
                var saved = ctx.get_saved_variables();
                var needs = (bool[])ctx.get_data("needs");
                return new Tensor?[] { null }.Concat(saved.Select((t, i) => needs[i] ? full_like(t, double.NaN) : null)).ToList()!;
            }
        }

        static List<Tensor> Backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var layout = (GroupLayout)ctx.get_data("layout");
            var needs = (bool[])ctx.get_data("needs");
            using var scope = NewDisposeScope();
            List<Tensor> leaves = ctx.get_saved_variables().Select((t, i) => t.detach().requires_grad_(needs[i])).ToList();
            var grads = new Tensor?[leaves.Count];
            using (enable_grad())
            {
                MemoryScanResult result = layout.Run(leaves);
                var produced = new[] { result.Outputs }.Concat(result.Final.Tensors).ToList();
                var pairs = produced.Zip(gradOutputs).Where(p => p.First.requires_grad && !p.Second.IsInvalid).ToList();
                var wanted = Enumerable.Range(0, leaves.Count).Where(i => needs[i]).ToList();
                if (pairs.Count > 0 && wanted.Count > 0)
                {
                    var computed = autograd.grad(pairs.Select(p => p.First).ToList(), wanted.Select(i => leaves[i]).ToList(),
                        pairs.Select(p => p.Second).ToList(), allow_unused: true);
                    for (int j = 0; j < wanted.Count; j++)
                        grads[wanted[j]] = computed[j].IsInvalid ? null : computed[j];
                }
            }
            var kept = grads.Where(g => g is not null).Select(g => g!).ToList();
            scope.MoveToOuter(kept);
            return new Tensor?[] { null }.Concat(grads).ToList()!;
        }
    }
}
