using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// The chunked scan (<see cref="ChunkedMemoryScan"/>) as one autograd node whose backward is written out by hand, as the
/// TTT and fla kernels do. The chunk coefficients (A, d, C and their end rows) are computed for all chunks at once
/// outside the node, with autograd, which hands their gradients on to the gates. Inside the node:
/// <list type="bullet">
/// <item>forward runs without autograd and keeps its inputs, the state at the start of every group of G chunks, and for
/// the last group each chunk's starting state and inner-gradient factors (in models a call is one group, so backward
/// replays nothing);</item>
/// <item>backward takes the groups last to first: it replays a group's state updates from its saved start (keeping
/// each chunk's starting state and inner-gradient factors), then walks the chunks backward, recomputing each chunk's
/// retrieval and back-propagating through it, the state update and the inner gradient (the MLP's backward and the
/// LayerNorm wrapper's backward, differentiated once more).</item>
/// </list>
/// Autograd's per-op bookkeeping and its per-chunk saved tensors are gone; memory grows with length through one state
/// per group. Scalar forgetting gates without stabilizers (the defaults) take this path; channel-wise forgetting and the
/// stabilizers keep autograd (<see cref="Supports"/>). Tests pin its values and gradients to autograd through the
/// chunked path and to the sequential reference. The math is written out in docs/fast-memory.md.
/// </summary>
public static class HandWrittenScan
{
    const double LayerNormEps = 1e-5;

    public static bool Supports(MemoryGates gates, MemoryStabilizers? stabilizers) =>
        gates.ChannelLogDecay is null && (stabilizers is null || stabilizers.IsNone);

    /// <param name="groupChunks">G: chunks between the states that forward keeps for backward</param>
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, int groupChunks)
    {
        if (!Supports(gates, null)) throw new ArgumentException("the hand-written backward covers scalar forgetting gates only", nameof(gates));
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
        bool boundaryOutput = fullChunks > 0 && fullChunks < chunks;
        var form = new Form(new MemoryMlp(mlp.Activation, mlp.ResidualLayerNorm), depth, mlp.LnWeight is not null, mlp.LnBias is not null,
            groupChunks, boundaryOutput);
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

    /// <summary>What the node needs besides tensors: the MLP's form (its LayerNorm affine comes as inputs), G, and whether
    /// the state after the last full chunk is an output of its own (a trailing partial chunk follows it).</summary>
    sealed record Form(MemoryMlp Mlp, int Depth, bool LnWeight, bool LnBias, int GroupChunks, bool BoundaryOutput)
    {
        /// <summary>Handles forward made that are garbage once the node has saved its tensors.</summary>
        public List<Tensor> Transient { get; } = new();
    }

    /// <summary>
    /// One chunk's tensors in the node's flat layout: Q, K, V [BH, b, d]; A, d [BH, b, 1]; C [BH, b, b]; A_r, d_r, E_r
    /// [BH, 1, 1]; −C[r, ·] and −(E_r/E_i)θ_i [BH, b, 1] (negated once for all chunks, so the updates are plain additions).
    /// </summary>
    sealed record ChunkInputs(Tensor Q, Tensor K, Tensor V, Tensor A, Tensor D, Tensor C, Tensor AEnd, Tensor DEnd, Tensor NegCEnd,
        Tensor EEnd, Tensor NegMEnd);

    /// <summary>The inner gradient's forward quantities at a chunk's starting weights (<see cref="Factors"/>).</summary>
    sealed class FactorPass
    {
        public Tensor[] Inputs = null!, PreActivations = null!, Deltas = null!;
        public Tensor[] Carried = null!, Slopes = null!;   // per layer l < L − 1: δ_{l+1} W_{l+1} and σ'(p_l), δ_l = their product
        public Tensor? Normed, InvStd, Error;               // the LayerNorm wrapper's x̂, 1/σ and 2(y − v)

        /// <summary>Every tensor in a fixed order (what forward saves for backward), and back.</summary>
        public IEnumerable<Tensor> Tensors => Inputs.Concat(PreActivations).Concat(Deltas).Concat(Carried.Take(Inputs.Length - 1))
            .Concat(Slopes.Take(Inputs.Length - 1)).Concat(Normed is null ? Array.Empty<Tensor>() : new[] { Normed, InvStd!, Error! });

        public static int Count(int depth, bool layerNorm) => 5 * depth - 2 + (layerNorm ? 3 : 0);

        public static FactorPass From(IReadOnlyList<Tensor> t, int depth, bool layerNorm)
        {
            Tensor[] Take(int at, int n) => Enumerable.Range(at, n).Select(i => t[i]).ToArray();
            var f = new FactorPass
            {
                Inputs = Take(0, depth), PreActivations = Take(depth, depth), Deltas = Take(2 * depth, depth),
                Carried = Take(3 * depth, depth - 1).Append(null!).ToArray(), Slopes = Take(4 * depth - 1, depth - 1).Append(null!).ToArray(),
            };
            if (layerNorm) (f.Normed, f.InvStd, f.Error) = (t[5 * depth - 2], t[5 * depth - 1], t[5 * depth]);
            return f;
        }
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
            var (chunks, start, ln) = Unpack(form, tensors);
            long n = chunks.Length;
            var outputs = new Tensor[n];
            var kept = new List<Tensor>();    // the earlier groups' starting states, then the last group's chunk states and factors
            int lastGroup = LastGroupStart(n, form.GroupChunks);
            MemoryWeights current = start, boundary = start;
            for (int c = 0; c < n; c++)
            {
                bool keep = c >= lastGroup || c % form.GroupChunks == 0;
                if (keep) kept.AddRange(current.Tensors);
                MemoryWeights next;
                using (var scope = NewDisposeScope())
                {
                    FactorPass f = Factors(form, chunks[c], current, ln);
                    outputs[c] = Retrieve(form, chunks[c], current, f, ln, null);
                    next = Update(chunks[c], current, f);
                    if (c >= lastGroup) kept.AddRange(f.Tensors);
                    scope.MoveToOuter(next.Tensors.Append(outputs[c]).Concat(c >= lastGroup ? f.Tensors : Array.Empty<Tensor>()));
                }
                // Only what backward needs stays (saved below); the rest is garbage at once.
                if (!keep && !ReferenceEquals(current, boundary))
                    foreach (Tensor t in current.Tensors) t.Dispose();
                current = next;
                if (c == n - 2) boundary = current;
            }
            ctx.save_for_backward(tensors.Concat(kept).ToList());
            ctx.save_data("form", form);
            ctx.save_data("needs", tensors.Select(t => t.requires_grad).ToArray());
            var result = new List<Tensor> { stack(outputs, 1) };
            foreach (Tensor t in outputs) t.Dispose();
            result.AddRange(current.Tensors);
            // A copy: an output that is also saved would tie the node to itself.
            if (form.BoundaryOutput) result.AddRange(boundary.Tensors.Select(t => t.clone()));
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
                // An exception must not cross the native autograd engine (the process would die): NaN gradients instead,
                // which the trainer's finiteness check turns into a clear stop.
                Console.Error.WriteLine($"error: the memory's hand-written backward failed: {e.Message}");
                var result = new List<Tensor?> { null };
                result.AddRange(saved.Take(needs.Length).Select((t, i) => needs[i] ? full_like(t, double.NaN) : null));
                return result!;
            }
        }
    }

    /// <summary>The first chunk of the last group of <paramref name="groupChunks"/> chunks among <paramref name="chunks"/>.</summary>
    static int LastGroupStart(long chunks, int groupChunks) => (int)((chunks - 1) / groupChunks * groupChunks);

    static (ChunkInputs[] Chunks, MemoryWeights Start, (Tensor? Weight, Tensor? Bias) Ln) Unpack(Form form, IReadOnlyList<Tensor> t)
    {
        // Views and negations for all chunks at once, then one unbind each: a handful of ops per call instead of per chunk.
        Tensor[] q = t[0].unbind(1), k = t[1].unbind(1), v = t[2].unbind(1);
        Tensor[] a = t[3].unsqueeze(-1).unbind(1), d = t[4].unsqueeze(-1).unbind(1), c = t[5].unbind(1);
        Tensor[] aEnd = t[6].view(t[6].shape[0], -1, 1, 1).unbind(1), dEnd = t[7].view(t[7].shape[0], -1, 1, 1).unbind(1);
        Tensor[] negCEnd = t[8].neg().unsqueeze(-1).unbind(1), eEnd = t[9].view(t[9].shape[0], -1, 1, 1).unbind(1);
        Tensor[] negMEnd = t[10].neg().unsqueeze(-1).unbind(1);
        var chunks = Enumerable.Range(0, q.Length).Select(i => new ChunkInputs(q[i], k[i], v[i],
            a[i], d[i], c[i], aEnd[i], dEnd[i], negCEnd[i], eEnd[i], negMEnd[i])).ToArray();
        int at = 11, depth = form.Depth;
        var start = new MemoryWeights(t.Skip(at).Take(depth).ToArray(), t.Skip(at + depth).Take(depth).ToArray());
        at += 2 * depth;
        Tensor? weight = form.LnWeight ? t[at++] : null;
        Tensor? bias = form.LnBias ? t[at] : null;
        return (chunks, start, (weight, bias));
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
            (f.Normed, f.InvStd) = Normalize(f.PreActivations[^1]);
            Tensor y = Affine(x.K, f.Normed, ln);
            f.Error = 2 * (y - x.V);
            g = NormBackward(f.Normed, f.InvStd, ln.Weight is null ? f.Error : f.Error * ln.Weight);
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
        return f;
    }

    /// <summary>
    /// Retrieval with the per-token weights in the dual form, z = A∘(h W₀ᵀ) + d∘(h S₀ᵀ) − (C∘(h Uᵀ)) Δ per layer; when
    /// <paramref name="keep"/> is given, the per-layer quantities backward needs are stored in it.
    /// </summary>
    static Tensor Retrieve(Form form, ChunkInputs x, MemoryWeights start, FactorPass f, (Tensor? Weight, Tensor? Bias) ln, RetrievalPass? keep)
    {
        int depth = form.Depth;
        Tensor h = x.Q;
        Tensor z = h;
        for (int l = 0; l < depth; l++)
        {
            Tensor fromWeights = h.matmul(start.Weights[l].transpose(-1, -2));
            Tensor fromMomentum = h.matmul(start.Momentum[l].transpose(-1, -2));
            Tensor scores = h.matmul(f.Inputs[l].transpose(-1, -2));
            z = (x.A * fromWeights).addcmul(x.D, fromMomentum, 1);
            z = (x.C * scores).baddbmm(f.Deltas[l], z, 1, -1);
            if (keep is not null)
            {
                keep.Inputs[l] = h; keep.FromWeights[l] = fromWeights; keep.FromMomentum[l] = fromMomentum;
                keep.Scores[l] = scores; keep.PreActivations[l] = z;
            }
            if (l < depth - 1) h = form.Mlp.Activate(z);
        }
        if (!form.Mlp.ResidualLayerNorm) return z;
        var (normed, invStd) = Normalize(z);
        if (keep is not null) { keep.Normed = normed; keep.InvStd = invStd; }
        return Affine(x.Q, normed, ln);
    }

    sealed class RetrievalPass(int depth)
    {
        public Tensor[] Inputs = new Tensor[depth], FromWeights = new Tensor[depth], FromMomentum = new Tensor[depth],
            Scores = new Tensor[depth], PreActivations = new Tensor[depth];
        public Tensor? Normed, InvStd;
    }

    /// <summary>The state after the chunk's last row r: W = A_r W₀ + d_r S₀ − Δᵀ diag(C[r,·]) U, S = E_r S₀ − Δᵀ diag(m_r) U
    /// with m_r = (E_r/E_i) θ_i.</summary>
    static MemoryWeights Update(ChunkInputs x, MemoryWeights start, FactorPass f)
    {
        int depth = start.Depth;
        var weights = new Tensor[depth];
        var momentum = new Tensor[depth];
        for (int l = 0; l < depth; l++)
        {
            Tensor carried = (x.AEnd * start.Weights[l]).addcmul(x.DEnd, start.Momentum[l], 1);
            weights[l] = (x.NegCEnd * f.Deltas[l]).transpose(-1, -2).baddbmm(f.Inputs[l], carried, 1, 1);
            momentum[l] = (x.NegMEnd * f.Deltas[l]).transpose(-1, -2).baddbmm(f.Inputs[l], x.EEnd * start.Momentum[l], 1, 1);
        }
        return new MemoryWeights(weights, momentum);
    }

    /// <summary>Gradients of the node's inputs, in their order.</summary>
    /// <param name="kept">what forward kept: the earlier groups' starting states, then each chunk of the last group's starting
    /// state and inner-gradient factors</param>
    static List<Tensor> Backward(Form form, List<Tensor> inputs, List<Tensor> kept, List<Tensor> gradOutputs)
    {
        var (chunks, start, ln) = Unpack(form, inputs);
        int depth = form.Depth, n = chunks.Length;
        Tensor? Given(int i) => i < gradOutputs.Count && gradOutputs[i] is { IsInvalid: false } g ? g : null;   // none: zero
        Tensor? gradOutput = Given(0);
        Tensor[]? gradOutputs1 = gradOutput?.unbind(1);
        // The running gradient of the state at the current chunk boundary, starting from the final state's.
        var gW = Enumerable.Range(0, depth).Select(l => Given(1 + l) ?? zeros_like(start.Weights[l])).ToArray();
        var gS = Enumerable.Range(0, depth).Select(l => Given(1 + depth + l) ?? zeros_like(start.Momentum[l])).ToArray();
        var chunkGrads = new ChunkGradients[n];
        Tensor? gLnWeight = ln.Weight is null ? null : zeros_like(ln.Weight), gLnBias = ln.Bias is null ? null : zeros_like(ln.Bias);

        int groupChunks = Math.Min(form.GroupChunks, n), groups = (n + groupChunks - 1) / groupChunks;
        for (int group = groups - 1; group >= 0; group--)
        {
            int first = group * groupChunks, count = Math.Min(groupChunks, n - first);
            var starts = new MemoryWeights[count];
            var factors = new FactorPass[count];
            using var groupScope = NewDisposeScope();
            MemoryWeights StateAt(int at) => new(kept.Skip(at).Take(depth).ToArray(), kept.Skip(at + depth).Take(depth).ToArray());
            if (group == groups - 1)
            {
                // Kept by forward: no replay.
                int perChunk = 2 * depth + FactorPass.Count(depth, form.Mlp.ResidualLayerNorm);
                for (int i = 0; i < count; i++)
                {
                    int at = 2 * depth * group + i * perChunk;
                    starts[i] = StateAt(at);
                    factors[i] = FactorPass.From(kept.Skip(at + 2 * depth).Take(perChunk - 2 * depth).ToList(), depth, form.Mlp.ResidualLayerNorm);
                }
            }
            else
            {
                starts[0] = StateAt(2 * depth * group);
                for (int i = 0; i < count; i++)
                {
                    factors[i] = Factors(form, chunks[first + i], starts[i], ln);
                    if (i + 1 < count) starts[i + 1] = Update(chunks[first + i], starts[i], factors[i]);
                }
            }
            for (int i = count - 1; i >= 0; i--)
            {
                int c = first + i;
                if (form.BoundaryOutput && c == n - 2)
                    for (int l = 0; l < depth; l++)
                    {
                        if (Given(1 + 2 * depth + l) is { } gb) gW[l] = gW[l] + gb;
                        if (Given(1 + 3 * depth + l) is { } gbs) gS[l] = gS[l] + gbs;
                    }
                using var scope = NewDisposeScope();
                var grads = ChunkBackward(form, chunks[c], starts[i], factors[i], ln, gradOutputs1?[c], gW, gS);
                if (gLnWeight is not null && grads.LnWeight is not null) gLnWeight.add_(grads.LnWeight);
                if (gLnBias is not null && grads.LnBias is not null) gLnBias.add_(grads.LnBias);
                scope.MoveToOuter(grads.Tensors.Concat(gW).Concat(gS));
                chunkGrads[c] = grads;
            }
            groupScope.MoveToOuter(chunkGrads.Skip(first).Take(count).SelectMany(x => x.Tensors).Concat(gW).Concat(gS));
        }

        Tensor Stack(Func<ChunkGradients, Tensor> pick) => stack(chunkGrads.Select(pick), 1);
        var result = new List<Tensor>
        {
            Stack(x => x.Q), Stack(x => x.K), Stack(x => x.V), Stack(x => x.A), Stack(x => x.D), Stack(x => x.NegC).neg_(),
            Stack(x => x.AEnd), Stack(x => x.DEnd), Stack(x => x.NegCEnd).neg_(), Stack(x => x.EEnd), Stack(x => x.NegMEnd).neg_(),
        };
        result.AddRange(gW);
        result.AddRange(gS);
        if (gLnWeight is not null) result.Add(gLnWeight);
        if (gLnBias is not null) result.Add(gLnBias);
        return result;
    }

    /// <summary>One chunk's input gradients; those of C and the end rows C[r, ·], (E_r/E_i)θ_i negated (signs folded into the
    /// loop, undone once for all chunks).</summary>
    sealed record ChunkGradients(Tensor Q, Tensor K, Tensor V, Tensor A, Tensor D, Tensor NegC, Tensor AEnd, Tensor DEnd, Tensor NegCEnd,
        Tensor EEnd, Tensor NegMEnd, Tensor? LnWeight, Tensor? LnBias)
    {
        public IEnumerable<Tensor> Tensors => new[] { Q, K, V, A, D, NegC, AEnd, DEnd, NegCEnd, EEnd, NegMEnd }
            .Concat(LnWeight is null ? Array.Empty<Tensor>() : new[] { LnWeight }).Concat(LnBias is null ? Array.Empty<Tensor>() : new[] { LnBias });
    }

    /// <summary>
    /// One chunk backward. On entry <paramref name="gW"/>, <paramref name="gS"/> hold the gradient of the state at the
    /// chunk's end; on exit that of its start.
    /// </summary>
    static ChunkGradients ChunkBackward(Form form, ChunkInputs x, MemoryWeights start, FactorPass f, (Tensor? Weight, Tensor? Bias) ln,
        Tensor? gradOutput, Tensor[] gW, Tensor[] gS)
    {
        int depth = form.Depth;
        MemoryMlp mlp = form.Mlp;
        var gDelta = new Tensor[depth];
        var gInput = new Tensor[depth];
        var gStartW = new Tensor[depth];
        var gStartS = new Tensor[depth];
        Tensor? gAEnd = null, gDEnd = null, gNegCEnd = null, gEEnd = null, gNegMEnd = null;
        Tensor Sum(Tensor? total, Tensor term) => total is null ? term : total + term;
        Tensor MatrixDot(Tensor u, Tensor w) => (u * w).sum(new long[] { -2, -1 }, keepdim: true);   // [BH,1,1]

        // The state update: W' = A_r W + d_r S + Δᵀ diag(−c) U, S' = E_r S + Δᵀ diag(−m) U.
        for (int l = 0; l < depth; l++)
        {
            Tensor u = f.Inputs[l], delta = f.Deltas[l];
            gAEnd = Sum(gAEnd, MatrixDot(gW[l], start.Weights[l]));
            gDEnd = Sum(gDEnd, MatrixDot(gW[l], start.Momentum[l]));
            gEEnd = Sum(gEEnd, MatrixDot(gS[l], start.Momentum[l]));
            gStartW[l] = x.AEnd * gW[l];
            gStartS[l] = (x.DEnd * gW[l]).addcmul(x.EEnd, gS[l], 1);
            Tensor dw = delta.matmul(gW[l]), ds = delta.matmul(gS[l]);                   // [BH,b,in]
            gInput[l] = (x.NegCEnd * dw).addcmul(x.NegMEnd, ds, 1);
            gNegCEnd = Sum(gNegCEnd, (dw * u).sum(-1, keepdim: true));
            gNegMEnd = Sum(gNegMEnd, (ds * u).sum(-1, keepdim: true));
            gDelta[l] = (x.NegCEnd * u.matmul(gW[l].transpose(-1, -2))).addcmul(x.NegMEnd, u.matmul(gS[l].transpose(-1, -2)), 1);
        }

        // Retrieval, recomputed, then back-propagated layer by layer: z = A∘(h Wᵀ) + d∘(h Sᵀ) − (C∘(h Uᵀ)) Δ.
        Tensor gQ, gA, gD, gNegC;
        Tensor? gLnWeight = null, gLnBias = null;
        if (gradOutput is null)
        {
            gQ = zeros_like(x.Q); gA = zeros_like(x.A); gD = zeros_like(x.D); gNegC = zeros_like(x.C);
        }
        else
        {
            var r = new RetrievalPass(depth);
            Retrieve(form, x, start, f, ln, r);
            Tensor gz;
            if (mlp.ResidualLayerNorm)
            {
                gQ = gradOutput;
                if (ln.Weight is not null) gLnWeight = (gradOutput * r.Normed!).sum(-2, keepdim: true);
                if (ln.Bias is not null) gLnBias = gradOutput.sum(-2, keepdim: true);
                gz = NormBackward(r.Normed!, r.InvStd!, ln.Weight is null ? gradOutput : gradOutput * ln.Weight);
            }
            else
            {
                gQ = zeros_like(x.Q);
                gz = gradOutput;
            }
            Tensor? gASum = null, gDSum = null, gNegCSum = null;
            for (int l = depth - 1; l >= 0; l--)
            {
                Tensor h = r.Inputs[l];
                gASum = Sum(gASum, (gz * r.FromWeights[l]).sum(-1, keepdim: true));
                gDSum = Sum(gDSum, (gz * r.FromMomentum[l]).sum(-1, keepdim: true));
                Tensor gFromWeights = x.A * gz, gFromMomentum = x.D * gz;
                gStartW[l] = gFromWeights.transpose(-1, -2).baddbmm(h, gStartW[l], 1, 1);
                gStartS[l] = gFromMomentum.transpose(-1, -2).baddbmm(h, gStartS[l], 1, 1);
                Tensor gMixed = gz.matmul(f.Deltas[l].transpose(-1, -2));      // minus the gradient of C∘P, [BH,b,b]
                gDelta[l] = (x.C * r.Scores[l]).transpose(-1, -2).baddbmm(gz, gDelta[l], 1, -1);
                gNegCSum = gNegCSum is null ? gMixed * r.Scores[l] : gNegCSum.addcmul_(gMixed, r.Scores[l], 1);
                Tensor gScores = gMixed * x.C;                                   // minus the gradient of P
                gInput[l] = gScores.transpose(-1, -2).baddbmm(h, gInput[l], 1, -1);
                Tensor gh = gFromWeights.matmul(start.Weights[l]);
                gh = gFromMomentum.baddbmm(start.Momentum[l], gh, 1, 1);
                gh = gScores.baddbmm(f.Inputs[l], gh, 1, -1);
                if (l > 0) gz = gh * mlp.ActivationDerivative(r.PreActivations[l - 1]);
                else gQ = gQ + gh;
            }
            gA = gASum!; gD = gDSum!; gNegC = gNegCSum!;
        }

        // The inner gradient: δ_l = (δ_{l+1} W_{l+1}) ∘ σ'(p_l) up to the last layer's error, then the key path.
        var gPre = new Tensor?[depth];
        for (int l = 0; l < depth - 1; l++)
        {
            Tensor p = f.PreActivations[l];
            Tensor gCarried = gDelta[l] * f.Slopes[l];
            gPre[l] = gDelta[l] * f.Carried[l] * SecondDerivative(mlp.Activation, p);
            gDelta[l + 1] = gCarried.matmul(start.Weights[l + 1].transpose(-1, -2)).add_(gDelta[l + 1]);
            gStartW[l + 1] = f.Deltas[l + 1].transpose(-1, -2).baddbmm(gCarried, gStartW[l + 1], 1, 1);
        }
        Tensor gK, gV;
        Tensor gd = gDelta[depth - 1];
        if (mlp.ResidualLayerNorm)
        {
            // δ = N(e) with N(e) = (1/σ)(e − mean e − x̂ mean(e x̂)) and e = γ∘err, err = 2(K + γ∘x̂ + β − V), x̂ = LN(z).
            Tensor normed = f.Normed!, invStd = f.InvStd!, error = f.Error!;
            Tensor e = ln.Weight is null ? error : error * ln.Weight;
            Tensor ge = NormBackward(normed, invStd, gd);            // N is symmetric: its transpose is itself
            long width = normed.shape[^1];
            Tensor centered = e - e.mean(new long[] { -1 }, keepdim: true);
            Tensor meanEx = (e * normed).mean(new long[] { -1 }, keepdim: true);
            Tensor gdCentered = (gd * centered).sum(-1, keepdim: true), gdNormed = (gd * normed).sum(-1, keepdim: true);
            Tensor varScale = invStd.square() / width;
            // z through 1/σ and x̂ at fixed e (d(1/σ)/dz = −x̂/(nσ²), dx̂/dz = N):
            Tensor gz = -(varScale * gdCentered) * normed - meanEx * invStd * ge - gdNormed * varScale * (f.Deltas[depth - 1] / invStd - meanEx * normed);
            Tensor gError = ln.Weight is null ? ge : ge * ln.Weight;
            Tensor gy = 2 * gError;
            gK = gy;
            gV = -gy;
            if (ln.Weight is not null)
            {
                Tensor term = (ge * error).addcmul(gy, normed, 1).sum(-2, keepdim: true);
                gLnWeight = gLnWeight is null ? term : gLnWeight + term;
            }
            if (ln.Bias is not null)
            {
                Tensor term = gy.sum(-2, keepdim: true);
                gLnBias = gLnBias is null ? term : gLnBias + term;
            }
            gPre[depth - 1] = Sum(gPre[depth - 1], gz + NormBackward(normed, invStd, ln.Weight is null ? gy : gy * ln.Weight));
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
            gStartW[l] = gp.transpose(-1, -2).baddbmm(f.Inputs[l], gStartW[l], 1, 1);
            Tensor ga = gp.baddbmm(start.Weights[l], gInput[l], 1, 1);
            if (l > 0) gPre[l - 1] = Sum(gPre[l - 1], ga * f.Slopes[l - 1]);
            else gK = gK + ga;
        }

        for (int l = 0; l < depth; l++) { gW[l] = gStartW[l]; gS[l] = gStartS[l]; }
        return new ChunkGradients(gQ, gK, gV, gA.squeeze(-1), gD.squeeze(-1), gNegC, gAEnd!.view(-1), gDEnd!.view(-1), gNegCEnd!.squeeze(-1),
            gEEnd!.view(-1), gNegMEnd!.squeeze(-1), gLnWeight, gLnBias);
    }

    static (Tensor Normed, Tensor InvStd) Normalize(Tensor z)
    {
        Tensor centered = z - z.mean(new long[] { -1 }, keepdim: true);
        Tensor invStd = (centered.square().mean(new long[] { -1 }, keepdim: true) + LayerNormEps).rsqrt();
        return (centered * invStd, invStd);
    }

    static Tensor Affine(Tensor residual, Tensor normed, (Tensor? Weight, Tensor? Bias) ln)
    {
        Tensor y = ln.Weight is null ? normed : normed * ln.Weight;
        if (ln.Bias is not null) y = y + ln.Bias;
        return residual + y;
    }

    /// <summary>The LayerNorm's input gradient for output gradient <paramref name="g"/>: (1/σ)(g − mean g − x̂ mean(g x̂)).</summary>
    static Tensor NormBackward(Tensor normed, Tensor invStd, Tensor g) =>
        invStd * (g - g.mean(new long[] { -1 }, keepdim: true) - normed * (g * normed).mean(new long[] { -1 }, keepdim: true));

    /// <summary>σ''(z): GELU φ(z)(2 − z²); SiLU s(1 − s)(2 + z(1 − 2s)).</summary>
    static Tensor SecondDerivative(MemoryActivation activation, Tensor z)
    {
        switch (activation)
        {
            case MemoryActivation.Gelu:
                Tensor pdf = (-0.5 * z.square()).exp() * (1 / Math.Sqrt(2 * Math.PI));
                return pdf * (2 - z.square());
            case MemoryActivation.Silu:
                Tensor s = z.sigmoid();
                return s * (1 - s) * (2 + z * (1 - 2 * s));
            default:
                throw new ArgumentOutOfRangeException(nameof(activation));
        }
    }
}
