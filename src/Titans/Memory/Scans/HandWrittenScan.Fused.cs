using System.Numerics;
using TorchSharp;
using Titans.Runtime;
using static TorchSharp.torch;
using static Titans.Memory.Scans.FusedMemoryScan;

namespace Titans.Memory.Scans;

// The node's forward and backward as the fused C# kernel (FusedChunkChain): the same tensors in and out, the same
// equations, no libtorch call per chunk.
public static partial class HandWrittenScan
{
    /// <summary>The hand-written node computed by the fused kernel on the CPU: the tensors of <see cref="ScanFunction"/>, each
    /// stream (batch element × head) in one C# call, streams in parallel, every sum in a fixed order.</summary>
    sealed class FusedScanFunction : autograd.MultiTensorFunction<FusedScanFunction>
    {
        public override string Name => "FusedMemoryScan";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var form = (Form)vars[0];
            var tensors = vars.Skip(1).Cast<Tensor>().ToList();
            ctx.set_materialize_grads(false);
            using var _ = no_grad();
            var x = NodeTensors.Read(form, new TensorReader(tensors));
            var (outputs, kept) = x.Q.dtype == ScalarType.Float32 ? FusedNode<float>.Forward(form, x) : FusedNode<double>.Forward(form, x);
            ctx.save_for_backward(tensors.Concat(kept).ToList());
            ctx.save_data("form", form);
            ctx.save_data("needs", tensors.Select(t => t.requires_grad).ToArray());
            form.Transient.AddRange(kept);   // the saved copies hold them once forward returns
            return outputs.Flat.ToList();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs) =>
            NodeBackward(ctx, gradOutputs, (form, inputs, kept, given) =>
            {
                var x = NodeTensors.Read(form, new TensorReader(inputs));
                NodeTensors grads = x.Q.dtype == ScalarType.Float32
                    ? FusedNode<float>.Backward(form, x, kept, given)
                    : FusedNode<double>.Backward(form, x, kept, given);
                return grads.Flat.ToList();
            });
    }

    /// <summary>
    /// The fused node's two passes for one element type. Forward keeps, per stream, the transposed state at the start of
    /// every group but the last and of every chunk of the last (as <see cref="Kept"/>, without the factors, which backward
    /// recomputes); backward replays the other groups from their starts.
    /// </summary>
    static class FusedNode<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        /// <summary>A call's sizes and its chunks' places among the kept states.</summary>
        sealed record Layout(int Streams, int Chunks, int ChunkSize, int Dim, (int Out, int In)[] Shapes, int LastRows, int GroupChunks)
        {
            public int Groups => (Chunks + GroupChunks - 1) / GroupChunks;
            public int LastGroupStart => (Groups - 1) * GroupChunks;
            public int Slots => Groups - 1 + Chunks - LastGroupStart;
            public int Rows(int chunk) => chunk == Chunks - 1 ? LastRows : ChunkSize;

            /// <summary>Layer l's weights (part 0) or momentum (part 1) of stream s in kept slot <paramref name="slot"/> (<paramref name="kept"/>: weights per layer, then momentum).</summary>
            public Span<T> Kept(nint[] kept, int part, int l, int s, int slot)
            {
                int size = Size(Shapes[l]);
                return At<T>(kept[part * Shapes.Length + l], ((long)s * Slots + slot) * size, size);
            }

            /// <summary>Where chunk <paramref name="c"/>'s starting state is kept, or −1 where it is not.</summary>
            public int Slot(int c) => c >= LastGroupStart ? Groups - 1 + c - LastGroupStart : c % GroupChunks == 0 ? c / GroupChunks : -1;

            public static Layout Of(Form form, NodeTensors x)
            {
                int chunks = (int)x.Q.shape[1], b = (int)x.Q.shape[2];
                return new Layout((int)x.Q.shape[0], chunks, b, (int)x.Q.shape[3],
                    x.Start.Weights.Select(w => ((int)w.shape[1], (int)w.shape[2])).ToArray(),
                    (int)(form.Length - (long)(chunks - 1) * b), Math.Min(form.GroupChunks, chunks));
            }
        }

        /// <summary>The node's inputs as dense tensors and their addresses, and each stream's form (its LayerNorm affine and W₀).</summary>
        sealed class Dense
        {
            public readonly nint Q, K, V, A, D, C, AEnd, DEnd, CEnd, EEnd, MEnd;
            public readonly nint[] Weights, Momentum;
            public readonly ChainForm<T>[] Forms;

            public Dense(Form form, NodeTensors x, Layout layout)
            {
                Tensor Of(Tensor t) => t.detach().contiguous();
                (Q, K, V) = (Address(Of(x.Q)), Address(Of(x.K)), Address(Of(x.V)));
                (A, D, C) = (Address(Of(x.A)), Address(Of(x.D)), Address(Of(x.C)));
                (AEnd, DEnd, CEnd, EEnd, MEnd) = (Address(Of(x.AEnd)), Address(Of(x.DEnd)), Address(Of(x.CEnd)), Address(Of(x.EEnd)), Address(Of(x.MEnd)));
                Weights = x.Start.Weights.Select(w => Address(Of(w))).ToArray();
                Momentum = x.Start.Momentum.Select(s => Address(Of(s))).ToArray();
                // The per-stream constants (W₀ and the LayerNorm affine expanded over the batch), each tensor read once.
                T[][]? anchors = x.Anchor?.Select(w => Values<T>(w.detach())).ToArray();
                T[]? lnWeight = x.LnWeight is null ? null : Values<T>(x.LnWeight.detach()), lnBias = x.LnBias is null ? null : Values<T>(x.LnBias.detach());
                Forms = Enumerable.Range(0, layout.Streams)
                    .Select(s => ChainForm<T>.Slice(s, layout.Shapes, form.Mlp, anchors, lnWeight, lnBias, form.Clip, layout.ChunkSize)).ToArray();
            }

            /// <summary>Loads chunk <paramref name="c"/>'s coefficients of stream <paramref name="s"/> into the chain.</summary>
            public void Coefficients(FusedChunkChain<T> chain, Layout layout, int s, int c)
            {
                int b = layout.ChunkSize;
                long chunk = (long)s * layout.Chunks + c;
                chain.LoadCoefficients(At<T>(A, chunk * b, b), At<T>(D, chunk * b, b), At<T>(C, chunk * b * b, b * b),
                    At<T>(AEnd, chunk, 1)[0], At<T>(DEnd, chunk, 1)[0], At<T>(EEnd, chunk, 1)[0], At<T>(CEnd, chunk * b, b), At<T>(MEnd, chunk * b, b),
                    layout.Rows(c));
            }

            /// <summary>Chunk c's rows of a [BH, N, b, d] tensor at <paramref name="p"/>.</summary>
            public static Span<T> Rows(nint p, Layout layout, int s, int c) =>
                At<T>(p, ((long)s * layout.Chunks + c) * layout.ChunkSize * layout.Dim, layout.Rows(c) * layout.Dim);
        }

        static void ForStreams(Layout layout, Action<int> stream) =>
            FusedMemoryScan.ForStreams(layout.Streams, (long)layout.Chunks * layout.ChunkSize, layout.Shapes, stream);

        static int Size((int Out, int In) shape) => shape.Out * shape.In;

        // The kernel writes its outputs through their addresses: dense row-major, whatever the layout of the tensor they match.
        static Tensor Zeros(Tensor like) => zeros(like.shape, dtype: like.dtype, device: like.device);
        static Tensor Empty(Tensor like) => empty(like.shape, dtype: like.dtype, device: like.device);

        public static (NodeOutputs Outputs, Tensor[] Kept) Forward(Form form, NodeTensors x)
        {
            var layout = Layout.Of(form, x);
            int depth = form.Depth;
            using var scope = NewDisposeScope();
            var dense = new Dense(form, x, layout);
            Tensor output = Zeros(x.Q);
            Tensor[] finalW = x.Start.Weights.Select(w => Empty(w)).ToArray(), finalS = x.Start.Momentum.Select(s => Empty(s)).ToArray();
            Tensor[]? boundaryW = form.BoundaryOutput ? x.Start.Weights.Select(w => Empty(w)).ToArray() : null;
            Tensor[]? boundaryS = form.BoundaryOutput ? x.Start.Momentum.Select(s => Empty(s)).ToArray() : null;
            Tensor[] kept = layout.Shapes.Select(sh => empty(layout.Streams, layout.Slots, Size(sh), dtype: x.Q.dtype))
                .Concat(layout.Shapes.Select(sh => empty(layout.Streams, layout.Slots, Size(sh), dtype: x.Q.dtype))).ToArray();
            nint op = Address(output);
            nint[] fw = finalW.Select(Address).ToArray(), fs = finalS.Select(Address).ToArray(), kp = kept.Select(Address).ToArray();
            nint[]? bw = boundaryW?.Select(Address).ToArray(), bs = boundaryS?.Select(Address).ToArray();
            int nonFinite = 0;                                        // streams whose outputs or final state left the finite numbers
            ForStreams(layout, s =>
            {
                var chain = FusedChunkChain<T>.For(dense.Forms[s]);
                for (int l = 0; l < depth; l++)
                    chain.LoadState(l, At<T>(dense.Weights[l], (long)s * Size(layout.Shapes[l]), Size(layout.Shapes[l])),
                        At<T>(dense.Momentum[l], (long)s * Size(layout.Shapes[l]), Size(layout.Shapes[l])));
                for (int c = 0; c < layout.Chunks; c++)
                {
                    if (layout.Slot(c) is var slot and >= 0)
                        for (int l = 0; l < depth; l++)
                        {
                            chain.WeightsT[l].CopyTo(layout.Kept(kp, 0, l, s, slot));
                            chain.MomentumT[l].CopyTo(layout.Kept(kp, 1, l, s, slot));
                        }
                    if (bw is not null && c == layout.Chunks - 1)
                    {
                        Untranspose(chain.WeightsT, layout.Shapes, s, bw);
                        Untranspose(chain.MomentumT, layout.Shapes, s, bs!);
                    }
                    dense.Coefficients(chain, layout, s, c);
                    chain.ForwardChunk(Dense.Rows(dense.Q, layout, s, c), Dense.Rows(dense.K, layout, s, c), Dense.Rows(dense.V, layout, s, c),
                        layout.Rows(c), Dense.Rows(op, layout, s, c));
                }
                Untranspose(chain.WeightsT, layout.Shapes, s, fw);
                Untranspose(chain.MomentumT, layout.Shapes, s, fs);
                long rows = (long)layout.Chunks * layout.ChunkSize * layout.Dim;
                if (!chain.Finite(At<T>(op, s * rows, (int)rows))) Interlocked.Increment(ref nonFinite);
            });
            form.KnownFinite = nonFinite == 0;
            var outputs = new NodeOutputs(output, new MemoryWeights(finalW, finalS),
                boundaryW is null ? null : new MemoryWeights(boundaryW, boundaryS!));
            scope.MoveToOuter(outputs.Flat.Concat(kept));
            return (outputs, kept);
        }

        public static NodeTensors Backward(Form form, NodeTensors x, List<Tensor> kept, List<Tensor> gradOutputs)
        {
            var layout = Layout.Of(form, x);
            int depth = form.Depth, b = layout.ChunkSize, d = layout.Dim;
            var dense = new Dense(form, x, layout);
            var given = new TensorReader(gradOutputs);
            Tensor? Defined() => given.NextDefined()?.contiguous();
            Tensor? gradOutput = Defined();
            Tensor?[] finalW = Enumerable.Range(0, depth).Select(_ => Defined()).ToArray(), finalS = Enumerable.Range(0, depth).Select(_ => Defined()).ToArray();
            Tensor?[] boundaryW = Enumerable.Range(0, depth).Select(_ => Defined()).ToArray(), boundaryS = Enumerable.Range(0, depth).Select(_ => Defined()).ToArray();
            Tensor[] keptDense = kept.Select(t => t.contiguous()).ToArray();

            var g = new NodeTensors(Zeros(x.Q), Zeros(x.K), Zeros(x.V), Zeros(x.A), Zeros(x.D), Zeros(x.C),
                Zeros(x.AEnd), Zeros(x.DEnd), Zeros(x.CEnd), Zeros(x.EEnd), Zeros(x.MEnd),
                new MemoryWeights(x.Start.Weights.Select(w => Zeros(w)).ToArray(), x.Start.Momentum.Select(s => Zeros(s)).ToArray()),
                x.LnWeight is null ? null : Zeros(x.LnWeight), x.LnBias is null ? null : Zeros(x.LnBias),
                x.Anchor?.Select(w => Zeros(w)).ToArray());
            nint gq = Address(g.Q), gk = Address(g.K), gv = Address(g.V), ga = Address(g.A), gd = Address(g.D), gc = Address(g.C);
            nint gaEnd = Address(g.AEnd), gdEnd = Address(g.DEnd), gcEnd = Address(g.CEnd), geEnd = Address(g.EEnd), gmEnd = Address(g.MEnd);
            nint[] gw = g.Start.Weights.Select(Address).ToArray(), gs = g.Start.Momentum.Select(Address).ToArray();
            nint? glw = g.LnWeight is null ? null : Address(g.LnWeight), glb = g.LnBias is null ? null : Address(g.LnBias);
            nint[]? gAnchor = g.Anchor?.Select(Address).ToArray();
            nint? go = gradOutput is null ? null : Address(gradOutput);
            nint?[] fw = finalW.Select(t => t is null ? (nint?)null : Address(t)).ToArray(), fs = finalS.Select(t => t is null ? (nint?)null : Address(t)).ToArray();
            nint?[] bw = boundaryW.Select(t => t is null ? (nint?)null : Address(t)).ToArray(), bs = boundaryS.Select(t => t is null ? (nint?)null : Address(t)).ToArray();
            nint[] kp = keptDense.Select(Address).ToArray();

            ForStreams(layout, s =>
            {
                var chain = FusedChunkChain<T>.For(dense.Forms[s]);
                chain.BeginBackward();
                // The state's gradient at the end, transposed into the chain's layout.
                void AddGradient(nint?[] weights, nint?[] momentum)
                {
                    for (int l = 0; l < depth; l++)
                    {
                        var (o, i) = layout.Shapes[l];
                        AddTransposed(weights[l], chain.GradWeightsT[l], s, o, i);
                        AddTransposed(momentum[l], chain.GradMomentumT[l], s, o, i);
                    }
                }
                AddGradient(fw, fs);
                Span<T> ends = stackalloc T[3];
                for (int group = layout.Groups - 1; group >= 0; group--)
                {
                    int first = group * layout.GroupChunks, count = Math.Min(layout.GroupChunks, layout.Chunks - first);
                    bool replayed = first < layout.LastGroupStart;
                    if (replayed)
                    {
                        LoadKept(chain, layout, kp, s, layout.Slot(first));
                        for (int j = 0; j < count; j++)
                        {
                            var (weights, momentum) = chain.GroupState(j);
                            for (int l = 0; l < depth; l++)
                            {
                                chain.WeightsT[l].CopyTo(weights[l], 0);
                                chain.MomentumT[l].CopyTo(momentum[l], 0);
                            }
                            if (j + 1 == count) break;
                            dense.Coefficients(chain, layout, s, first + j);
                            chain.AdvanceChunk(Dense.Rows(dense.K, layout, s, first + j), Dense.Rows(dense.V, layout, s, first + j), layout.Rows(first + j));
                        }
                    }
                    for (int c = first + count - 1; c >= first; c--)
                    {
                        if (form.BoundaryOutput && c == layout.Chunks - 2) AddGradient(bw, bs);
                        if (replayed)
                        {
                            var (weights, momentum) = chain.GroupState(c - first);
                            for (int l = 0; l < depth; l++)
                            {
                                weights[l].CopyTo(chain.WeightsT[l], 0);
                                momentum[l].CopyTo(chain.MomentumT[l], 0);
                            }
                        }
                        else
                            LoadKept(chain, layout, kp, s, layout.Slot(c));
                        dense.Coefficients(chain, layout, s, c);
                        long chunk = (long)s * layout.Chunks + c;
                        ends.Clear();
                        var spans = new ChunkGradientSpans<T>(Dense.Rows(gq, layout, s, c), Dense.Rows(gk, layout, s, c), Dense.Rows(gv, layout, s, c),
                            At<T>(ga, chunk * b, b), At<T>(gd, chunk * b, b), At<T>(gc, chunk * b * b, b * b), ends,
                            At<T>(gcEnd, chunk * b, b), At<T>(gmEnd, chunk * b, b),
                            glw is { } lw ? At<T>(lw, (long)s * d, d) : default, glb is { } lb ? At<T>(lb, (long)s * d, d) : default);
                        chain.BackwardChunk(Dense.Rows(dense.Q, layout, s, c), Dense.Rows(dense.K, layout, s, c), Dense.Rows(dense.V, layout, s, c),
                            go is { } o ? Dense.Rows(o, layout, s, c) : default, layout.Rows(c), spans);
                        At<T>(gaEnd, chunk, 1)[0] = ends[0];
                        At<T>(gdEnd, chunk, 1)[0] = ends[1];
                        At<T>(geEnd, chunk, 1)[0] = ends[2];
                    }
                }
                Untranspose(chain.GradWeightsT, layout.Shapes, s, gw);
                Untranspose(chain.GradMomentumT, layout.Shapes, s, gs);
                if (gAnchor is not null) Untranspose(chain.GradAnchorT, layout.Shapes, s, gAnchor);
            });
            return g;
        }

        /// <summary>Adds stream s of an [out, in] gradient tensor (where autograd gave one), transposed, to <paramref name="target"/>.</summary>
        static void AddTransposed(nint? gradient, T[] target, int s, int o, int i)
        {
            if (gradient is not { } p) return;
            var source = At<T>(p, (long)s * o * i, o * i);
            for (int r = 0; r < o; r++)
                for (int col = 0; col < i; col++) target[col * o + r] += source[r * i + col];
        }

        /// <summary>Kept slot <paramref name="slot"/> of stream s into the chain's state.</summary>
        static void LoadKept(FusedChunkChain<T> chain, Layout layout, nint[] kept, int s, int slot)
        {
            for (int l = 0; l < layout.Shapes.Length; l++)
            {
                layout.Kept(kept, 0, l, s, slot).CopyTo(chain.WeightsT[l]);
                layout.Kept(kept, 1, l, s, slot).CopyTo(chain.MomentumT[l]);
            }
        }
    }
}
