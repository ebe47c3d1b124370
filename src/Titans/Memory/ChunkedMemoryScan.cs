using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// The fast path (TITANS.md §3). Inside a chunk of b tokens every inner gradient is taken at the chunk's starting
/// weights M_0; momentum and forgetting still act token by token through <see cref="ChunkCoefficients"/>. Each layer
/// of the memory is applied to the queries in the dual form
///     W_t z_t = A_t (W_0 z_t) + d_t (S_0 z_t) − Σ_i C[t,i] (a_i · z_t) δ_i,
/// i.e. A∘(Z W_0ᵀ) + d∘(Z S_0ᵀ) − (C∘(Z Aᵀ)) Δ, so per-token weights are never materialized. The chunk loop is
/// sequential; the work inside a chunk is batched matmuls over [B, H].
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

        long chunks = (length + chunkSize - 1) / chunkSize;
        long padded = chunks * chunkSize;
        long fullChunks = length / chunkSize;
        Tensor[] Split(Tensor x) =>
            nn.functional.pad(x, new long[] { 0, 0, 0, padded - length }).view(batch, heads, chunks, chunkSize, dim).unbind(2);
        Tensor[] q = Split(queries), k = Split(keys), v = Split(values);

        MemoryGates g = gates.PadTo(padded);
        Tensor Chunked(Tensor gate) => gate.view(batch, heads, chunks, chunkSize);
        Tensor theta = Chunked(g.Theta);
        var momentum = ChunkCoefficients.Momentum(theta, Chunked(g.LogEta));
        Tensor[] thetas = theta.unbind(2), momentumDecay = momentum.Decay.unbind(2), momentumMixing = momentum.Mixing.unbind(2);
        Tensor[] momentumRatio = momentum.Ratio.unbind(2);

        // Scalar forgetting: one set of coefficients for all layers, for all chunks at once (O(T·b) memory).
        // Channel-wise: per layer and chunk inside the loop, so memory stays O(b²·out) instead of O(T·b·out).
        Tensor[]? sharedRetention = null, sharedCarry = null, sharedMixing = null;
        Tensor[][]? channelDecay = null;
        if (gates.ChannelLogDecay is null)
        {
            var shared = ChunkCoefficients.Decay(Chunked(g.LogDecay).unsqueeze(-2), theta, momentum);
            (sharedRetention, sharedCarry, sharedMixing) = (shared.Retention.unbind(2), shared.Carry.unbind(2), shared.Mixing.unbind(2));
        }
        else
        {
            channelDecay = Enumerable.Range(0, state.Depth).Select(l =>
            {
                Tensor d = g.LayerLogDecay(l);                                        // [B,H,T',C]
                return d.view(batch, heads, chunks, chunkSize, d.shape[^1]).transpose(-1, -2).unbind(2); // [B,H,C,b]
            }).ToArray();
        }

        var outputs = new Tensor[chunks];
        MemoryWeights current = state, boundary = state;
        for (long c = 0; c < chunks; c++)
        {
            long endRow = c == chunks - 1 ? length - c * chunkSize - 1 : chunkSize - 1;
            MemoryWeights next;
            using (var scope = NewDisposeScope())
            {
                var chunkMomentum = new MomentumCoefficients(momentumDecay[c], momentumRatio[c], momentumMixing[c]);
                DecayCoefficients[] decay = channelDecay is null
                    ? Enumerable.Repeat(new DecayCoefficients(sharedRetention![c], sharedCarry![c], sharedMixing![c]), state.Depth).ToArray()
                    : channelDecay.Select(layer => ChunkCoefficients.Decay(layer[c], thetas[c], chunkMomentum)).ToArray();
                (outputs[c], next) = Chunk(mlp, q[c], k[c], v[c], current, decay, chunkMomentum, endRow, stabilizers);
                scope.MoveToOuter(next.Tensors.Append(outputs[c]));
            }
            // Without autograd the old state is garbage; with it, the graph keeps what it needs and the handle can go.
            if (!ReferenceEquals(current, state) && !ReferenceEquals(current, boundary))
                foreach (Tensor t in current.Tensors) t.Dispose();
            current = next;
            if (c == fullChunks - 1) boundary = next;
        }
        Tensor output = cat(outputs, 2).narrow(2, 0, length);
        return new MemoryScanResult(output, boundary, fullChunks * chunkSize, current);
    }

    static (Tensor Output, MemoryWeights End) Chunk(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values,
        MemoryWeights start, DecayCoefficients[] decay, MomentumCoefficients momentum, long endRow, MemoryStabilizers stabilizers)
    {
        // u_i = δ_i ⊗ a_i for every token of the chunk, all at the chunk's starting weights M_0 (soft-clamped if asked).
        InnerGradientFactors f = stabilizers.Clip(mlp.GradientFactors(start.Weights, keys, values));
        int depth = start.Depth;
        IReadOnlyList<Tensor>? anchor = stabilizers.RetentionTarget;   // W₀: forgetting returns there instead of to 0

        // Retrieval with the per-token weights M_t (state after token t), layer by layer in the dual form.
        Tensor a = queries;
        for (int l = 0; l < depth; l++)
        {
            Tensor A = decay[l].Retention.transpose(-1, -2), d = decay[l].Carry.transpose(-1, -2); // [B,H,b,C]
            Tensor fromWeights = a.matmul(start.Weights[l].transpose(-1, -2));
            Tensor fromMomentum = a.matmul(start.Momentum[l].transpose(-1, -2));
            Tensor scores = a.matmul(f.Inputs[l].transpose(-1, -2));                 // Z Aᵀ, [B,H,b,b]
            Tensor written = decay[l].Channels == 1
                ? (decay[l].Mixing.squeeze(-3) * scores).matmul(f.Deltas[l])          // (C ∘ Z Aᵀ) Δ
                : (decay[l].Mixing * scores.unsqueeze(-3))                            // per channel c: Σ_i C[c,t,i] P[t,i] Δ[i,c]
                    .matmul(f.Deltas[l].transpose(-1, -2).unsqueeze(-1)).squeeze(-1).transpose(-1, -2);
            Tensor z = A * fromWeights + d * fromMomentum - written;
            if (anchor is not null) z = z + (1 - A) * a.matmul(anchor[l].transpose(-1, -2));     // + (1 − A_t) W₀ z_t
            a = l < depth - 1 ? mlp.Activate(z) : z;
        }
        Tensor output = mlp.Output(queries, a);

        // The state after row endRow: M = A M_0 + d S_0 − Σ_i C[r,i] u_i, S = E S_0 − Σ_i (E_r/E_i) θ_i u_i.
        Tensor eEnd = momentum.Decay.select(-1, endRow).unsqueeze(-1).unsqueeze(-1);          // [B,H,1,1]
        Tensor mEnd = momentum.Mixing.select(-2, endRow).unsqueeze(-2);                        // [B,H,1,b]
        var weights = new Tensor[depth];
        var momentumOut = new Tensor[depth];
        for (int l = 0; l < depth; l++)
        {
            Tensor aEnd = decay[l].Retention.select(-1, endRow).unsqueeze(-1);                // [B,H,C,1]
            Tensor dEnd = decay[l].Carry.select(-1, endRow).unsqueeze(-1);
            Tensor cEnd = decay[l].Mixing.select(-2, endRow);                                  // [B,H,C,b]
            // Three passes over the state-sized tensors: the sum in one addcmul, the rank-b update fused into baddbmm.
            Tensor deltasT = f.Deltas[l].transpose(-1, -2);                                    // [B,H,out,b]
            Tensor carried = (aEnd * start.Weights[l]).addcmul_(dEnd, start.Momentum[l], 1);
            if (anchor is not null) carried = carried + (1 - aEnd) * anchor[l];
            weights[l] = AddProduct(carried, -(cEnd * deltasT), f.Inputs[l]);
            momentumOut[l] = AddProduct(eEnd * start.Momentum[l], -(mEnd * deltasT), f.Inputs[l]);
        }
        return (output, stabilizers.Renormalize(new MemoryWeights(weights, momentumOut)));
    }

    /// <summary>x + a·b for [B, H, m, k]·[B, H, k, n], fused into one baddbmm over the flattened B·H batch.</summary>
    static Tensor AddProduct(Tensor x, Tensor a, Tensor b)
    {
        long batch = x.shape[0], heads = x.shape[1];
        // TorchSharp 0.107: batch1.baddbmm(batch2, mat) = mat + batch1·batch2 (the static torch.baddbmm(input, batch1,
        // batch2) passes its arguments on in the wrong order, so it is not used).
        return a.reshape(batch * heads, a.shape[2], a.shape[3])
            .baddbmm(b.reshape(batch * heads, b.shape[2], b.shape[3]), x.reshape(batch * heads, x.shape[2], x.shape[3]))
            .view(x.shape);
    }
}
