using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// The factors of the per-token inner gradient at one set of weights: for layer l and token i,
/// ∇_{W^(l)} ℓ(M; k_i, v_i) = Deltas[l][i] ⊗ Inputs[l][i] (outer product), docs/method.md §3.
/// Deltas[l]: [B, H, T, out_l] (error at the layer's output); Inputs[l]: [B, H, T, in_l] (the layer's input).
/// </summary>
public sealed record InnerGradientFactors(Tensor[] Deltas, Tensor[] Inputs);

/// <summary>
/// The memory M as a function of explicit weights (docs/method.md §2): an MLP of L_M layers without biases, optionally
/// wrapped as M(x) = x + LN(MLP(x)). Weights are per batch element and head, W^(l): [B, H, out_l, in_l]; tokens are
/// [B, H, T, d_h]. The inner loss is ℓ(M; k, v) = ||M(k) − v||², and its gradient is written out analytically
/// (no autograd), so the chunked path and inference need no per-sample autograd.
/// </summary>
public sealed class MemoryMlp
{
    const double LayerNormEps = 1e-5;

    public MemoryActivation Activation { get; }
    public bool ResidualLayerNorm { get; }
    /// <summary>LayerNorm affine of the wrapper, [H, 1, d_h] (outer-loop parameters, not part of the state); may be null.</summary>
    public Tensor? LnWeight { get; }
    public Tensor? LnBias { get; }

    public MemoryMlp(MemoryActivation activation, bool residualLayerNorm, Tensor? lnWeight = null, Tensor? lnBias = null)
    {
        Activation = activation;
        ResidualLayerNorm = residualLayerNorm;
        LnWeight = lnWeight;
        LnBias = lnBias;
    }

    /// <summary>Retrieval y = M(x) with the given weights; no update.</summary>
    public Tensor Forward(IReadOnlyList<Tensor> weights, Tensor x)
    {
        Tensor a = x;
        for (int l = 0; l < weights.Count; l++)
        {
            Tensor z = a.matmul(weights[l].transpose(-1, -2));
            a = l < weights.Count - 1 ? Activate(z) : z;
        }
        return Output(x, a);
    }

    /// <summary>Wraps the last pre-activation z^L into the memory's output: z^L or x + LN(z^L).</summary>
    public Tensor Output(Tensor x, Tensor last)
    {
        if (!ResidualLayerNorm) return last;
        Tensor normed = nn.functional.layer_norm(last, new[] { last.shape[^1] }, eps: LayerNormEps);
        if (LnWeight is not null) normed = normed * LnWeight;
        if (LnBias is not null) normed = normed + LnBias;
        return x + normed;
    }

    /// <summary>Per-token inner loss ℓ(M; k_t, v_t) = ||M(k_t) − v_t||², shape [B, H, T].</summary>
    public Tensor Loss(IReadOnlyList<Tensor> weights, Tensor keys, Tensor values) =>
        (Forward(weights, keys) - values).square().sum(-1);

    /// <summary>Analytic backward of ℓ through the MLP (and the LayerNorm wrapper) for every token at once.</summary>
    public InnerGradientFactors GradientFactors(IReadOnlyList<Tensor> weights, Tensor keys, Tensor values)
    {
        int depth = weights.Count;
        var inputs = new Tensor[depth];
        var preActivations = new Tensor[depth];
        Tensor a = keys;
        for (int l = 0; l < depth; l++)
        {
            inputs[l] = a;
            preActivations[l] = a.matmul(weights[l].transpose(-1, -2));
            a = l < depth - 1 ? Activate(preActivations[l]) : preActivations[l];
        }

        Tensor error = 2 * (Output(keys, preActivations[^1]) - values); // dℓ/dM(k)
        Tensor g = ResidualLayerNorm ? LayerNormBackward(preActivations[^1], LnWeight is null ? error : error * LnWeight) : error;

        var deltas = new Tensor[depth];
        for (int l = depth - 1; l >= 0; l--)
        {
            deltas[l] = g;
            if (l > 0) g = g.matmul(weights[l]) * ActivationDerivative(preActivations[l - 1]);
        }
        return new InnerGradientFactors(deltas, inputs);
    }

    /// <summary>Materializes u_t = δ_t ⊗ a_t per token: [B, H, T, out, in] per layer. For tests and references only.</summary>
    public static Tensor[] PerTokenGradients(InnerGradientFactors f) =>
        f.Deltas.Zip(f.Inputs, (d, a) => d.unsqueeze(-1) * a.unsqueeze(-2)).ToArray();

    /// <summary>dℓ/dz given dℓ/dx̂ for x̂ = (z − μ)/σ over the last dimension (biased variance, as LayerNorm).</summary>
    static Tensor LayerNormBackward(Tensor z, Tensor gradNormed)
    {
        var (normed, invStd) = Normalize(z);
        return LayerNormBackward(normed, invStd, gradNormed);
    }

    /// <summary>x̂ = (z − μ)/σ over the last dimension (LayerNorm without affine) and 1/σ.</summary>
    internal static (Tensor Normed, Tensor InvStd) Normalize(Tensor z)
    {
        Tensor centered = z - z.mean(new long[] { -1 }, keepdim: true);
        Tensor invStd = (centered.square().mean(new long[] { -1 }, keepdim: true) + LayerNormEps).rsqrt();
        return (centered * invStd, invStd);
    }

    /// <summary>
    /// The LayerNorm's input gradient from x̂ and 1/σ: (1/σ)(g − mean g − x̂ mean(g x̂)). A symmetric map of g, so it is
    /// also its own transpose (the hand-written backward differentiates through it).
    /// </summary>
    internal static Tensor LayerNormBackward(Tensor normed, Tensor invStd, Tensor gradNormed)
    {
        Tensor meanGrad = gradNormed.mean(new long[] { -1 }, keepdim: true);
        Tensor meanGradNormed = (gradNormed * normed).mean(new long[] { -1 }, keepdim: true);
        return invStd * (gradNormed - meanGrad - normed * meanGradNormed);
    }

    public Tensor Activate(Tensor z) => Activation switch
    {
        MemoryActivation.Gelu => nn.functional.gelu(z),
        MemoryActivation.Silu => nn.functional.silu(z),
        _ => throw new ArgumentOutOfRangeException(nameof(Activation)),
    };

    /// <summary>σ'(z): exact GELU is z Φ(z), so Φ(z) + z φ(z); SiLU is z s(z), so s(z)(1 + z(1 − s(z))).</summary>
    public Tensor ActivationDerivative(Tensor z)
    {
        switch (Activation)
        {
            case MemoryActivation.Gelu:
                // Fewest ops on the largest tensors of a chunk: Φ in one, φ = exp(−z²/2 − ln √(2π)) in four, in place.
                Tensor pdf = z.square().mul_(-0.5).sub_(0.5 * Math.Log(2 * Math.PI)).exp_();
                return special.ndtr(z).addcmul_(z, pdf, 1);
            case MemoryActivation.Silu:
                Tensor s = z.sigmoid();
                return s * (1 + z * (1 - s));
            default:
                throw new ArgumentOutOfRangeException(nameof(Activation));
        }
    }

    /// <summary>σ''(z) (the hand-written backward differentiates σ' once more): GELU φ(z)(2 − z²); SiLU s(1 − s)(2 + z(1 − 2s)).</summary>
    public Tensor ActivationSecondDerivative(Tensor z)
    {
        switch (Activation)
        {
            case MemoryActivation.Gelu:
                Tensor square = z.square();
                Tensor pdf = (square * -0.5).sub_(0.5 * Math.Log(2 * Math.PI)).exp_();
                return pdf.mul_(square.neg_().add_(2));
            case MemoryActivation.Silu:
                Tensor s = z.sigmoid();
                return s * (1 - s) * (2 + z * (1 - 2 * s));
            default:
                throw new ArgumentOutOfRangeException(nameof(Activation));
        }
    }
}
