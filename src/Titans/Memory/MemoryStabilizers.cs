using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// What keeps the memory's inner loop in a bounded regime over long streams (docs/memory-stability.md). Each acts where
/// the chunked dual form stays exact, and both scans apply it the same way:
/// <list type="bullet">
/// <item><see cref="RetentionTarget"/>: forgetting returns toward W₀ instead of 0, M_t = W₀ + (1 − α_t)(M_{t−1} − W₀) + S_t
/// (linear in the state, so inside a chunk M_t = A_t M_0 + (1 − A_t) W₀ + d_t S_0 − Σ_i C[t,i] u_i).</item>
/// <item><see cref="NormTarget"/>: after each chunk's update (at its end, full or closed early) every row of every layer, or
/// every layer as a whole, is rescaled to a target norm, and its momentum by the same factor.</item>
/// <item><see cref="GradientClip"/>: each token's inner gradient of each layer is soft-clamped to norm c,
/// u ← u · c·tanh(‖u‖/c)/‖u‖ (titans-pytorch's max_grad_norm); with u = δ ⊗ a that is a per-token factor on δ.</item>
/// </list>
/// </summary>
public sealed record MemoryStabilizers
{
    public static MemoryStabilizers None { get; } = new();

    /// <summary>W₀ per layer, broadcastable to the state's [B, H, out, in]. Null: forgetting pulls toward 0 (the paper).</summary>
    public IReadOnlyList<Tensor>? RetentionTarget { get; init; }

    /// <summary>
    /// Per layer the norm to rescale to after each chunk: [.., out, 1] per row (<see cref="RowNorms"/>) or [.., 1, 1] per
    /// layer, broadcastable to the state. Null: off.
    /// </summary>
    public IReadOnlyList<Tensor>? NormTarget { get; init; }

    /// <summary>Whether <see cref="NormTarget"/> holds row norms (true) or whole-layer norms (false).</summary>
    public bool RowNorms { get; init; } = true;

    /// <summary>The soft limit c on each token's per-layer inner gradient norm; 0: off.</summary>
    public double GradientClip { get; init; }


    /// <summary>‖W‖ over a row (the last dimension) or over the whole [out, in] matrix, keeping dimensions.</summary>
    public Tensor Norm(Tensor weights) =>
        RowNorms ? weights.norm(-1, keepdim: true) : weights.square().sum(new long[] { -2, -1 }, keepdim: true).sqrt();

    /// <summary>The state after a chunk: each row (or layer) of W rescaled to its target norm, the momentum by the same factor.</summary>
    public MemoryWeights Renormalize(MemoryWeights state)
    {
        if (NormTarget is null) return state;
        var weights = new Tensor[state.Depth];
        var momentum = new Tensor[state.Depth];
        for (int l = 0; l < state.Depth; l++)
        {
            Tensor factor = NormTarget[l] / Norm(state.Weights[l]).clamp_min(1e-12);
            weights[l] = state.Weights[l] * factor;
            momentum[l] = state.Momentum[l] * factor;
        }
        return new MemoryWeights(weights, momentum);
    }

    /// <summary>The soft clamp's factor c·tanh(n/c)/n for gradient norms n (→ 1 as n → 0).</summary>
    public Tensor ClipFactor(Tensor norms) => ClipFactor(norms, GradientClip);

    /// <summary>c·tanh(n/c)/n for a limit c (the hand-written backward keeps c alone).</summary>
    public static Tensor ClipFactor(Tensor norms, double clip)
    {
        Tensor safe = norms.clamp_min(1e-12);
        return (safe / clip).tanh() * clip / safe;
    }

    /// <summary>
    /// The chunked path's inner-gradient factors with each token's per-layer gradient soft-clamped: ‖δ_i ⊗ a_i‖ = ‖δ_i‖‖a_i‖,
    /// so the clamp scales δ_i alone.
    /// </summary>
    public InnerGradientFactors Clip(InnerGradientFactors factors)
    {
        if (GradientClip == 0) return factors;
        var deltas = factors.Deltas.Zip(factors.Inputs, (d, a) =>
            d * ClipFactor(d.norm(-1, keepdim: true) * a.norm(-1, keepdim: true))).ToArray();
        return new InnerGradientFactors(deltas, factors.Inputs);
    }
}
