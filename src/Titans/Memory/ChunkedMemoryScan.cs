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
    /// <param name="gates">per token, [B, H, T]</param>
    /// <param name="state">state at a chunk boundary</param>
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize)
    {
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
        var coefficients = ChunkCoefficients.Compute(
            g.Theta.view(batch, heads, chunks, chunkSize),
            g.LogDecay.view(batch, heads, chunks, chunkSize),
            g.LogEta.view(batch, heads, chunks, chunkSize));
        Tensor[] retention = coefficients.Retention.unbind(2), carry = coefficients.MomentumCarry.unbind(2);
        Tensor[] mixing = coefficients.Mixing.unbind(2), decay = coefficients.MomentumDecay.unbind(2);
        Tensor[] momentumMixing = coefficients.MomentumMixing.unbind(2);

        var outputs = new Tensor[chunks];
        MemoryWeights current = state, boundary = state;
        for (long c = 0; c < chunks; c++)
        {
            long endRow = c == chunks - 1 ? length - c * chunkSize - 1 : chunkSize - 1;
            MemoryWeights next;
            using (var scope = NewDisposeScope())
            {
                (outputs[c], next) = Chunk(mlp, q[c], k[c], v[c], current, retention[c], carry[c], mixing[c], decay[c],
                    momentumMixing[c], endRow);
                outputs[c].MoveToOuterDisposeScope();
                foreach (Tensor t in next.Tensors) t.MoveToOuterDisposeScope();
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
        MemoryWeights start, Tensor retention, Tensor carry, Tensor mixing, Tensor decay, Tensor momentumMixing, long endRow)
    {
        // u_i = δ_i ⊗ a_i for every token of the chunk, all at the chunk's starting weights M_0.
        InnerGradientFactors f = mlp.GradientFactors(start.Weights, keys, values);
        int depth = start.Depth;

        // Retrieval with the per-token weights M_t (state after token t), layer by layer in the dual form.
        Tensor a = queries;
        Tensor A = retention.unsqueeze(-1), d = carry.unsqueeze(-1);
        for (int l = 0; l < depth; l++)
        {
            Tensor fromWeights = a.matmul(start.Weights[l].transpose(-1, -2));
            Tensor fromMomentum = a.matmul(start.Momentum[l].transpose(-1, -2));
            Tensor attention = mixing * a.matmul(f.Inputs[l].transpose(-1, -2)); // C ∘ (Z Aᵀ), [B,H,b,b]
            Tensor z = A * fromWeights + d * fromMomentum - attention.matmul(f.Deltas[l]);
            a = l < depth - 1 ? mlp.Activate(z) : z;
        }
        Tensor output = mlp.Output(queries, a);

        // The state after row endRow: M = A M_0 + d S_0 − Σ_i C[r,i] u_i, S = E S_0 − Σ_i (E_r/E_i) θ_i u_i.
        Tensor aEnd = retention.select(-1, endRow).view(-1, retention.shape[1], 1, 1);
        Tensor dEnd = carry.select(-1, endRow).view(aEnd.shape);
        Tensor eEnd = decay.select(-1, endRow).view(aEnd.shape);
        Tensor cEnd = mixing.select(-2, endRow).unsqueeze(-1);          // [B,H,b,1]
        Tensor mEnd = momentumMixing.select(-2, endRow).unsqueeze(-1);
        var weights = new Tensor[depth];
        var momentum = new Tensor[depth];
        for (int l = 0; l < depth; l++)
        {
            // Three passes over the state-sized tensors instead of five: the sum goes into one addcmul, and the
            // subtraction of the rank-b update into baddbmm (sign folded into the small [b, in] factor).
            Tensor deltasT = f.Deltas[l].transpose(-1, -2);             // [B,H,out,b]
            weights[l] = AddProduct((aEnd * start.Weights[l]).addcmul_(dEnd, start.Momentum[l], 1), deltasT, -cEnd * f.Inputs[l]);
            momentum[l] = AddProduct(eEnd * start.Momentum[l], deltasT, -mEnd * f.Inputs[l]);
        }
        return (output, new MemoryWeights(weights, momentum));
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
