using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>
/// The slow, obviously-correct reference (docs/method.md §2): the recurrence written token by token,
///     S_t = η_t S_{t−1} − θ_t ∇ℓ(M_0; k_t, v_t),   M_t = (1 − α_t) M_{t−1} + S_t,   y_t = M_t(q_t),
/// where M_0 is the state at the start of the token's mini-batch of b tokens (b = 1: fully sequential, every gradient
/// at the previous token's weights), with the stabilizers of <see cref="MemoryStabilizers"/> written out token by token.
/// The inner gradient comes from TorchSharp autograd, independent of the analytic
/// formulas of <see cref="MemoryMlp.GradientFactors"/>. When the caller records gradients, the inner gradient is
/// taken with create_graph so outer-loop gradients flow through it too.
/// </summary>
public static class SequentialMemoryScan
{
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, MemoryStabilizers? stabilizers = null)
    {
        stabilizers ??= MemoryStabilizers.None;
        IReadOnlyList<Tensor>? anchor = stabilizers.RetentionTarget;
        long length = keys.shape[2];
        bool outerGradients = is_grad_enabled();
        Tensor[] weights = state.Weights, momentum = state.Momentum;
        MemoryWeights boundary = state;
        long boundaryTokens = 0;
        var outputs = new List<Tensor>();
        Tensor[] layerDecay = Enumerable.Range(0, state.Depth).Select(gates.LayerLogDecay).ToArray(); // [B,H,T,C], C = 1 or out_l

        for (long start = 0; start < length; start += chunkSize)
        {
            long size = Math.Min(chunkSize, length - start);
            Tensor[] chunkStart = weights;
            for (long t = start; t < start + size; t++)
            {
                Tensor[] grads = InnerGradient(mlp, chunkStart, keys.narrow(2, t, 1), values.narrow(2, t, 1), outerGradients);
                if (stabilizers.GradientClip > 0)   // soft clamp of ‖∇_{W^(l)} ℓ‖ (Frobenius) per token and layer
                    grads = grads.Select(u => u * stabilizers.ClipFactor(u.square().sum(new long[] { -2, -1 }, keepdim: true).sqrt())).ToArray();
                Tensor theta = Gate(gates.Theta, t), eta = Gate(gates.LogEta, t).exp();
                momentum = momentum.Zip(grads, (s, u) => eta * s - theta * u).ToArray();
                // (1 − α_t) per row of W^(l): [B, H, C, 1] with C = 1 (scalar gate) or out_l (channel-wise).
                // Forgetting toward W₀ (retention target) or toward 0: M_t = W₀ + (1 − α_t)(M_{t−1} − W₀) + S_t.
                weights = weights.Select((w, l) =>
                {
                    Tensor keep = layerDecay[l].select(2, t).exp().unsqueeze(-1);
                    return anchor is null ? keep * w + momentum[l] : anchor[l] + keep * (w - anchor[l]) + momentum[l];
                }).ToArray();
                outputs.Add(mlp.Forward(weights, queries.narrow(2, t, 1)));
            }
            if (stabilizers.NormTarget is not null)   // the chunk's update is done: rows (or layers) back to their target norms
            {
                var factors = weights.Select((w, l) => stabilizers.NormTarget[l] / stabilizers.Norm(w).clamp_min(1e-12)).ToArray();
                weights = weights.Zip(factors, (w, f) => w * f).ToArray();
                momentum = momentum.Zip(factors, (s, f) => s * f).ToArray();
            }
            if (size == chunkSize)
            {
                boundary = new MemoryWeights(weights, momentum);
                boundaryTokens = start + size;
            }
        }
        Tensor output = outputs.Count > 0 ? cat(outputs, 2) : queries.narrow(2, 0, 0);
        return new MemoryScanResult(output, boundary, boundaryTokens, new MemoryWeights(weights, momentum));
    }

    /// <summary>Gate of token t as [B, H, 1, 1], ready to scale per-head weight matrices.</summary>
    static Tensor Gate(Tensor gate, long t) => gate.select(-1, t).unsqueeze(-1).unsqueeze(-1);

    /// <summary>∇_W ℓ(M_W; k, v) for one token (per batch element and head: the weights are per [B, H] already).</summary>
    static Tensor[] InnerGradient(MemoryMlp mlp, Tensor[] weights, Tensor key, Tensor value, bool createGraph)
    {
        using var enabled = enable_grad();
        Tensor[] leaves = weights.Select(w => w.requires_grad ? w : w.detach().requires_grad_(true)).ToArray();
        Tensor loss = mlp.Loss(leaves, key, value).sum();
        // TorchSharp passes retain_graph explicitly (PyTorch defaults it to create_graph): the outer backward needs the graph.
        return torch.autograd.grad(new[] { loss }, leaves, retain_graph: createGraph, create_graph: createGraph).ToArray();
    }
}
