using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>
/// The fast path (docs/method.md §3). Inside a chunk of b tokens every inner gradient is taken at the chunk's starting
/// weights M_0; momentum and forgetting still act token by token through <see cref="ChunkCoefficients"/>. Each layer
/// of the memory is applied to the queries in the dual form
///     W_t z_t = A_t (W_0 z_t) + d_t (S_0 z_t) − Σ_i C[t,i] (a_i · z_t) δ_i,
/// i.e. A∘(Z W_0ᵀ) + d∘(Z S_0ᵀ) − (C∘(Z Aᵀ)) Δ, so per-token weights are never materialized. The chunk loop is
/// sequential; the work inside a chunk is batched matmuls over B·H.
/// The loop is bound by the number of small ops per chunk, so everything that does not depend on the state (the
/// coefficients, their transposes and end-of-chunk rows) is computed for all chunks before it, batch and heads are
/// flattened into one dimension (batched matmuls without reshapes), and sums of products are fused (addcmul, baddbmm).
/// </summary>
public static class ChunkedMemoryScan
{
    /// <param name="queries">[B, H, T, d_h]</param>
    /// <param name="keys">[B, H, T, d_h]</param>
    /// <param name="values">[B, H, T, d_h]</param>
    /// <param name="gates">per token, [B, H, T] (channel-wise forgetting: [B, H, T, out_l] per layer)</param>
    /// <param name="state">state at a chunk boundary</param>
    /// <param name="stabilizers">what keeps the state bounded (<see cref="MemoryStabilizers"/>); null: none, the paper's recurrence</param>
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, MemoryStabilizers? stabilizers = null)
    {
        stabilizers ??= MemoryStabilizers.None;
        long batch = keys.shape[0], heads = keys.shape[1], length = keys.shape[2], dim = keys.shape[3];
        if (length == 0)
            return new MemoryScanResult(queries.narrow(2, 0, 0), state, 0, state);

        long bh = batch * heads, b = chunkSize;
        long chunks = (length + chunkSize - 1) / chunkSize;
        long padded = chunks * chunkSize;
        long fullChunks = length / chunkSize;
        int depth = state.Depth;
        Tensor[] Split(Tensor x) =>
            nn.functional.pad(x, new long[] { 0, 0, 0, padded - length }).reshape(bh, chunks, chunkSize, dim).unbind(1);
        Tensor[] q = Split(queries), k = Split(keys), v = Split(values);
        Tensor Flat(Tensor t) => t.expand(batch, heads, t.shape[2], t.shape[3]).reshape(bh, t.shape[2], t.shape[3]);
        var flatState = new MemoryWeights(state.Weights.Select(Flat).ToArray(), state.Momentum.Select(Flat).ToArray());
        var flatMlp = new MemoryMlp(mlp.Activation, mlp.ResidualLayerNorm,
            mlp.LnWeight is null ? null : Flat(mlp.LnWeight.unsqueeze(0)), mlp.LnBias is null ? null : Flat(mlp.LnBias.unsqueeze(0)));
        var flatStabilizers = stabilizers with
        {
            RetentionTarget = stabilizers.RetentionTarget?.Select(Flat).ToArray(),
            NormTarget = stabilizers.NormTarget?.Select(Flat).ToArray(),
        };
        Tensor[]? anchorT = flatStabilizers.RetentionTarget?.Select(w => w.transpose(-1, -2)).ToArray();

        MemoryGates g = gates.PadTo(padded);
        Tensor Chunked(Tensor gate) => gate.reshape(bh, chunks, chunkSize);
        Tensor theta = Chunked(g.Theta);
        var momentum = ChunkCoefficients.Momentum(theta, Chunked(g.LogEta));
        Tensor[] thetas = theta.unbind(1);
        Tensor[] momentumDecay = momentum.Decay.unbind(1), momentumMixing = momentum.Mixing.unbind(1), momentumRatio = momentum.Ratio.unbind(1);
        Tensor[] momentumDecayEnd = momentum.Decay.narrow(-1, b - 1, 1).unsqueeze(-1).unbind(1);   // E_b, [BH, 1, 1]
        Tensor[] momentumMixingEnd = momentum.Mixing.narrow(-2, b - 1, 1).unbind(1);               // (E_b/E_i) θ_i, [BH, 1, b]

        // Scalar forgetting: the coefficients of all chunks at once (O(T·b) memory), shared by every layer. Channel-wise:
        // per layer and chunk inside the loop, so memory stays O(b²·out) instead of O(T·b·out).
        ChunkDecay[]? shared = null;
        Tensor[][]? channelDecay = null;
        if (gates.ChannelLogDecay is null)
            shared = ChunkDecay.All(ChunkCoefficients.Decay(Chunked(g.LogDecay).unsqueeze(-2), theta, momentum), b, anchorT is not null);
        else
            channelDecay = Enumerable.Range(0, depth).Select(l =>
            {
                Tensor d = g.LayerLogDecay(l);                                             // [B,H,T',C]
                return d.reshape(bh, chunks, chunkSize, d.shape[^1]).transpose(-1, -2).unbind(1); // [BH,C,b]
            }).ToArray();

        var outputs = new Tensor[chunks];
        MemoryWeights current = flatState, boundary = flatState;
        for (long c = 0; c < chunks; c++)
        {
            long endRow = c == chunks - 1 ? length - c * chunkSize - 1 : chunkSize - 1;
            MemoryWeights next;
            using (var scope = NewDisposeScope())
            {
                var chunkMomentum = new MomentumCoefficients(momentumDecay[c], momentumRatio[c], momentumMixing[c]);
                var (eEnd, mEnd) = endRow == b - 1
                    ? (momentumDecayEnd[c], momentumMixingEnd[c])
                    : (momentumDecay[c].narrow(-1, endRow, 1).unsqueeze(-1), momentumMixing[c].narrow(-2, endRow, 1));
                ChunkDecay[] decay = channelDecay is null
                    ? Enumerable.Repeat(endRow == b - 1 ? shared![c] : shared![c].EndingAt(endRow), depth).ToArray()
                    : channelDecay.Select(layer => ChunkDecay.Of(ChunkCoefficients.Decay(layer[c], thetas[c], chunkMomentum), endRow, anchorT is not null)).ToArray();
                (outputs[c], next) = Chunk(flatMlp, q[c], k[c], v[c], current, decay, eEnd, mEnd, flatStabilizers, anchorT);
                scope.MoveToOuter(next.Tensors.Append(outputs[c]));
            }
            // Without autograd the old state is garbage; with it, the graph keeps what it needs and the handle can go.
            if (!ReferenceEquals(current, flatState) && !ReferenceEquals(current, boundary))
                foreach (Tensor t in current.Tensors) t.Dispose();
            current = next;
            if (c == fullChunks - 1) boundary = next;
        }
        Tensor output = cat(outputs, 1).narrow(1, 0, length).view(batch, heads, length, dim);
        MemoryWeights Unflatten(MemoryWeights flat) => ReferenceEquals(flat, flatState) ? state
            : new MemoryWeights(flat.Weights.Select(w => w.view(batch, heads, w.shape[1], w.shape[2])).ToArray(),
                                flat.Momentum.Select(s => s.view(batch, heads, s.shape[1], s.shape[2])).ToArray());
        return new MemoryScanResult(output, Unflatten(boundary), fullChunks * chunkSize, Unflatten(current));
    }

    /// <summary>
    /// One chunk's forgetting coefficients (<see cref="DecayCoefficients"/>) in the forms the loop uses: A and d transposed
    /// to rows ([BH, b, C]), C[t,i] ([BH, b, b] for scalar gates, [BH, C, b, b] per channel), 1 − A where forgetting
    /// returns to W₀, and their end-of-chunk rows A_r, d_r ([BH, C, 1]) and C[r, ·] ([BH, C, b]).
    /// </summary>
    sealed record ChunkDecay(DecayCoefficients Coefficients, Tensor RetentionT, Tensor CarryT, Tensor Mixing, Tensor? ForgottenT,
        Tensor RetentionEnd, Tensor CarryEnd, Tensor MixingEnd)
    {
        public bool Scalar => Coefficients.Channels == 1;

        /// <summary>Every chunk's coefficients from those of all chunks at once ([BH, chunks, 1, ..]), ending at row b − 1.</summary>
        public static ChunkDecay[] All(DecayCoefficients all, long b, bool anchored)
        {
            Tensor[] retention = all.Retention.unbind(1), carry = all.Carry.unbind(1), mixing = all.Mixing.unbind(1);
            Tensor[] retentionT = all.Retention.transpose(-1, -2).unbind(1), carryT = all.Carry.transpose(-1, -2).unbind(1);
            Tensor[]? forgottenT = anchored ? (1 - all.Retention.transpose(-1, -2)).unbind(1) : null;
            Tensor[] mixing2d = all.Mixing.squeeze(-3).unbind(1);
            Tensor[] retentionEnd = all.Retention.narrow(-1, b - 1, 1).unbind(1), carryEnd = all.Carry.narrow(-1, b - 1, 1).unbind(1);
            Tensor[] mixingEnd = all.Mixing.select(-2, b - 1).unbind(1);
            return Enumerable.Range(0, retention.Length).Select(c => new ChunkDecay(
                new DecayCoefficients(retention[c], carry[c], mixing[c]), retentionT[c], carryT[c], mixing2d[c], forgottenT?[c],
                retentionEnd[c], carryEnd[c], mixingEnd[c])).ToArray();
        }

        /// <summary>One chunk's coefficients ([BH, C, ..]) ending at <paramref name="endRow"/>.</summary>
        public static ChunkDecay Of(DecayCoefficients d, long endRow, bool anchored)
        {
            Tensor retentionT = d.Retention.transpose(-1, -2);
            return new ChunkDecay(d, retentionT, d.Carry.transpose(-1, -2), d.Channels == 1 ? d.Mixing.squeeze(-3) : d.Mixing,
                anchored ? 1 - retentionT : null,
                d.Retention.narrow(-1, endRow, 1), d.Carry.narrow(-1, endRow, 1), d.Mixing.select(-2, endRow));
        }

        /// <summary>The same chunk closed early, after row <paramref name="endRow"/> (a trailing partial chunk).</summary>
        public ChunkDecay EndingAt(long endRow) => this with
        {
            RetentionEnd = Coefficients.Retention.narrow(-1, endRow, 1),
            CarryEnd = Coefficients.Carry.narrow(-1, endRow, 1),
            MixingEnd = Coefficients.Mixing.select(-2, endRow),
        };
    }

    /// <param name="eEnd">E at the chunk's last row, [BH, 1, 1]</param>
    /// <param name="mEnd">(E_r/E_i) θ_i at the chunk's last row r, [BH, 1, b]</param>
    static (Tensor Output, MemoryWeights End) Chunk(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values,
        MemoryWeights start, ChunkDecay[] decay, Tensor eEnd, Tensor mEnd, MemoryStabilizers stabilizers, Tensor[]? anchorT)
    {
        // u_i = δ_i ⊗ a_i for every token of the chunk, all at the chunk's starting weights M_0 (soft-clamped if asked).
        InnerGradientFactors f = stabilizers.Clip(mlp.GradientFactors(start.Weights, keys, values));
        int depth = start.Depth;
        IReadOnlyList<Tensor>? anchor = stabilizers.RetentionTarget;   // W₀: forgetting returns there instead of to 0

        // Retrieval with the per-token weights M_t (state after token t), layer by layer in the dual form.
        Tensor a = queries;
        for (int l = 0; l < depth; l++)
        {
            ChunkDecay dl = decay[l];
            Tensor z = (dl.RetentionT * a.matmul(start.Weights[l].transpose(-1, -2)))
                .addcmul(dl.CarryT, a.matmul(start.Momentum[l].transpose(-1, -2)), 1);   // A∘(Z W₀ᵀ) + d∘(Z S₀ᵀ)
            Tensor scores = a.matmul(f.Inputs[l].transpose(-1, -2));                        // Z Aᵀ, [BH,b,b]
            z = dl.Scalar
                ? (dl.Mixing * scores).baddbmm(f.Deltas[l], z, 1, -1)                          // − (C ∘ Z Aᵀ) Δ
                : z - (dl.Mixing * scores.unsqueeze(-3))                                       // per channel c: Σ_i C[c,t,i] P[t,i] Δ[i,c]
                    .matmul(f.Deltas[l].transpose(-1, -2).unsqueeze(-1)).squeeze(-1).transpose(-1, -2);
            if (anchorT is not null) z = z.addcmul(dl.ForgottenT!, a.matmul(anchorT[l]), 1);   // + (1 − A_t) W₀ z_t
            a = l < depth - 1 ? mlp.Activate(z) : z;
        }
        Tensor output = mlp.Output(queries, a);

        // The state after row r: M = A M_0 + d S_0 − Σ_i C[r,i] u_i, S = E S_0 − Σ_i (E_r/E_i) θ_i u_i, each rank-b update
        // fused into one baddbmm.
        var weights = new Tensor[depth];
        var momentumOut = new Tensor[depth];
        for (int l = 0; l < depth; l++)
        {
            ChunkDecay dl = decay[l];
            Tensor deltasT = f.Deltas[l].transpose(-1, -2);                                    // [BH,out,b]
            Tensor carried = (dl.RetentionEnd * start.Weights[l]).addcmul(dl.CarryEnd, start.Momentum[l], 1);
            if (anchor is not null) carried = carried.addcmul(1 - dl.RetentionEnd, anchor[l], 1);
            weights[l] = (dl.MixingEnd * deltasT).baddbmm(f.Inputs[l], carried, 1, -1);
            momentumOut[l] = (mEnd * deltasT).baddbmm(f.Inputs[l], eEnd * start.Momentum[l], 1, -1);
        }
        return (output, stabilizers.Renormalize(new MemoryWeights(weights, momentumOut)));
    }
}
