using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>Momentum part of the chunk coefficients: E_t [.., b], E_s/E_i [.., b, b] and (E_t/E_i) θ_i [.., b, b].</summary>
public sealed record MomentumCoefficients(Tensor Decay, Tensor Ratio, Tensor Mixing);

/// <summary>Forgetting part, per output channel (C = 1 for scalar gates): A_t [.., C, b], d_t [.., C, b], C[t,i] [.., C, b, b].</summary>
public sealed record DecayCoefficients(Tensor Retention, Tensor Carry, Tensor Mixing)
{
    public long Channels => Retention.shape[^2];
}

/// <summary>
/// The coefficients that turn a chunk's per-token gradients into per-token weights (docs/method.md §3), over any leading
/// dimensions (all chunks at once, or one chunk). With local indices t, i, s = 1..b inside a chunk:
///   A_t = Π_{j≤t}(1 − α_j),  E_t = Π_{j≤t} η_j,  d_t = Σ_{s≤t} (A_t/A_s) E_s,
///   C[t,i] = θ_i Σ_{s=i..t} (A_t/A_s)(E_s/E_i),
/// so that M_t = A_t M_0 + d_t S_0 − Σ_i C[t,i] u_i and S_t = E_t S_0 − Σ_i (E_t/E_i) θ_i u_i.
/// With channel-wise forgetting A, d and C carry a channel index (one set per row of W). Ratios are exponentials of
/// segment sums of the log gates (never a difference of cumulative sums), so every exponent is ≤ 0 and gates of
/// exactly 0 (log = −∞) are exact, not NaN.
/// </summary>
public static class ChunkCoefficients
{
    /// <param name="theta">[.., b]</param>
    /// <param name="logEta">[.., b]</param>
    public static MomentumCoefficients Momentum(Tensor theta, Tensor logEta)
    {
        Tensor seg = SegmentSums(logEta);                          // [.., b+1, b+1], index 0 = the chunk start
        long b = theta.shape[^1];
        Tensor decay = seg.select(-1, 0).narrow(-1, 1, b).exp();   // E_t
        Tensor ratio = seg.narrow(-2, 1, b).narrow(-1, 1, b).exp(); // E_s/E_i, i ≤ s
        return new MomentumCoefficients(decay, ratio, ratio * theta.unsqueeze(-2));
    }

    /// <param name="logDecay">log(1 − α), [.., C, b]</param>
    /// <param name="theta">[.., b]</param>
    /// <param name="momentum">from <see cref="Momentum"/> over the same leading dimensions</param>
    public static DecayCoefficients Decay(Tensor logDecay, Tensor theta, MomentumCoefficients momentum)
    {
        Tensor seg = SegmentSums(logDecay);                        // [.., C, b+1, b+1]
        long b = theta.shape[^1];
        Tensor retention = seg.select(-1, 0).narrow(-1, 1, b).exp();   // A_t
        Tensor ratio = seg.narrow(-2, 1, b).narrow(-1, 1, b).exp();     // A_t/A_s, s ≤ t
        Tensor carry = ratio.matmul(momentum.Decay.unsqueeze(-2).unsqueeze(-1)).squeeze(-1); // d_t
        Tensor mixing = ratio.matmul(momentum.Ratio.unsqueeze(-3)) * theta.unsqueeze(-2).unsqueeze(-2); // C[t,i]
        return new DecayCoefficients(retention, carry, mixing);
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
