using TorchSharp;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

// The forward pass: each chunk's inner-gradient factors and state update (the chain), and retrieval batched over chunks.
public static partial class HandWrittenScan
{
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

        public static FactorPass Read(Form form, TensorReader r)
        {
            int depth = form.Depth;
            var f = new FactorPass
            {
                Inputs = r.Take(depth), PreActivations = r.Take(depth), Deltas = r.Take(depth),
                Carried = r.Take(depth - 1).Append(null!).ToArray(), Slopes = r.Take(depth - 1).Append(null!).ToArray(),
            };
            if (form.Mlp.ResidualLayerNorm) (f.Normed, f.InvStd, f.Error) = (r.Next(), r.Next(), r.Next());
            if (form.Clipped) (f.RawDeltas, f.DeltaNorms, f.InputNorms, f.Scales) = (r.Take(depth), r.Take(depth), r.Take(depth), r.Take(depth));
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

    /// <summary>The first chunk of the last group of <paramref name="groupChunks"/> chunks among <paramref name="chunks"/>.</summary>
    static int LastGroupStart(long chunks, int groupChunks) => (int)((chunks - 1) / groupChunks * groupChunks);

    /// <summary>The node's tensors as the scan reads them: per-chunk views for the state chain, whole-call ones for retrieval.</summary>
    static NodeInputs Unpack(Form form, NodeTensors t)
    {
        // Views and negations for all chunks at once, then one unbind each: a handful of ops per call instead of per chunk.
        Tensor[] PerChunkScalar(Tensor endRow) => endRow.view(endRow.shape[0], -1, 1, 1).unbind(1);
        Tensor[] k = t.K.unbind(1), v = t.V.unbind(1);
        Tensor[] aEnd = PerChunkScalar(t.AEnd), dEnd = PerChunkScalar(t.DEnd), eEnd = PerChunkScalar(t.EEnd);
        Tensor[] negCEnd = t.CEnd.neg().unsqueeze(-1).unbind(1), negMEnd = t.MEnd.neg().unsqueeze(-1).unbind(1);
        Tensor[]? forgottenEnd = form.Anchored ? PerChunkScalar(1 - t.AEnd) : null;
        var chunks = Enumerable.Range(0, k.Length)
            .Select(i => new ChunkInputs(k[i], v[i], aEnd[i], dEnd[i], negCEnd[i], eEnd[i], negMEnd[i], forgottenEnd?[i])).ToArray();
        return new NodeInputs(chunks, t.Start, t.LnWeight, t.LnBias, t.Anchor, t.Q, t.A, t.D, t.C);
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

    static Tensor Affine(Tensor residual, Tensor normed, (Tensor? Weight, Tensor? Bias) ln)
    {
        Tensor y = ln.Weight is null ? normed : normed * ln.Weight;
        if (ln.Bias is not null) y = y + ln.Bias;
        return residual + y;
    }
}
