using TorchSharp;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>
/// The chunked scan (<see cref="ChunkedMemoryScan"/>) as one autograd node whose backward is written out by hand, as the
/// TTT and fla kernels do. The chunk coefficients (A, d, C and their end rows) are computed for all chunks at once
/// outside the node, with autograd, which hands their gradients on to the gates. Inside the node:
/// <list type="bullet">
/// <item>forward runs without autograd: the state chain chunk by chunk (inner-gradient factors, then the update), then
/// retrieval for up to <see cref="RetrievalChunks"/> chunks at once. It keeps its inputs, the state at the start of
/// every group of G chunks, and for the last group each chunk's starting state and factors (in models a memory call is
/// one group, so backward replays nothing);</item>
/// <item>backward takes the groups last to first: it replays a group's chain from its saved start, then per batch of
/// chunks recomputes the batch's retrieval and back-propagates through it at once (it does not depend on the gradient
/// flowing back through the states), and walks the batch's chunks backward through the state update and the inner
/// gradient (the MLP's backward and the LayerNorm wrapper's, differentiated once more).</item>
/// </list>
/// Autograd's per-op bookkeeping and its per-chunk saved tensors are gone; memory grows with length through one state
/// per group. Scalar forgetting gates with no stabilizer or the presets' (retention toward W₀, the inner-gradient soft
/// clamp) take this path; channel-wise forgetting and the fixed-norm stabilizer keep autograd (<see cref="MemoryScan.Choose"/>).
/// Inference keeps <see cref="ChunkedMemoryScan"/>, which is faster without autograd. Tests pin values and gradients to
/// autograd through the chunked path and to the sequential reference; the math is written out in docs/fast-memory.md.
/// On the CPU the same node runs as the fused C# kernel (<see cref="FusedChunkChain{T}"/>, HandWrittenScan.Fused.cs):
/// the same tensors in and out, the same equations, each stream in one call; these libtorch passes are its oracle and the
/// GPU path. This file holds the entry and the node's tensors by name (what goes in, what comes out, what forward keeps
/// for backward); HandWrittenScan.Forward.cs and HandWrittenScan.Backward.cs hold the two passes.
/// </summary>
public static partial class HandWrittenScan
{
    /// <summary>
    /// Chunks whose retrieval runs as one batch: enough to fill the matmuls, few enough that the batch's stacked states stay
    /// in cache (at width 512 a batch of 256 chunks ran 6× slower per chunk than batches of 16).
    /// </summary>
    const int RetrievalChunks = 16;

    /// <summary>The forms the backward is written for (<see cref="MemoryScan.Choose"/> sends only these here).</summary>
    static bool Supports(MemoryGates gates, MemoryStabilizers? stabilizers) =>
        gates.ChannelLogDecay is null && stabilizers?.NormTarget is null;

    /// <param name="groupChunks">G: chunks between the states that forward keeps for backward</param>
    /// <param name="fused">run the node as the fused C# kernel (CPU, float32/float64) instead of libtorch calls</param>
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, int groupChunks, MemoryStabilizers? stabilizers = null, bool fused = false)
    {
        stabilizers ??= MemoryStabilizers.None;
        if (!Supports(gates, stabilizers))
            throw new ArgumentException("the hand-written backward covers scalar forgetting gates without the fixed-norm stabilizer", nameof(gates));
        if (groupChunks < 1) throw new ArgumentOutOfRangeException(nameof(groupChunks), $"a group needs at least one chunk, got {groupChunks}");
        long batch = keys.shape[0], heads = keys.shape[1], length = keys.shape[2], dim = keys.shape[3];
        if (length == 0)
            return new MemoryScanResult(queries.narrow(2, 0, 0), state, 0, state);
        long bh = batch * heads, b = chunkSize;
        long chunks = (length + b - 1) / b, padded = chunks * b, fullChunks = length / b;
        int depth = state.Depth;
        Tensor Chunked(Tensor x) => nn.functional.pad(x, new long[] { 0, 0, 0, padded - length }).reshape(bh, chunks, b, dim);
        Tensor Flat(Tensor t) => t.expand(batch, heads, t.shape[2], t.shape[3]).reshape(bh, t.shape[2], t.shape[3]);

        // The coefficients of all chunks, with autograd (docs/method.md §3), and their rows at each chunk's last token (the
        // last chunk may end early).
        MemoryGates g = gates.PadTo(padded);
        Tensor theta = g.Theta.reshape(bh, chunks, b);
        var momentum = ChunkCoefficients.Momentum(theta, g.LogEta.reshape(bh, chunks, b));
        var decay = ChunkCoefficients.Decay(g.LogDecay.reshape(bh, chunks, b).unsqueeze(-2), theta, momentum);
        Tensor retention = decay.Retention.squeeze(-2), carry = decay.Carry.squeeze(-2), mixing = decay.Mixing.squeeze(-3);
        long lastRow = length - (chunks - 1) * b - 1;
        Tensor endRows = tensor(Enumerable.Range(0, (int)chunks).Select(c => c == chunks - 1 ? lastRow : b - 1).ToArray(),
            dtype: ScalarType.Int64, device: keys.device).view(1, chunks, 1);
        Tensor EndOf(Tensor perToken) => perToken.gather(-1, endRows.expand(bh, chunks, 1)).squeeze(-1);                   // [BH, N]
        Tensor EndRowOf(Tensor matrix) => matrix.gather(-2, endRows.unsqueeze(-1).expand(bh, chunks, 1, b)).squeeze(-2);   // [BH, N, b]

        var inputs = new NodeTensors(Chunked(queries), Chunked(keys), Chunked(values), retention, carry, mixing,
            EndOf(retention), EndOf(carry), EndRowOf(mixing), EndOf(momentum.Decay), EndRowOf(momentum.Mixing),
            new MemoryWeights(state.Weights.Select(Flat).ToArray(), state.Momentum.Select(Flat).ToArray()),
            mlp.LnWeight is null ? null : Flat(mlp.LnWeight.unsqueeze(0)), mlp.LnBias is null ? null : Flat(mlp.LnBias.unsqueeze(0)),
            stabilizers.RetentionTarget?.Select(Flat).ToArray());
        bool boundaryOutput = fullChunks > 0 && fullChunks < chunks;
        var form = new Form(new MemoryMlp(mlp.Activation, mlp.ResidualLayerNorm), depth, mlp.LnWeight is not null, mlp.LnBias is not null,
            stabilizers.RetentionTarget is not null, stabilizers.GradientClip, groupChunks, boundaryOutput, length);
        object[] node = inputs.Flat.Prepend<object>(form).ToArray();
        List<Tensor> result = fused ? FusedScanFunction.apply(node) : ScanFunction.apply(node);
        foreach (Tensor t in form.Transient) t.Dispose();
        form.Transient.Clear();

        var outputs = NodeOutputs.Read(form, new TensorReader(result));
        Tensor output = outputs.Output.reshape(bh, padded, dim).narrow(1, 0, length).view(batch, heads, length, dim);
        MemoryWeights Unflatten(MemoryWeights w) => new(
            w.Weights.Select(t => t.view(batch, heads, t.shape[1], t.shape[2])).ToArray(),
            w.Momentum.Select(t => t.view(batch, heads, t.shape[1], t.shape[2])).ToArray());
        MemoryWeights final = Unflatten(outputs.Final);
        MemoryWeights boundary = outputs.Boundary is { } b0 ? Unflatten(b0) : fullChunks == chunks ? final : state;
        return new MemoryScanResult(output, boundary, fullChunks * b, final) { KnownFinite = form.KnownFinite ? true : null };
    }

    /// <summary>
    /// The node's tensors by name: its inputs, and in the same layout the gradients backward returns for them. Q, K, V
    /// [BH, N, b, d]; the chunk coefficients A, d [BH, N, b], C [BH, N, b, b] and their end rows A_r, d_r, E_r [BH, N],
    /// C[r, ·], (E_r/E_i)θ_i [BH, N, b]; the starting state [BH, out, in] per layer; the LayerNorm affine and W₀ where
    /// the form has them.
    /// </summary>
    sealed record NodeTensors(Tensor Q, Tensor K, Tensor V, Tensor A, Tensor D, Tensor C, Tensor AEnd, Tensor DEnd, Tensor CEnd, Tensor EEnd,
        Tensor MEnd, MemoryWeights Start, Tensor? LnWeight, Tensor? LnBias, Tensor[]? Anchor)
    {
        public IEnumerable<Tensor> Flat =>
            new[] { Q, K, V, A, D, C, AEnd, DEnd, CEnd, EEnd, MEnd }.Concat(Start.Tensors)
                .Concat(LnWeight is null ? [] : [LnWeight]).Concat(LnBias is null ? [] : [LnBias]).Concat(Anchor ?? []);

        public static NodeTensors Read(Form form, TensorReader r) => new(r.Next(), r.Next(), r.Next(), r.Next(), r.Next(), r.Next(),
            r.Next(), r.Next(), r.Next(), r.Next(), r.Next(), new MemoryWeights(r.Take(form.Depth), r.Take(form.Depth)),
            r.NextIf(form.LnWeight), r.NextIf(form.LnBias), r.TakeIf(form.Anchored, form.Depth));
    }

    /// <summary>The node's outputs by name: the retrieved values, the final state, and the state after the last full chunk where a partial one follows.</summary>
    sealed record NodeOutputs(Tensor Output, MemoryWeights Final, MemoryWeights? Boundary)
    {
        public IEnumerable<Tensor> Flat => Final.Tensors.Prepend(Output).Concat(Boundary?.Tensors ?? []);

        public static NodeOutputs Read(Form form, TensorReader r) => new(r.Next(), new MemoryWeights(r.Take(form.Depth), r.Take(form.Depth)),
            form.BoundaryOutput ? new MemoryWeights(r.Take(form.Depth), r.Take(form.Depth)) : null);
    }

    /// <summary>
    /// What forward keeps for backward besides the inputs: the starting state of every group but the last (backward replays
    /// those groups from it), and for each chunk of the last group its starting state and inner-gradient factors.
    /// </summary>
    sealed record Kept(IReadOnlyList<MemoryWeights> GroupStarts, IReadOnlyList<(MemoryWeights State, FactorPass Factors)> LastGroup)
    {
        public IEnumerable<Tensor> Flat => GroupStarts.SelectMany(s => s.Tensors).Concat(LastGroup.SelectMany(c => c.State.Tensors.Concat(c.Factors.Tensors)));

        public static Kept Read(Form form, TensorReader r, int groups, int lastGroupChunks)
        {
            MemoryWeights State() => new(r.Take(form.Depth), r.Take(form.Depth));
            var starts = Enumerable.Range(0, groups - 1).Select(_ => State()).ToList();
            var last = Enumerable.Range(0, lastGroupChunks).Select(_ => (State(), FactorPass.Read(form, r))).ToList();
            return new Kept(starts, last);
        }
    }

    /// <summary>What the node needs besides tensors: the MLP's form (its LayerNorm affine comes as inputs), the stabilizers
    /// (retention toward W₀, which comes as inputs; the soft clamp's limit, 0 for none), G, and whether the state after the
    /// last full chunk is an output of its own (a trailing partial chunk follows it), and the call's length in tokens.</summary>
    sealed record Form(MemoryMlp Mlp, int Depth, bool LnWeight, bool LnBias, bool Anchored, double Clip, int GroupChunks, bool BoundaryOutput,
        long Length)
    {
        public bool Clipped => Clip > 0;

        /// <summary>Handles forward made that are garbage once the node has saved its tensors.</summary>
        public List<Tensor> Transient { get; } = new();

        /// <summary>Set by the fused forward: it saw every output and the final state finite (the libtorch forward leaves it unset).</summary>
        public bool KnownFinite { get; set; }
    }

    sealed class ScanFunction : autograd.MultiTensorFunction<ScanFunction>
    {
        public override string Name => "HandWrittenScan";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var form = (Form)vars[0];
            var tensors = vars.Skip(1).Cast<Tensor>().ToList();
            ctx.set_materialize_grads(false);   // see Recomputation: materialized grads come from a freed tensor
            using var _ = no_grad();
            NodeInputs x = Unpack(form, NodeTensors.Read(form, new TensorReader(tensors)));
            int n = x.Chunks.Length;
            var outputs = new List<Tensor>();
            var groupStarts = new List<MemoryWeights>();
            var lastGroupChunks = new List<(MemoryWeights, FactorPass)>();
            int lastGroup = LastGroupStart(n, form.GroupChunks);
            MemoryWeights current = x.Start;
            for (int first = 0; first < n; first += form.GroupChunks)
            {
                int count = Math.Min(form.GroupChunks, n - first);
                bool last = first == lastGroup;
                var starts = new MemoryWeights[count];
                var factors = new FactorPass[count];
                // The state chain, chunk by chunk; then retrieval for the whole group at once.
                for (int i = 0; i < count; i++)
                {
                    starts[i] = current;
                    using var scope = NewDisposeScope();
                    factors[i] = Factors(form, x.Chunks[first + i], current, (x.LnWeight, x.LnBias));
                    current = Update(x.Chunks[first + i], current, factors[i], x.Anchor);
                    scope.MoveToOuter(current.Tensors.Concat(factors[i].Tensors));
                }
                for (int sub = 0; sub < count; sub += RetrievalChunks)
                {
                    int size = Math.Min(RetrievalChunks, count - sub);
                    using var scope = NewDisposeScope();
                    var (states, inputs, deltas) = Batch(starts.Skip(sub).Take(size).ToList(), factors.Skip(sub).Take(size).ToList());
                    Tensor retrieved = Retrieve(form, x.Group(first + sub, size), states, inputs, deltas, null);
                    outputs.Add(scope.MoveToOuter(retrieved.view(x.Rows, size, retrieved.shape[1], retrieved.shape[2])));
                }
                if (last)
                    for (int i = 0; i < count; i++) lastGroupChunks.Add((starts[i], factors[i]));
                else
                {
                    // Only the group's starting state stays (saved below); the rest is garbage at once.
                    groupStarts.Add(starts[0]);
                    foreach (Tensor t in starts.Skip(1).SelectMany(w => w.Tensors).Concat(factors.SelectMany(f => f.Tensors))) t.Dispose();
                }
            }
            var kept = new Kept(groupStarts, lastGroupChunks);
            ctx.save_for_backward(tensors.Concat(kept.Flat).ToList());
            ctx.save_data("form", form);
            ctx.save_data("needs", tensors.Select(t => t.requires_grad).ToArray());
            Tensor output = outputs.Count == 1 ? outputs[0] : cat(outputs, 1);
            if (outputs.Count > 1) foreach (Tensor t in outputs) t.Dispose();
            // The boundary is the last chunk's starting state, kept for backward; a copy, as an output that is also saved
            // would tie the node to itself.
            MemoryWeights? boundary = form.BoundaryOutput ? kept.LastGroup[^1].State : null;
            var result = new NodeOutputs(output, current, boundary is null ? null : new MemoryWeights(
                boundary.Weights.Select(t => t.clone()).ToArray(), boundary.Momentum.Select(t => t.clone()).ToArray())).Flat.ToList();
            // TorchSharp saves the tensors after forward returns; then its saved copies hold what backward needs and the
            // handles made here can go (Scan disposes them).
            var foreign = new HashSet<Tensor>(result.Concat(tensors), ReferenceEqualityComparer.Instance);
            form.Transient.AddRange(kept.Flat.Where(t => !foreign.Contains(t)).Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>());
            return result;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs) =>
            NodeBackward(ctx, gradOutputs, Backward);
    }

    /// <summary>
    /// A node's backward around <paramref name="gradients"/> (its inputs, what forward kept, the outputs' gradients → the
    /// inputs' gradients in <see cref="NodeTensors"/> order), for the inputs that need one. An exception must not cross the
    /// native autograd engine (the process would die): it is kept for the trainer to rethrow after backward
    /// (BackwardFailures), with NaN gradients meanwhile so nothing steps on them.
    /// </summary>
    static List<Tensor> NodeBackward(autograd.AutogradContext ctx, List<Tensor> gradOutputs,
        Func<Form, List<Tensor>, List<Tensor>, List<Tensor>, List<Tensor>> gradients)
    {
        var form = (Form)ctx.get_data("form");
        var needs = (bool[])ctx.get_data("needs");
        List<Tensor> saved = ctx.get_saved_variables();
        var result = new List<Tensor?> { null };
        try
        {
            using var scope = NewDisposeScope();
            List<Tensor> grads = gradients(form, saved.Take(needs.Length).ToList(), saved.Skip(needs.Length).ToList(), gradOutputs);
            result.AddRange(grads.Select((t, i) => needs[i] ? t : null));
            scope.MoveToOuter(result.Where(t => t is not null)!);
        }
        catch (Exception e)
        {
            Runtime.BackwardFailures.Record(e);
            result = new List<Tensor?> { null };
            result.AddRange(saved.Take(needs.Length).Select((t, i) => needs[i] ? full_like(t, double.NaN) : null));
        }
        return result!;
    }
}
