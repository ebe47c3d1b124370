using TorchSharp;
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
/// </summary>
public static class HandWrittenScan
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
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, int groupChunks, MemoryStabilizers? stabilizers = null)
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

        // The coefficients of all chunks, with autograd (TITANS.md §3), and their rows at each chunk's last token (the
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

        var inputs = new List<Tensor>
        {
            Chunked(queries), Chunked(keys), Chunked(values),
            retention, carry, mixing, EndOf(retention), EndOf(carry), EndRowOf(mixing), EndOf(momentum.Decay), EndRowOf(momentum.Mixing),
        };
        inputs.AddRange(state.Weights.Select(Flat));
        inputs.AddRange(state.Momentum.Select(Flat));
        if (mlp.LnWeight is not null) inputs.Add(Flat(mlp.LnWeight.unsqueeze(0)));
        if (mlp.LnBias is not null) inputs.Add(Flat(mlp.LnBias.unsqueeze(0)));
        if (stabilizers.RetentionTarget is not null) inputs.AddRange(stabilizers.RetentionTarget.Select(Flat));
        bool boundaryOutput = fullChunks > 0 && fullChunks < chunks;
        var form = new Form(new MemoryMlp(mlp.Activation, mlp.ResidualLayerNorm), depth, mlp.LnWeight is not null, mlp.LnBias is not null,
            stabilizers.RetentionTarget is not null, stabilizers.GradientClip, groupChunks, boundaryOutput);
        var args = new List<object> { form };
        args.AddRange(inputs);
        List<Tensor> result = ScanFunction.apply(args.ToArray());
        foreach (Tensor t in form.Transient) t.Dispose();
        form.Transient.Clear();

        Tensor output = result[0].reshape(bh, padded, dim).narrow(1, 0, length).view(batch, heads, length, dim);
        MemoryWeights Unflatten(int at) => new(
            result.Skip(at).Take(depth).Select(w => w.view(batch, heads, w.shape[1], w.shape[2])).ToArray(),
            result.Skip(at + depth).Take(depth).Select(s => s.view(batch, heads, s.shape[1], s.shape[2])).ToArray());
        MemoryWeights final = Unflatten(1);
        MemoryWeights boundary = boundaryOutput ? Unflatten(1 + 2 * depth) : fullChunks == chunks ? final : state;
        return new MemoryScanResult(output, boundary, fullChunks * b, final);
    }

    /// <summary>What the node needs besides tensors: the MLP's form (its LayerNorm affine comes as inputs), the stabilizers
    /// (retention toward W₀, which comes as inputs; the soft clamp's limit, 0 for none), G, and whether the state after the
    /// last full chunk is an output of its own (a trailing partial chunk follows it).</summary>
    sealed record Form(MemoryMlp Mlp, int Depth, bool LnWeight, bool LnBias, bool Anchored, double Clip, int GroupChunks, bool BoundaryOutput)
    {
        public bool Clipped => Clip > 0;

        /// <summary>Handles forward made that are garbage once the node has saved its tensors.</summary>
        public List<Tensor> Transient { get; } = new();
    }

    /// <summary>
    /// One chunk's tensors for the sequential part (the state chain) in the node's flat layout: K, V [BH, b, d]; A_r, d_r,
    /// E_r [BH, 1, 1]; −C[r, ·] and −(E_r/E_i)θ_i [BH, b, 1] (negated once for all chunks, so the updates are additions).
    /// </summary>
    sealed record ChunkInputs(Tensor K, Tensor V, Tensor AEnd, Tensor DEnd, Tensor NegCEnd, Tensor EEnd, Tensor NegMEnd, Tensor? ForgottenEnd);

    /// <summary>The node's inputs: per-chunk views for the state chain, and the whole-call tensors for batched retrieval.</summary>
    /// <param name="Anchor">W₀ per layer, [BH, out, in], where forgetting returns toward it; else null</param>
    sealed record NodeInputs(ChunkInputs[] Chunks, MemoryWeights Start, Tensor? LnWeight, Tensor? LnBias, Tensor[]? Anchor,
        Tensor Q, Tensor A, Tensor D, Tensor C)
    {
        public long Rows => Q.shape[0];

        /// <summary>
        /// A group of chunks as one batch for retrieval, batch index = row·count + chunk: Q [BH·G, b, d], A, d [BH·G, b, 1],
        /// C [BH·G, b, b], and the LayerNorm affine repeated to match.
        /// </summary>
        public Retrieval Group(int first, int count)
        {
            Tensor Take(Tensor t) => t.narrow(1, first, count).reshape(new[] { Rows * count }.Concat(t.shape.Skip(2)).ToArray());
            Tensor? Repeat(Tensor? t) => t?.unsqueeze(1).expand(Rows, count, t.shape[1], t.shape[2]).reshape(Rows * count, t.shape[1], t.shape[2]);
            Tensor a = Take(A).unsqueeze(-1);
            return new Retrieval(Take(Q), a, Take(D).unsqueeze(-1), Take(C), Repeat(LnWeight), Repeat(LnBias), Anchor,
                Anchor is null ? null : 1 - a, count);
        }
    }

    /// <summary>
    /// What retrieval reads besides the state and the factors, for a batch of chunks: W₀ stays [BH, out, in] and meets the
    /// batch through <see cref="PerRow"/>; Forgotten is 1 − A.
    /// </summary>
    sealed record Retrieval(Tensor Q, Tensor A, Tensor D, Tensor C, Tensor? LnWeight, Tensor? LnBias, Tensor[]? Anchor, Tensor? Forgotten,
        int Count)
    {
        /// <summary>[BH·G, b, n] as [BH, G·b, n] (chunks of a row are adjacent), to multiply by a per-row matrix.</summary>
        public Tensor PerRow(Tensor t) => t.reshape(t.shape[0] / Count, Count * t.shape[1], t.shape[2]);

        public Tensor PerChunk(Tensor t) => t.reshape(t.shape[0] * Count, t.shape[1] / Count, t.shape[2]);
    }

    /// <summary>The inner gradient's forward quantities at a chunk's starting weights (<see cref="Factors"/>).</summary>
    sealed class FactorPass
    {
        /// <summary>U_l and Δ_l as the state update and retrieval use them (Δ soft-clamped where the clamp is on).</summary>
        public Tensor[] Inputs = null!, Deltas = null!;
        public Tensor[] PreActivations = null!;
        public Tensor[] Carried = null!, Slopes = null!;   // per layer l < L − 1: δ_{l+1} W_{l+1} and σ'(p_l), δ_l = their product
        public Tensor? Normed, InvStd, Error;               // the LayerNorm wrapper's x̂, 1/σ and 2(y − v)
        /// <summary>With the soft clamp, per layer: δ before it, ‖δ‖, ‖a‖ and the factor s = c·tanh(n/c)/n, n = ‖δ‖‖a‖ ([.., b, 1]).</summary>
        public Tensor[]? RawDeltas, DeltaNorms, InputNorms, Scales;

        /// <summary>δ before the clamp: what the MLP's backward recursion produced.</summary>
        public Tensor Raw(int l) => RawDeltas is null ? Deltas[l] : RawDeltas[l];

        /// <summary>Every tensor in a fixed order (what forward saves for backward), and back.</summary>
        public IEnumerable<Tensor> Tensors
        {
            get
            {
                int depth = Inputs.Length;
                var all = Inputs.Concat(PreActivations).Concat(Deltas).Concat(Carried.Take(depth - 1)).Concat(Slopes.Take(depth - 1));
                if (Normed is not null) all = all.Concat(new[] { Normed, InvStd!, Error! });
                if (RawDeltas is not null) all = all.Concat(RawDeltas).Concat(DeltaNorms!).Concat(InputNorms!).Concat(Scales!);
                return all;
            }
        }

        public static int Count(Form form) => 5 * form.Depth - 2 + (form.Mlp.ResidualLayerNorm ? 3 : 0) + (form.Clipped ? 4 * form.Depth : 0);

        public static FactorPass From(IReadOnlyList<Tensor> t, Form form)
        {
            int depth = form.Depth, at = 0;
            Tensor[] Take(int n) { var r = Enumerable.Range(at, n).Select(i => t[i]).ToArray(); at += n; return r; }
            var f = new FactorPass
            {
                Inputs = Take(depth), PreActivations = Take(depth), Deltas = Take(depth),
                Carried = Take(depth - 1).Append(null!).ToArray(), Slopes = Take(depth - 1).Append(null!).ToArray(),
            };
            if (form.Mlp.ResidualLayerNorm) (f.Normed, f.InvStd, f.Error) = (t[at++], t[at++], t[at++]);
            if (form.Clipped) (f.RawDeltas, f.DeltaNorms, f.InputNorms, f.Scales) = (Take(depth), Take(depth), Take(depth), Take(depth));
            return f;
        }
    }

    /// <summary>A group's chunk states and factors stacked into one batch (index row·count + chunk), what retrieval reads.</summary>
    static (MemoryWeights States, Tensor[] Inputs, Tensor[] Deltas) Batch(IReadOnlyList<MemoryWeights> starts, IReadOnlyList<FactorPass> factors)
    {
        int depth = starts[0].Depth;
        Tensor Stack(IEnumerable<Tensor> perChunk)
        {
            Tensor s = stack(perChunk, 1);
            return s.view(new[] { s.shape[0] * s.shape[1] }.Concat(s.shape.Skip(2)).ToArray());
        }
        var states = new MemoryWeights(
            Enumerable.Range(0, depth).Select(l => Stack(starts.Select(w => w.Weights[l]))).ToArray(),
            Enumerable.Range(0, depth).Select(l => Stack(starts.Select(w => w.Momentum[l]))).ToArray());
        return (states, Enumerable.Range(0, depth).Select(l => Stack(factors.Select(f => f.Inputs[l]))).ToArray(),
            Enumerable.Range(0, depth).Select(l => Stack(factors.Select(f => f.Deltas[l]))).ToArray());
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
            NodeInputs x = Unpack(form, tensors);
            int n = x.Chunks.Length;
            var outputs = new List<Tensor>();
            var kept = new List<Tensor>();    // the earlier groups' starting states, then the last group's chunk states and factors
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
                    Tensor output = Retrieve(form, x.Group(first + sub, size), states, inputs, deltas, null);
                    outputs.Add(scope.MoveToOuter(output.view(x.Rows, size, output.shape[1], output.shape[2])));
                }
                if (last)
                    for (int i = 0; i < count; i++) kept.AddRange(starts[i].Tensors.Concat(factors[i].Tensors));
                else
                {
                    // Only the group's starting state stays (saved below); the rest is garbage at once.
                    kept.AddRange(starts[0].Tensors);
                    foreach (Tensor t in starts.Skip(1).SelectMany(w => w.Tensors).Concat(factors.SelectMany(f => f.Tensors))) t.Dispose();
                }
            }
            ctx.save_for_backward(tensors.Concat(kept).ToList());
            ctx.save_data("form", form);
            ctx.save_data("needs", tensors.Select(t => t.requires_grad).ToArray());
            var result = new List<Tensor> { outputs.Count == 1 ? outputs[0] : cat(outputs, 1) };
            if (outputs.Count > 1) foreach (Tensor t in outputs) t.Dispose();
            result.AddRange(current.Tensors);
            // The boundary is the last chunk's starting state, kept for backward; a copy, as an output that is also saved
            // would tie the node to itself.
            if (form.BoundaryOutput)
            {
                int at = kept.Count - (2 * form.Depth + FactorPass.Count(form));
                result.AddRange(kept.Skip(at).Take(2 * form.Depth).Select(t => t.clone()));
            }
            // TorchSharp saves the tensors after forward returns; then its saved copies hold what backward needs and the
            // handles made here can go (Scan disposes them).
            var foreign = new HashSet<Tensor>(result.Concat(tensors), ReferenceEqualityComparer.Instance);
            form.Transient.AddRange(kept.Where(t => !foreign.Contains(t)).Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>());
            return result;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var form = (Form)ctx.get_data("form");
            var needs = (bool[])ctx.get_data("needs");
            List<Tensor> saved = ctx.get_saved_variables();
            try
            {
                using var scope = NewDisposeScope();
                List<Tensor> grads = Backward(form, saved.Take(needs.Length).ToList(), saved.Skip(needs.Length).ToList(), gradOutputs);
                var result = new List<Tensor?> { null };
                result.AddRange(grads.Select((t, i) => needs[i] ? t : null));
                scope.MoveToOuter(result.Where(t => t is not null)!);
                return result!;
            }
            catch (Exception e)
            {
                // An exception must not cross the native autograd engine (the process would die): kept for the trainer to
                // rethrow after backward (BackwardFailures), with NaN gradients meanwhile so nothing steps on them.
                Runtime.BackwardFailures.Record(e);
                var result = new List<Tensor?> { null };
                result.AddRange(saved.Take(needs.Length).Select((t, i) => needs[i] ? full_like(t, double.NaN) : null));
                return result!;
            }
        }
    }

    /// <summary>The first chunk of the last group of <paramref name="groupChunks"/> chunks among <paramref name="chunks"/>.</summary>
    static int LastGroupStart(long chunks, int groupChunks) => (int)((chunks - 1) / groupChunks * groupChunks);

    static NodeInputs Unpack(Form form, IReadOnlyList<Tensor> t)
    {
        // Views and negations for all chunks at once, then one unbind each: a handful of ops per call instead of per chunk.
        Tensor[] k = t[1].unbind(1), v = t[2].unbind(1);
        Tensor[] aEnd = t[6].view(t[6].shape[0], -1, 1, 1).unbind(1), dEnd = t[7].view(t[7].shape[0], -1, 1, 1).unbind(1);
        Tensor[] negCEnd = t[8].neg().unsqueeze(-1).unbind(1), eEnd = t[9].view(t[9].shape[0], -1, 1, 1).unbind(1);
        Tensor[] negMEnd = t[10].neg().unsqueeze(-1).unbind(1);
        Tensor[]? forgottenEnd = form.Anchored ? (1 - t[6]).view(t[6].shape[0], -1, 1, 1).unbind(1) : null;
        var chunks = Enumerable.Range(0, k.Length)
            .Select(i => new ChunkInputs(k[i], v[i], aEnd[i], dEnd[i], negCEnd[i], eEnd[i], negMEnd[i], forgottenEnd?[i])).ToArray();
        int at = 11, depth = form.Depth;
        var start = new MemoryWeights(t.Skip(at).Take(depth).ToArray(), t.Skip(at + depth).Take(depth).ToArray());
        at += 2 * depth;
        Tensor? weight = form.LnWeight ? t[at++] : null;
        Tensor? bias = form.LnBias ? t[at++] : null;
        Tensor[]? anchor = form.Anchored ? t.Skip(at).Take(depth).ToArray() : null;
        return new NodeInputs(chunks, start, weight, bias, anchor, t[0], t[3], t[4], t[5]);
    }

    /// <summary>Inner-gradient factors at the chunk's starting weights, keeping what backward differentiates.</summary>
    static FactorPass Factors(Form form, ChunkInputs x, MemoryWeights start, (Tensor? Weight, Tensor? Bias) ln)
    {
        int depth = form.Depth;
        MemoryMlp mlp = form.Mlp;
        var f = new FactorPass
        {
            Inputs = new Tensor[depth], PreActivations = new Tensor[depth], Deltas = new Tensor[depth], Carried = new Tensor[depth], Slopes = new Tensor[depth],
        };
        Tensor a = x.K;
        for (int l = 0; l < depth; l++)
        {
            f.Inputs[l] = a;
            f.PreActivations[l] = a.matmul(start.Weights[l].transpose(-1, -2));
            a = l < depth - 1 ? mlp.Activate(f.PreActivations[l]) : f.PreActivations[l];
        }
        Tensor g;
        if (mlp.ResidualLayerNorm)
        {
            (f.Normed, f.InvStd) = MemoryMlp.Normalize(f.PreActivations[^1]);
            Tensor y = Affine(x.K, f.Normed, ln);
            f.Error = 2 * (y - x.V);
            g = MemoryMlp.LayerNormBackward(f.Normed, f.InvStd, ln.Weight is null ? f.Error : f.Error * ln.Weight);
        }
        else
            g = 2 * (f.PreActivations[^1] - x.V);
        for (int l = depth - 1; l >= 0; l--)
        {
            f.Deltas[l] = g;
            if (l > 0)
            {
                f.Carried[l - 1] = g.matmul(start.Weights[l]);
                f.Slopes[l - 1] = mlp.ActivationDerivative(f.PreActivations[l - 1]);
                g = f.Carried[l - 1] * f.Slopes[l - 1];
            }
        }
        if (form.Clipped)
        {
            // u = δ ⊗ a soft-clamped to norm c: ‖u‖ = ‖δ‖‖a‖, so a factor on δ (MemoryStabilizers.Clip).
            f.RawDeltas = f.Deltas;
            f.DeltaNorms = f.RawDeltas.Select(d => d.norm(-1, keepdim: true)).ToArray();
            f.InputNorms = f.Inputs.Select(a => a.norm(-1, keepdim: true)).ToArray();
            f.Scales = f.DeltaNorms.Zip(f.InputNorms, (d, a) => MemoryStabilizers.ClipFactor(d * a, form.Clip)).ToArray();
            f.Deltas = f.RawDeltas.Zip(f.Scales, (d, scale) => d * scale).ToArray();
        }
        return f;
    }

    /// <summary>
    /// Retrieval with the per-token weights in the dual form, z = A∘(h W₀ᵀ) + d∘(h S₀ᵀ) − (C∘(h Uᵀ)) Δ per layer, for a batch
    /// of chunks (their starting states, inputs U and deltas Δ stacked alike); when <paramref name="keep"/> is given, the
    /// per-layer quantities backward needs are stored in it.
    /// </summary>
    static Tensor Retrieve(Form form, Retrieval x, MemoryWeights start, Tensor[] inputs, Tensor[] deltas, RetrievalPass? keep)
    {
        int depth = form.Depth;
        Tensor h = x.Q;
        Tensor z = h;
        for (int l = 0; l < depth; l++)
        {
            Tensor fromWeights = h.matmul(start.Weights[l].transpose(-1, -2));
            Tensor fromMomentum = h.matmul(start.Momentum[l].transpose(-1, -2));
            Tensor scores = h.matmul(inputs[l].transpose(-1, -2));
            z = (x.A * fromWeights).addcmul(x.D, fromMomentum, 1);
            z = (x.C * scores).baddbmm(deltas[l], z, 1, -1);
            Tensor? fromAnchor = null;
            if (x.Anchor is not null)
            {
                fromAnchor = x.PerChunk(x.PerRow(h).matmul(x.Anchor[l].transpose(-1, -2)));   // h W₀ᵀ, + (1 − A)∘ that
                z = z.addcmul(x.Forgotten!, fromAnchor, 1);
            }
            if (keep is not null)
            {
                keep.Inputs[l] = h; keep.FromWeights[l] = fromWeights; keep.FromMomentum[l] = fromMomentum;
                keep.Scores[l] = scores; keep.PreActivations[l] = z; keep.FromAnchor[l] = fromAnchor;
            }
            if (l < depth - 1) h = form.Mlp.Activate(z);
        }
        if (!form.Mlp.ResidualLayerNorm) return z;
        var (normed, invStd) = MemoryMlp.Normalize(z);
        if (keep is not null) { keep.Normed = normed; keep.InvStd = invStd; }
        return Affine(x.Q, normed, (x.LnWeight, x.LnBias));
    }

    sealed class RetrievalPass(int depth)
    {
        public Tensor[] Inputs = new Tensor[depth], FromWeights = new Tensor[depth], FromMomentum = new Tensor[depth],
            Scores = new Tensor[depth], PreActivations = new Tensor[depth];
        public Tensor?[] FromAnchor = new Tensor?[depth];
        public Tensor? Normed, InvStd;
    }

    /// <summary>The state after the chunk's last row r from its start (W, S): W' = A_r W + d_r S − Δᵀ diag(C[r,·]) U
    /// (+ (1 − A_r) W₀ with retention toward W₀), S' = E_r S − Δᵀ diag(m_r) U with m_r = (E_r/E_i) θ_i.</summary>
    static MemoryWeights Update(ChunkInputs x, MemoryWeights start, FactorPass f, Tensor[]? anchor)
    {
        int depth = start.Depth;
        var weights = new Tensor[depth];
        var momentum = new Tensor[depth];
        for (int l = 0; l < depth; l++)
        {
            Tensor carried = (x.AEnd * start.Weights[l]).addcmul(x.DEnd, start.Momentum[l], 1);
            if (anchor is not null) carried = carried.addcmul(x.ForgottenEnd!, anchor[l], 1);   // + (1 − A_r) W₀
            weights[l] = (x.NegCEnd * f.Deltas[l]).transpose(-1, -2).baddbmm(f.Inputs[l], carried, 1, 1);
            momentum[l] = (x.NegMEnd * f.Deltas[l]).transpose(-1, -2).baddbmm(f.Inputs[l], x.EEnd * start.Momentum[l], 1, 1);
        }
        return new MemoryWeights(weights, momentum);
    }

    /// <summary>
    /// Gradients of a batch of chunks' retrieval (recomputed) for its output gradient: of Q, A, d and −C (batched), and the
    /// contributions to each chunk's starting state, U and −Δ... (signs as named), and the LayerNorm affine summed per row.
    /// </summary>
    sealed record RetrievalGradients(Tensor Q, Tensor A, Tensor D, Tensor NegC, Tensor[] Weights, Tensor[] Momentum,
        Tensor[] NegDeltas, Tensor[] NegInputs, Tensor? LnWeight, Tensor? LnBias, Tensor[]? Anchor);

    static RetrievalGradients RetrievalBackward(Form form, Retrieval x, MemoryWeights start, Tensor[] inputs, Tensor[] deltas, Tensor gradOutput)
    {
        int depth = form.Depth;
        MemoryMlp mlp = form.Mlp;
        var r = new RetrievalPass(depth);
        Retrieve(form, x, start, inputs, deltas, r);
        Tensor gQ, gz;
        Tensor? gLnWeight = null, gLnBias = null;
        if (mlp.ResidualLayerNorm)
        {
            gQ = gradOutput;
            if (x.LnWeight is not null) gLnWeight = (gradOutput * r.Normed!).sum(-2, keepdim: true);
            if (x.LnBias is not null) gLnBias = gradOutput.sum(-2, keepdim: true);
            gz = MemoryMlp.LayerNormBackward(r.Normed!, r.InvStd!, x.LnWeight is null ? gradOutput : gradOutput * x.LnWeight);
        }
        else
        {
            gQ = zeros_like(x.Q);
            gz = gradOutput;
        }
        Tensor? gA = null, gD = null, gNegC = null;
        var gW = new Tensor[depth];
        var gS = new Tensor[depth];
        var gNegDelta = new Tensor[depth];
        var gNegInput = new Tensor[depth];
        Tensor[]? gAnchor = x.Anchor is null ? null : new Tensor[depth];
        for (int l = depth - 1; l >= 0; l--)
        {
            Tensor h = r.Inputs[l];
            // With retention toward W₀, z has A∘X + (1 − A)∘X₀: A's gradient sees X − X₀.
            Tensor fromWeights = r.FromAnchor[l] is { } x0 ? r.FromWeights[l] - x0 : r.FromWeights[l];
            Tensor rowsA = (gz * fromWeights).sum(-1, keepdim: true), rowsD = (gz * r.FromMomentum[l]).sum(-1, keepdim: true);
            gA = gA is null ? rowsA : gA.add_(rowsA);
            gD = gD is null ? rowsD : gD.add_(rowsD);
            Tensor gFromWeights = x.A * gz, gFromMomentum = x.D * gz;
            gW[l] = gFromWeights.transpose(-1, -2).matmul(h);
            gS[l] = gFromMomentum.transpose(-1, -2).matmul(h);
            Tensor gMixed = gz.matmul(deltas[l].transpose(-1, -2));          // minus the gradient of C∘P, [.., b, b]
            gNegDelta[l] = (x.C * r.Scores[l]).transpose(-1, -2).matmul(gz);
            gNegC = gNegC is null ? gMixed * r.Scores[l] : gNegC.addcmul_(gMixed, r.Scores[l], 1);
            Tensor gScores = gMixed * x.C;                                    // minus the gradient of P
            gNegInput[l] = gScores.transpose(-1, -2).matmul(h);
            Tensor gh = gFromWeights.matmul(start.Weights[l]);
            gh = gFromMomentum.baddbmm(start.Momentum[l], gh, 1, 1);
            gh = gScores.baddbmm(inputs[l], gh, 1, -1);
            if (gAnchor is not null)
            {
                Tensor gFromAnchor = x.PerRow(x.Forgotten! * gz);                              // [BH, G·b, out]
                gAnchor[l] = gFromAnchor.transpose(-1, -2).matmul(x.PerRow(h));                // summed over the batch's chunks
                gh = gh.add_(x.PerChunk(gFromAnchor.matmul(x.Anchor![l])));
            }
            if (l > 0) gz = gh * mlp.ActivationDerivative(r.PreActivations[l - 1]);
            else gQ = gQ + gh;
        }
        return new RetrievalGradients(gQ, gA!, gD!, gNegC!, gW, gS, gNegDelta, gNegInput, gLnWeight, gLnBias, gAnchor);
    }

    /// <param name="kept">what forward kept: the earlier groups' starting states, then each chunk of the last group's starting
    /// state and inner-gradient factors</param>
    static List<Tensor> Backward(Form form, List<Tensor> inputs, List<Tensor> kept, List<Tensor> gradOutputs)
    {
        NodeInputs x = Unpack(form, inputs);
        var ln = (x.LnWeight, x.LnBias);
        int depth = form.Depth, n = x.Chunks.Length;
        Tensor? Given(int i) => i < gradOutputs.Count && gradOutputs[i] is { IsInvalid: false } g ? g : null;   // none: zero
        Tensor? gradOutput = Given(0);
        // The running gradient of the state at the current chunk boundary, starting from the final state's.
        var gW = Enumerable.Range(0, depth).Select(l => Given(1 + l) ?? zeros_like(x.Start.Weights[l])).ToArray();
        var gS = Enumerable.Range(0, depth).Select(l => Given(1 + depth + l) ?? zeros_like(x.Start.Momentum[l])).ToArray();
        var chunkGrads = new ChunkGradients[n];
        var groupGrads = new List<GroupGradients>();
        Tensor? gLnWeight = x.LnWeight is null ? null : zeros_like(x.LnWeight), gLnBias = x.LnBias is null ? null : zeros_like(x.LnBias);
        Tensor[]? gAnchor = x.Anchor?.Select(w => zeros_like(w)).ToArray();
        void AddShared(Tensor? weight, Tensor? bias, Tensor[]? anchor)
        {
            if (gLnWeight is not null && weight is not null) gLnWeight.add_(weight);
            if (gLnBias is not null && bias is not null) gLnBias.add_(bias);
            if (gAnchor is not null && anchor is not null) for (int l = 0; l < depth; l++) gAnchor[l].add_(anchor[l]);
        }

        int groupChunks = Math.Min(form.GroupChunks, n), groups = (n + groupChunks - 1) / groupChunks;
        int perChunk = 2 * depth + FactorPass.Count(form);
        for (int group = groups - 1; group >= 0; group--)
        {
            int first = group * groupChunks, count = Math.Min(groupChunks, n - first);
            var starts = new MemoryWeights[count];
            var factors = new FactorPass[count];
            using var groupScope = NewDisposeScope();
            MemoryWeights StateAt(int at) => new(kept.Skip(at).Take(depth).ToArray(), kept.Skip(at + depth).Take(depth).ToArray());
            if (group == groups - 1)
                for (int i = 0; i < count; i++)   // kept by forward: no replay
                {
                    int at = 2 * depth * group + i * perChunk;
                    starts[i] = StateAt(at);
                    factors[i] = FactorPass.From(kept.Skip(at + 2 * depth).Take(perChunk - 2 * depth).ToList(), form);
                }
            else
            {
                starts[0] = StateAt(2 * depth * group);
                for (int i = 0; i < count; i++)
                {
                    factors[i] = Factors(form, x.Chunks[first + i], starts[i], ln);
                    if (i + 1 < count) starts[i + 1] = Update(x.Chunks[first + i], starts[i], factors[i], x.Anchor);
                }
            }

            // Retrieval in batches of chunks (it does not depend on the gradient flowing back through the states), each
            // followed by the state chain backward over its chunks.
            int batches = (count + RetrievalChunks - 1) / RetrievalChunks;
            for (int batch = batches - 1; batch >= 0; batch--)
            {
                int sub = batch * RetrievalChunks, size = Math.Min(RetrievalChunks, count - sub);
                RetrievalGradients? retrieval = null;
                Tensor[][]? retrievalW = null, retrievalS = null, retrievalNegDelta = null, retrievalNegInput = null;
                if (gradOutput is not null)
                {
                    var (states, us, deltas) = Batch(starts.Skip(sub).Take(size).ToList(), factors.Skip(sub).Take(size).ToList());
                    Tensor g = gradOutput.narrow(1, first + sub, size).reshape(x.Rows * size, gradOutput.shape[2], gradOutput.shape[3]);
                    retrieval = RetrievalBackward(form, x.Group(first + sub, size), states, us, deltas, g);
                    Tensor[][] PerChunk(Tensor[] batched) =>
                        batched.Select(t => t.view(new[] { x.Rows, (long)size }.Concat(t.shape.Skip(1)).ToArray()).unbind(1)).ToArray();
                    (retrievalW, retrievalS) = (PerChunk(retrieval.Weights), PerChunk(retrieval.Momentum));
                    (retrievalNegDelta, retrievalNegInput) = (PerChunk(retrieval.NegDeltas), PerChunk(retrieval.NegInputs));
                    Tensor? Rows(Tensor? t) => t?.view(x.Rows, size, t.shape[1], t.shape[2]).sum(1);
                    AddShared(Rows(retrieval.LnWeight), Rows(retrieval.LnBias), retrieval.Anchor);
                }

                for (int j = size - 1; j >= 0; j--)
                {
                    int i = sub + j, c = first + i;
                    if (form.BoundaryOutput && c == n - 2)
                        for (int l = 0; l < depth; l++)
                        {
                            if (Given(1 + 2 * depth + l) is { } gb) gW[l] = gW[l] + gb;
                            if (Given(1 + 3 * depth + l) is { } gbs) gS[l] = gS[l] + gbs;
                        }
                    using var scope = NewDisposeScope();
                    var fromRetrieval = retrieval is null ? null : new ChunkRetrieval(
                        retrievalW!.Select(p => p[j]).ToArray(), retrievalS!.Select(p => p[j]).ToArray(),
                        retrievalNegDelta!.Select(p => p[j]).ToArray(), retrievalNegInput!.Select(p => p[j]).ToArray());
                    var grads = ChunkBackward(form, x.Chunks[c], starts[i], factors[i], ln, x.Anchor, fromRetrieval, gW, gS);
                    AddShared(grads.LnWeight, grads.LnBias, grads.Anchor);
                    scope.MoveToOuter(grads.Tensors.Concat(gW).Concat(gS));
                    chunkGrads[c] = grads;
                }
                Tensor Shaped(Tensor t) => t.view(new[] { x.Rows, (long)size }.Concat(t.shape.Skip(1)).ToArray());
                int at = first + sub;
                groupGrads.Add(retrieval is null
                    ? new GroupGradients(zeros_like(x.Q.narrow(1, at, size)), zeros_like(x.A.narrow(1, at, size)),
                        zeros_like(x.D.narrow(1, at, size)), zeros_like(x.C.narrow(1, at, size)))
                    : new GroupGradients(Shaped(retrieval.Q), Shaped(retrieval.A.squeeze(-1)), Shaped(retrieval.D.squeeze(-1)), Shaped(retrieval.NegC)));
            }
            groupScope.MoveToOuter(chunkGrads.Skip(first).Take(count).SelectMany(t => t.Tensors).Concat(gW).Concat(gS)
                .Concat(groupGrads.SelectMany(t => t.Tensors)));
        }

        groupGrads.Reverse();
        Tensor Joined(Func<GroupGradients, Tensor> pick) => groupGrads.Count == 1 ? pick(groupGrads[0]) : cat(groupGrads.Select(pick).ToList(), 1);
        Tensor Stack(Func<ChunkGradients, Tensor> pick) => stack(chunkGrads.Select(pick), 1);
        var result = new List<Tensor>
        {
            Joined(t => t.Q), Stack(t => t.K), Stack(t => t.V), Joined(t => t.A), Joined(t => t.D), Joined(t => t.NegC).neg(),
            Stack(t => t.AEnd), Stack(t => t.DEnd), Stack(t => t.NegCEnd).neg_(), Stack(t => t.EEnd), Stack(t => t.NegMEnd).neg_(),
        };
        result.AddRange(gW);
        result.AddRange(gS);
        if (gLnWeight is not null) result.Add(gLnWeight);
        if (gLnBias is not null) result.Add(gLnBias);
        if (gAnchor is not null) result.AddRange(gAnchor);
        return result;
    }

    /// <summary>A retrieval batch's input gradients, shaped [BH, chunks, ..]; that of C negated (see <see cref="ChunkGradients"/>).</summary>
    sealed record GroupGradients(Tensor Q, Tensor A, Tensor D, Tensor NegC)
    {
        public IEnumerable<Tensor> Tensors => new[] { Q, A, D, NegC };
    }

    /// <summary>One chunk's share of its group's retrieval gradients.</summary>
    sealed record ChunkRetrieval(Tensor[] Weights, Tensor[] Momentum, Tensor[] NegDeltas, Tensor[] NegInputs);

    /// <summary>One chunk's input gradients from the state chain; those of the end rows C[r, ·], (E_r/E_i)θ_i negated (signs
    /// folded into the loop, undone once for all chunks).</summary>
    sealed record ChunkGradients(Tensor K, Tensor V, Tensor AEnd, Tensor DEnd, Tensor NegCEnd, Tensor EEnd, Tensor NegMEnd,
        Tensor? LnWeight, Tensor? LnBias, Tensor[]? Anchor)
    {
        public IEnumerable<Tensor> Tensors => new[] { K, V, AEnd, DEnd, NegCEnd, EEnd, NegMEnd }
            .Concat(LnWeight is null ? Array.Empty<Tensor>() : new[] { LnWeight }).Concat(LnBias is null ? Array.Empty<Tensor>() : new[] { LnBias })
            .Concat(Anchor ?? Array.Empty<Tensor>());
    }

    /// <summary>
    /// One chunk backward through the state chain: the state update and the inner gradient, with the chunk's share of its
    /// group's retrieval gradients. On entry <paramref name="gW"/>, <paramref name="gS"/> hold the gradient of the state at
    /// the chunk's end; on exit that of its start.
    /// </summary>
    static ChunkGradients ChunkBackward(Form form, ChunkInputs x, MemoryWeights start, FactorPass f, (Tensor? Weight, Tensor? Bias) ln,
        Tensor[]? anchor, ChunkRetrieval? retrieval, Tensor[] gW, Tensor[] gS)
    {
        int depth = form.Depth;
        MemoryMlp mlp = form.Mlp;
        var gDelta = new Tensor[depth];
        var gInput = new Tensor[depth];
        var gStartW = new Tensor[depth];
        var gStartS = new Tensor[depth];
        Tensor? gAEnd = null, gDEnd = null, gNegCEnd = null, gEEnd = null, gNegMEnd = null;
        Tensor Sum(Tensor? total, Tensor term) => total is null ? term : total + term;
        // ⟨u, w⟩ per row as one batched matmul, [BH,1,1]: it reads both states and writes nothing state-sized.
        Tensor MatrixDot(Tensor u, Tensor w) => u.reshape(u.shape[0], 1, -1).bmm(w.reshape(w.shape[0], -1, 1));

        // The state update: W' = A_r W + d_r S + Δᵀ diag(−c) U (+ (1 − A_r) W₀), S' = E_r S + Δᵀ diag(−m) U.
        var gAnchor = anchor is null ? null : new Tensor[depth];
        for (int l = 0; l < depth; l++)
        {
            Tensor u = f.Inputs[l], delta = f.Deltas[l];
            gAEnd = Sum(gAEnd, MatrixDot(gW[l], start.Weights[l]));
            if (anchor is not null) gAEnd = gAEnd - MatrixDot(gW[l], anchor[l]);           // A_r multiplies W − W₀
            if (gAnchor is not null) gAnchor[l] = x.ForgottenEnd! * gW[l];
            gDEnd = Sum(gDEnd, MatrixDot(gW[l], start.Momentum[l]));
            gEEnd = Sum(gEEnd, MatrixDot(gS[l], start.Momentum[l]));
            // Into the retrieval's share where there is one (a per-chunk view used once): no new state-sized tensors.
            gStartW[l] = retrieval is null ? x.AEnd * gW[l] : retrieval.Weights[l].addcmul_(x.AEnd, gW[l], 1);
            gStartS[l] = (retrieval is null ? x.DEnd * gW[l] : retrieval.Momentum[l].addcmul_(x.DEnd, gW[l], 1)).addcmul_(x.EEnd, gS[l], 1);
            Tensor dw = delta.matmul(gW[l]), ds = delta.matmul(gS[l]);                   // [BH,b,in]
            gInput[l] = (x.NegCEnd * dw).addcmul(x.NegMEnd, ds, 1);
            gNegCEnd = Sum(gNegCEnd, (dw * u).sum(-1, keepdim: true));
            gNegMEnd = Sum(gNegMEnd, (ds * u).sum(-1, keepdim: true));
            gDelta[l] = (x.NegCEnd * u.matmul(gW[l].transpose(-1, -2))).addcmul(x.NegMEnd, u.matmul(gS[l].transpose(-1, -2)), 1);
            if (retrieval is not null)
            {
                gInput[l] = gInput[l].sub_(retrieval.NegInputs[l]);
                gDelta[l] = gDelta[l].sub_(retrieval.NegDeltas[l]);
            }
        }

        // The soft clamp, δ' = s(n) δ with n = ‖δ‖‖a‖: back to the gradient of δ before it (and more for a).
        if (form.Clipped)
            for (int l = 0; l < depth; l++)
            {
                Tensor raw = f.RawDeltas![l], scale = f.Scales![l], deltaNorm = f.DeltaNorms![l], inputNorm = f.InputNorms![l];
                Tensor norm = (deltaNorm * inputNorm).clamp_min(1e-12);
                Tensor tanh = scale * norm / form.Clip;                                    // tanh(n/c)
                Tensor slope = (1 - tanh.square() - scale) / norm;                         // ds/dn
                Tensor gNorm = (gDelta[l] * raw).sum(-1, keepdim: true).mul_(slope);
                gInput[l] = gInput[l].addcmul(gNorm * deltaNorm / inputNorm.clamp_min(1e-30), f.Inputs[l], 1);
                gDelta[l] = (gDelta[l] * scale).addcmul_(gNorm * inputNorm / deltaNorm.clamp_min(1e-30), raw, 1);
            }

        // The inner gradient: δ_l = (δ_{l+1} W_{l+1}) ∘ σ'(p_l) up to the last layer's error, then the key path.
        Tensor? gLnWeight = null, gLnBias = null;
        var gPre = new Tensor?[depth];
        var gCarriedOf = new Tensor?[depth];   // layer l's δ-recursion term δ_lᵀ(gδ_{l−1}∘σ'), folded into its key-path matmul
        for (int l = 0; l < depth - 1; l++)
        {
            Tensor p = f.PreActivations[l];
            Tensor gCarried = gDelta[l] * f.Slopes[l];
            gPre[l] = gDelta[l] * f.Carried[l] * mlp.ActivationSecondDerivative(p);
            gDelta[l + 1] = gCarried.matmul(start.Weights[l + 1].transpose(-1, -2)).add_(gDelta[l + 1]);
            gCarriedOf[l + 1] = gCarried;
        }
        Tensor gK, gV;
        Tensor gd = gDelta[depth - 1];
        if (mlp.ResidualLayerNorm)
        {
            // δ = N(e) with N(e) = (1/σ)(e − mean e − x̂ mean(e x̂)) and e = γ∘err, err = 2(K + γ∘x̂ + β − V), x̂ = LN(z).
            Tensor normed = f.Normed!, invStd = f.InvStd!, error = f.Error!;
            Tensor e = ln.Weight is null ? error : error * ln.Weight;
            Tensor ge = MemoryMlp.LayerNormBackward(normed, invStd, gd);            // N is symmetric: its transpose is itself
            long width = normed.shape[^1];
            Tensor centered = e - e.mean(new long[] { -1 }, keepdim: true);
            Tensor meanEx = (e * normed).mean(new long[] { -1 }, keepdim: true);
            Tensor gdCentered = (gd * centered).sum(-1, keepdim: true), gdNormed = (gd * normed).sum(-1, keepdim: true);
            Tensor varScale = invStd.square() / width;
            // z through 1/σ and x̂ at fixed e (d(1/σ)/dz = −x̂/(nσ²), dx̂/dz = N):
            Tensor gz = -(varScale * gdCentered) * normed - meanEx * invStd * ge - gdNormed * varScale * (f.Raw(depth - 1) / invStd - meanEx * normed);
            Tensor gError = ln.Weight is null ? ge : ge * ln.Weight;
            Tensor gy = 2 * gError;
            gK = gy;
            gV = -gy;
            if (ln.Weight is not null) gLnWeight = (ge * error).addcmul(gy, normed, 1).sum(-2, keepdim: true);
            if (ln.Bias is not null) gLnBias = gy.sum(-2, keepdim: true);
            gPre[depth - 1] = Sum(gPre[depth - 1], gz + MemoryMlp.LayerNormBackward(normed, invStd, ln.Weight is null ? gy : gy * ln.Weight));
        }
        else
        {
            gPre[depth - 1] = Sum(gPre[depth - 1], 2 * gd);
            gK = zeros_like(x.K);
            gV = -2 * gd;
        }
        for (int l = depth - 1; l >= 0; l--)
        {
            Tensor gp = gPre[l]!;
            // gW_l += gp_lᵀ a_l (+ δ_lᵀ gCarried): one matmul over both, stacked along the tokens.
            gStartW[l] = gCarriedOf[l] is { } carried
                ? cat(new[] { gp, f.Raw(l) }, -2).transpose(-1, -2).baddbmm(cat(new[] { f.Inputs[l], carried }, -2), gStartW[l], 1, 1)
                : gp.transpose(-1, -2).baddbmm(f.Inputs[l], gStartW[l], 1, 1);
            Tensor ga = gp.baddbmm(start.Weights[l], gInput[l], 1, 1);
            if (l > 0) gPre[l - 1] = Sum(gPre[l - 1], ga * f.Slopes[l - 1]);
            else gK = gK + ga;
        }

        for (int l = 0; l < depth; l++) { gW[l] = gStartW[l]; gS[l] = gStartS[l]; }
        return new ChunkGradients(gK, gV, gAEnd!.view(-1), gDEnd!.view(-1), gNegCEnd!.squeeze(-1), gEEnd!.view(-1), gNegMEnd!.squeeze(-1),
            gLnWeight, gLnBias, gAnchor);
    }

    static Tensor Affine(Tensor residual, Tensor normed, (Tensor? Weight, Tensor? Bias) ln)
    {
        Tensor y = ln.Weight is null ? normed : normed * ln.Weight;
        if (ln.Bias is not null) y = y + ln.Bias;
        return residual + y;
    }
}
