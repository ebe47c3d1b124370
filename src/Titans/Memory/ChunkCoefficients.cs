using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// The coefficients that turn a chunk's per-token gradients into per-token weights (TITANS.md §3), for every chunk at
/// once, each over [B, H, N chunks, b tokens (, b)]. With local indices t, i, s = 1..b inside a chunk:
///   A_t = Π_{j≤t}(1 − α_j),  E_t = Π_{j≤t} η_j,  d_t = Σ_{s≤t} (A_t/A_s) E_s,
///   C[t,i] = θ_i Σ_{s=i..t} (A_t/A_s)(E_s/E_i),
/// so that M_t = A_t M_0 + d_t S_0 − Σ_i C[t,i] u_i and S_t = E_t S_0 − Σ_i (E_t/E_i) θ_i u_i.
/// Ratios are exponentials of segment sums of the log gates (never a difference of cumulative sums), so every
/// exponent is ≤ 0 and gates of exactly 0 (log = −∞) are exact, not NaN.
/// </summary>
public sealed record ChunkCoefficients(Tensor Retention, Tensor MomentumCarry, Tensor Mixing, Tensor MomentumDecay, Tensor MomentumMixing)
{
    // Retention = A_t [B,H,N,b]; MomentumCarry = d_t [B,H,N,b]; Mixing = C[t,i] [B,H,N,b,b];
    // MomentumDecay = E_t [B,H,N,b]; MomentumMixing = (E_t/E_i) θ_i [B,H,N,b,b]. Row t gives the state after token t.

    /// <summary>Gates reshaped to [B, H, N, b] (the sequence already padded to N·b tokens).</summary>
    public static ChunkCoefficients Compute(Tensor theta, Tensor logDecay, Tensor logEta)
    {
        Tensor segA = SegmentSums(logDecay); // [.., b+1, b+1], index 0 = the chunk start
        Tensor segE = SegmentSums(logEta);
        Tensor retention = segA.select(-1, 0).narrow(-1, 1, segA.shape[^1] - 1).exp();      // A_t
        Tensor decayRatio = segA.narrow(-2, 1, segA.shape[^2] - 1).narrow(-1, 1, segA.shape[^1] - 1).exp(); // A_t/A_s, s ≤ t
        Tensor momentum = segE.select(-1, 0).narrow(-1, 1, segE.shape[^1] - 1).exp();       // E_s
        Tensor etaRatio = segE.narrow(-2, 1, segE.shape[^2] - 1).narrow(-1, 1, segE.shape[^1] - 1).exp(); // E_s/E_i, i ≤ s

        Tensor carry = decayRatio.matmul(momentum.unsqueeze(-1)).squeeze(-1);               // d_t
        Tensor mixing = decayRatio.matmul(etaRatio) * theta.unsqueeze(-2);                 // C[t,i]
        Tensor momentumMixing = etaRatio * theta.unsqueeze(-2);                             // (E_t/E_i) θ_i
        return new ChunkCoefficients(retention, carry, mixing, momentum, momentumMixing);
    }

    /// <summary>
    /// seg[t, s] = Σ_{j=s+1..t} x_j for 0 ≤ s ≤ t ≤ b (x_0 := 0 is the chunk start), −∞ above the diagonal.
    /// Built by a masked cumulative sum, as Mamba-2's segsum: no subtraction, so no cancellation and no ∞ − ∞.
    /// </summary>
    static Tensor SegmentSums(Tensor x)
    {
        long b = x.shape[^1];
        Tensor padded = nn.functional.pad(x, new long[] { 1, 0 });                  // [.., b+1]
        Tensor repeated = padded.unsqueeze(-1).expand(padded.shape.Append(b + 1).ToArray()); // [.., t, s] = x_t
        Tensor strictlyLower = ones(b + 1, b + 1, dtype: ScalarType.Bool, device: x.device).tril(-1);
        Tensor sums = repeated.masked_fill(strictlyLower.logical_not(), 0).cumsum(-2);
        Tensor lower = ones(b + 1, b + 1, dtype: ScalarType.Bool, device: x.device).tril(0);
        return sums.masked_fill(lower.logical_not(), double.NegativeInfinity);
    }
}
