using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.CompilerServices;

namespace Titans.Memory.Scans;

/// <summary>What one stream of the fused kernel computes with: the memory's form and its per-head constants.</summary>
/// <param name="Shapes">(out, in) of each layer.</param>
/// <param name="AnchorT">W₀ᵀ per layer ([in·out], row-major) when forgetting returns to it; null: toward 0.</param>
/// <param name="LnWeight">The wrapper's LayerNorm scale [d] (null: none); <paramref name="LnBias"/> its shift.</param>
/// <param name="Clip">The soft clamp c of each token's inner gradient; 0: off.</param>
internal sealed record ChainForm<T>((int Out, int In)[] Shapes, MemoryActivation Activation, bool ResidualLayerNorm,
    T[][]? AnchorT, T[]? LnWeight, T[]? LnBias, double Clip, int ChunkSize) where T : unmanaged, IFloatingPointIeee754<T>
{
    public int Depth => Shapes.Length;
    public int Dim => Shapes[0].In;
    public int Widest => Shapes.Max(s => Math.Max(s.Out, s.In));

    /// <summary>
    /// The form of head or stream <paramref name="index"/>, its constants cut from buffers that hold one per index:
    /// W₀ [index, out, in] per layer (transposed here), the LayerNorm affine [index, d].
    /// </summary>
    public static ChainForm<T> Slice(int index, (int Out, int In)[] shapes, MemoryMlp mlp, T[][]? anchors, T[]? lnWeight, T[]? lnBias,
        double clip, int chunkSize)
    {
        int d = shapes[0].In;
        T[][]? anchorT = anchors?.Select((a, l) =>
        {
            var (o, i) = shapes[l];
            var transposed = new T[o * i];
            SmallGemm<T>.Transpose(a.AsSpan(index * o * i, o * i), o, i, transposed);
            return transposed;
        }).ToArray();
        return new ChainForm<T>(shapes, mlp.Activation, mlp.ResidualLayerNorm, anchorT, lnWeight?.AsSpan(index * d, d).ToArray(),
            lnBias?.AsSpan(index * d, d).ToArray(), clip, chunkSize);
    }
}

/// <summary>
/// The memory's chunk chain for one stream (one batch element and head) in one call: the same function as
/// <see cref="ChunkedMemoryScan"/> (docs/method.md §3), computed as small matrix products on the stream's own buffers
/// with no libtorch call per chunk. Per chunk of n ≤ b tokens, at the chunk's starting weights M₀:
/// <list type="number">
/// <item>the inner-gradient factors δ_i, a_i of every token (the MLP on the keys, the LayerNorm wrapper, its backward),
/// soft-clamped;</item>
/// <item>the gate coefficients A_t, E_t, d_t, C[t,i] by their recurrences (products of gates ≤ 1);</item>
/// <item>retrieval in the dual form, W_t z = A_t W₀z + d_t S₀z + (1 − A_t) W̄z − Σ_{i≤t} C[t,i] (a_i·z) δ_i, layer by layer;</item>
/// <item>the state at the chunk's last row r: W = A_r W + d_r S + (1 − A_r) W̄ − Σ_i C[r,i] δ_i ⊗ a_i,
/// S = E_r S − Σ_i (E_r/E_i) θ_i δ_i ⊗ a_i.</item>
/// </list>
/// (W̄ is the retention target W₀ where forgetting returns to it.) Every sum runs in a fixed order, so a stream's result
/// does not depend on how many threads share the streams.
/// </summary>
internal sealed partial class FusedChunkChain<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    const double LayerNormEps = 1e-5;
    /// <summary>One chain per thread and shape, its buffers reused from call to call (a stream of short calls allocates nothing).</summary>
    [ThreadStatic] static FusedChunkChain<T>? cached;
    ChainForm<T> form;
    // The state transposed, [in, out] per layer (as the form's W₀ᵀ): every product of a chunk is then rows times a
    // row-major matrix (SmallGemm), vectorized over the output channels.
    readonly T[][] weightsT, momentumT;
    /// <summary>The state after the last full chunk of <see cref="Run"/>, transposed as the state.</summary>
    public readonly T[][] BoundaryWeightsT, BoundaryMomentumT;
    // Per chunk, reused: the keys' layer inputs a_l [b, in] and their transposes [in, b], pre-activations z_l, deltas
    // and the deltas scaled for the state update [b, out]; the coefficients of the chunk's rows.
    readonly T[][] inputs, inputsT, pre, deltas, scaledDeltas, rows;
    readonly T[] scores, scratch;
    // Retrieval's quantities per layer, which its backward reads too: the layer's input h [b, in], the products h Wᵀ,
    // h Sᵀ, h W̄ᵀ and the pre-activation z [b, out], the scores h aᵀ [b, b]; the wrapper's per-row x̂ and 1/σ.
    readonly T[][] rh, rFW, rFM, rFA, rZ, rP;
    readonly T[] rNormed, rInvStd;
    readonly T[] retention, carry, mixing, endMomentum, momentumRatios;
    // What the backward differentiates besides: δ_{l+1} W_{l+1} per layer l < L − 1 (before σ'), δ before the soft clamp
    // with each row's ‖δ‖, ‖a‖ and factor, and the wrapper's per-row x̂, 1/σ and 2(y − v).
    readonly T[][] carried, rawDeltas, deltaNorms, inputNorms, clipScales;
    readonly T[] normed, invStds, errors;
    // The coefficients at the chunk's last row r, which update the state: A_r, d_r, E_r, C[r,·] (and (E_r/E_i)θ_i above).
    T endRetention, endCarry, endDecay;
    readonly T[] endMixing;

    /// <summary>This thread's chain for the form's shapes (a new one where they differ from the last), set to the form.</summary>
    public static FusedChunkChain<T> For(ChainForm<T> form)
    {
        var chain = cached;
        if (chain is null || chain.form.ChunkSize != form.ChunkSize || !chain.form.Shapes.SequenceEqual(form.Shapes))
            cached = chain = new FusedChunkChain<T>(form);
        chain.form = form;
        return chain;
    }

    FusedChunkChain(ChainForm<T> form)
    {
        this.form = form;
        int b = form.ChunkSize, widest = form.Widest;
        weightsT = form.Shapes.Select(s => new T[s.In * s.Out]).ToArray();
        momentumT = form.Shapes.Select(s => new T[s.In * s.Out]).ToArray();
        BoundaryWeightsT = form.Shapes.Select(s => new T[s.In * s.Out]).ToArray();
        BoundaryMomentumT = form.Shapes.Select(s => new T[s.In * s.Out]).ToArray();
        inputs = form.Shapes.Select(s => new T[b * s.In]).ToArray();
        inputsT = form.Shapes.Select(s => new T[b * s.In]).ToArray();
        pre = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        deltas = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        scaledDeltas = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        rows = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        scores = new T[b * b];
        rh = form.Shapes.Select(s => new T[b * s.In]).ToArray();
        (rFW, rFM, rFA, rZ) = (form.Shapes.Select(s => new T[b * s.Out]).ToArray(), form.Shapes.Select(s => new T[b * s.Out]).ToArray(),
            form.Shapes.Select(s => new T[b * s.Out]).ToArray(), form.Shapes.Select(s => new T[b * s.Out]).ToArray());
        rP = form.Shapes.Select(_ => new T[b * b]).ToArray();
        (rNormed, rInvStd) = (new T[b * widest], new T[b]);
        scratch = new T[widest];
        carried = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        rawDeltas = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        (deltaNorms, inputNorms, clipScales) = (form.Shapes.Select(_ => new T[b]).ToArray(), form.Shapes.Select(_ => new T[b]).ToArray(),
            form.Shapes.Select(_ => new T[b]).ToArray());
        (normed, invStds, errors) = (new T[b * widest], new T[b], new T[b * widest]);
        endMixing = new T[b];
        retention = new T[b];
        carry = new T[b];
        mixing = new T[b * b];
        endMomentum = new T[b];
        momentumRatios = new T[b];
    }

    /// <summary>
    /// Runs the stream's T tokens from the state set by <see cref="LoadState"/>, leaving the state after the last token in
    /// <see cref="WeightsT"/>, <see cref="MomentumT"/>; the state after the last full chunk is copied to
    /// <see cref="BoundaryWeightsT"/>, <see cref="BoundaryMomentumT"/>.
    /// </summary>
    /// <param name="q">[T, d]</param><param name="k">[T, d]</param><param name="v">[T, d]</param>
    /// <param name="theta">[T]</param><param name="logDecay">[T]</param><param name="logEta">[T]</param>
    /// <param name="output">[T, d]</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Run(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> theta, ReadOnlySpan<T> logDecay,
        ReadOnlySpan<T> logEta, Span<T> output)
    {
        int length = theta.Length, d = form.Dim, b = form.ChunkSize;
        int fullChunks = length / b;
        for (int start = 0, c = 0; start < length; start += b, c++)
        {
            int n = Math.Min(b, length - start);
            GradientFactors(k.Slice(start * d, n * d), v.Slice(start * d, n * d), n);
            Coefficients(theta.Slice(start, n), logDecay.Slice(start, n), logEta.Slice(start, n), n);
            Retrieve(q.Slice(start * d, n * d), n, output.Slice(start * d, n * d));
            Update(n);
            if (c == fullChunks - 1)
                for (int l = 0; l < form.Depth; l++)
                {
                    weightsT[l].CopyTo(BoundaryWeightsT[l], 0);
                    momentumT[l].CopyTo(BoundaryMomentumT[l], 0);
                }
        }
    }

    /// <summary>The state the chain computes with, transposed ([in, out] per layer): after <see cref="Run"/>, the final state.</summary>
    public T[][] WeightsT => weightsT;
    public T[][] MomentumT => momentumT;

    /// <summary>Sets layer <paramref name="l"/> of the state from [out, in] row-major weights and momentum (transposed into the chain's layout).</summary>
    public void LoadState(int l, ReadOnlySpan<T> weights, ReadOnlySpan<T> momentum)
    {
        SmallGemm<T>.Transpose(weights, form.Shapes[l].Out, form.Shapes[l].In, weightsT[l]);
        SmallGemm<T>.Transpose(momentum, form.Shapes[l].Out, form.Shapes[l].In, momentumT[l]);
    }

    /// <summary>Whether <paramref name="output"/> and the state the chain holds (after the last token) are finite numbers only.</summary>
    public bool Finite(ReadOnlySpan<T> output)
    {
        if (!AllFinite(output)) return false;
        for (int l = 0; l < form.Depth; l++)
            if (!AllFinite(weightsT[l]) || !AllFinite(momentumT[l])) return false;
        return true;
    }

    /// <summary>Whether every value is finite.</summary>
    static bool AllFinite(ReadOnlySpan<T> values)
    {
        foreach (T value in values)
            if (!T.IsFinite(value)) return false;
        return true;
    }

    /// <summary>δ_l and a_l of the chunk's n tokens at the weights it starts from, soft-clamped (MemoryMlp.GradientFactors).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void GradientFactors(ReadOnlySpan<T> keys, ReadOnlySpan<T> values, int n)
    {
        int depth = form.Depth, d = form.Dim;
        keys.CopyTo(inputs[0]);
        for (int l = 0; l < depth; l++)
        {
            var (o, i) = form.Shapes[l];
            SmallGemm<T>.Multiply(inputs[l], n, i, weightsT[l], o, pre[l], accumulate: false);   // Z_l = A_l W_lᵀ
            if (l < depth - 1) Activate(pre[l].AsSpan(0, n * o), inputs[l + 1]);
            SmallGemm<T>.Transpose(inputs[l].AsSpan(0, n * i), n, i, inputsT[l]);
        }
        int last = depth - 1;
        for (int r = 0; r < n; r++)
        {
            var z = pre[last].AsSpan(r * d, d);
            var g = deltas[last].AsSpan(r * d, d);
            // error = 2 (M(k) − v), through the wrapper's LayerNorm to the last pre-activation.
            if (form.ResidualLayerNorm)
            {
                var x = normed.AsSpan(r * d, d);
                var error = errors.AsSpan(r * d, d);
                var invStd = invStds[r] = Normalize(z, x);
                WrapperOutput(keys.Slice(r * d, d), x, scratch);
                for (int j = 0; j < d; j++)
                {
                    error[j] = T.CreateTruncating(2) * (scratch[j] - values[r * d + j]);
                    scratch[j] = form.LnWeight is null ? error[j] : error[j] * form.LnWeight[j];
                }
                LayerNormBackward(x, invStd, scratch.AsSpan(0, d), g);
            }
            else
                for (int j = 0; j < d; j++) g[j] = T.CreateTruncating(2) * (z[j] - values[r * d + j]);
        }
        for (int l = last; l > 0; l--)
        {
            var (o, i) = form.Shapes[l];
            // δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1}), W_l used through its transpose.
            SmallGemm<T>.MultiplyTransposed(deltas[l], n, o, weightsT[l], i, carried[l - 1], accumulate: false);
            var below = deltas[l - 1].AsSpan(0, n * i);
            carried[l - 1].AsSpan(0, n * i).CopyTo(below);
            MultiplyByDerivative(pre[l - 1].AsSpan(0, n * i), below);
        }
        if (form.Clip > 0)
            for (int l = 0; l < depth; l++)
            {
                var (o, i) = form.Shapes[l];
                deltas[l].AsSpan(0, n * o).CopyTo(rawDeltas[l]);
                for (int r = 0; r < n; r++)
                {
                    var delta = deltas[l].AsSpan(r * o, o);
                    T deltaNorm = SpanMath.Norm<T>(delta), inputNorm = SpanMath.Norm<T>(inputs[l].AsSpan(r * i, i));
                    double safe = Math.Max(double.CreateTruncating(deltaNorm) * double.CreateTruncating(inputNorm), 1e-12);
                    T scale = T.CreateTruncating(Math.Tanh(safe / form.Clip) * form.Clip / safe);
                    (deltaNorms[l][r], inputNorms[l][r], clipScales[l][r]) = (deltaNorm, inputNorm, scale);
                    SpanMath.Multiply(delta, scale, delta);
                }
            }
    }

    /// <summary>δ_l before the soft clamp: what the MLP's backward recursion produced (<see cref="deltas"/> where the clamp is off).</summary>
    T[] RawDeltas(int l) => form.Clip > 0 ? rawDeltas[l] : deltas[l];

    /// <summary>
    /// A_t, E_t, d_t and C[t,i] for t, i &lt; n (ChunkCoefficients), and (E_r/E_i) θ_i at the last row r, by their
    /// recurrences over t: A_t = (1 − α_t) A_{t−1}, E_t = η_t E_{t−1}, d_t = (1 − α_t) d_{t−1} + E_t, and with
    /// P[t,i] = Σ_{s=i..t} (A_t/A_s)(E_s/E_i): P[t,i] = (1 − α_t) P[t−1,i] + E_t/E_i, P[i,i] = 1, C[t,i] = θ_i P[t,i].
    /// Only products of gates ≤ 1 (no ratio of cumulative products, no difference of sums), so a gate of 0 is exact.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Coefficients(ReadOnlySpan<T> theta, ReadOnlySpan<T> logDecay, ReadOnlySpan<T> logEta, int n)
    {
        int b = form.ChunkSize;
        var ratioE = momentumRatios.AsSpan(0, n);          // E_t/E_i for i ≤ t, updated row by row
        T a = T.One, e = T.One, dt = T.Zero;
        for (int t = 0; t < n; t++)
        {
            T keep = T.Exp(logDecay[t]), decay = T.Exp(logEta[t]);
            a *= keep;
            e *= decay;
            dt = keep * dt + e;
            retention[t] = a;
            carry[t] = dt;
            for (int i = 0; i < t; i++) ratioE[i] *= decay;
            ratioE[t] = T.One;
            var row = mixing.AsSpan(t * b, b);
            for (int i = 0; i < t; i++) row[i] = keep * mixing[(t - 1) * b + i] + ratioE[i];   // P[t,i], from P[t−1,i] (row t − 1)
            row[t] = T.One;
            for (int i = t + 1; i < n; i++) row[i] = T.Zero;                   // causal: no later token mixes in
        }
        // Rows hold P; C = θ_i P[t,i] once every row is built (row t reads row t − 1's P).
        for (int t = n - 1; t >= 0; t--)
        {
            var row = mixing.AsSpan(t * b, b);
            for (int i = 0; i <= t; i++) row[i] *= theta[i];
        }
        for (int i = 0; i < n; i++) endMomentum[i] = ratioE[i] * theta[i];   // ratioE now holds E_r/E_i for r = n − 1
        (endRetention, endCarry, endDecay) = (retention[n - 1], carry[n - 1], e);          // e is now E_r
        mixing.AsSpan((n - 1) * b, n).CopyTo(endMixing);
    }

    /// <summary>
    /// y_t = M_t(q_t) for the chunk's n rows (<see cref="RetrieveLayers"/>), through the LayerNorm wrapper where there is one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Retrieve(ReadOnlySpan<T> q, int n, Span<T> output)
    {
        int d = form.Dim;
        RetrieveLayers(q, n);
        if (!form.ResidualLayerNorm) { rZ[form.Depth - 1].AsSpan(0, n * d).CopyTo(output); return; }
        for (int t = 0; t < n; t++) WrapperOutput(q.Slice(t * d, d), rNormed.AsSpan(t * d, d), output.Slice(t * d, d));
    }

    /// <summary>
    /// Retrieval layer by layer in the dual form, keeping every layer's quantities: Z W₀ᵀ, Z S₀ᵀ and Z W̄ᵀ as three
    /// products, mixed per row by A_t, d_t and 1 − A_t, then − (C ∘ Z Aᵀ) Δ; the last layer's rows normalized for the
    /// wrapper where there is one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void RetrieveLayers(ReadOnlySpan<T> q, int n)
    {
        int depth = form.Depth, d = form.Dim, b = form.ChunkSize;
        q[..(n * d)].CopyTo(rh[0]);
        for (int l = 0; l < depth; l++)
        {
            var (o, i) = form.Shapes[l];
            SmallGemm<T>.Multiply(rh[l], n, i, weightsT[l], o, rFW[l], accumulate: false);
            SmallGemm<T>.Multiply(rh[l], n, i, momentumT[l], o, rFM[l], accumulate: false);
            if (form.AnchorT is not null) SmallGemm<T>.Multiply(rh[l], n, i, form.AnchorT[l], o, rFA[l], accumulate: false);
            SmallGemm<T>.Multiply(rh[l], n, i, inputsT[l].AsSpan(0, i * n), n, rP[l], accumulate: false);
            var z = rZ[l].AsSpan(0, n * o);
            for (int t = 0; t < n; t++)
            {
                var row = z.Slice(t * o, o);
                SpanMath.Multiply(rFW[l].AsSpan(t * o, o), retention[t], row);
                SpanMath.MultiplyAdd(rFM[l].AsSpan(t * o, o), carry[t], row, row);
                if (form.AnchorT is not null) SpanMath.MultiplyAdd(rFA[l].AsSpan(t * o, o), T.One - retention[t], row, row);
            }
            // scores[t, s] = −C[t, s] (a_s · z_t), then z −= … as one product with Δ.
            for (int t = 0; t < n; t++)
                for (int s = 0; s < n; s++) scores[t * n + s] = -(mixing[t * b + s] * rP[l][t * n + s]);
            SmallGemm<T>.Multiply(scores, n, n, deltas[l], o, z, accumulate: true);
            if (l < depth - 1) Activate(z, rh[l + 1]);
        }
        if (form.ResidualLayerNorm)
            for (int t = 0; t < n; t++) rInvStd[t] = Normalize(rZ[depth - 1].AsSpan(t * d, d), rNormed.AsSpan(t * d, d));
    }

    /// <summary>
    /// The state after the chunk's last row r = n − 1: Wᵀ = A_r Wᵀ + d_r Sᵀ + (1 − A_r) W̄ᵀ − Aᵀ (C[r,·] ∘ Δ),
    /// Sᵀ = E_r Sᵀ − Aᵀ ((E_r/E_·) θ ∘ Δ), each rank-n update one product (W's uses S's old value).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void Update(int n)
    {
        T a = endRetention, dr = endCarry, e = endDecay;
        for (int l = 0; l < form.Depth; l++)
        {
            var (o, i) = form.Shapes[l];
            var w = weightsT[l].AsSpan();
            var s = momentumT[l].AsSpan();
            SpanMath.Multiply(w, a, w);
            SpanMath.MultiplyAdd(s, dr, w, w);
            if (form.AnchorT is not null) SpanMath.MultiplyAdd(form.AnchorT[l], T.One - a, w, w);
            SpanMath.Multiply(s, e, s);
            for (int t = 0; t < n; t++)
            {
                SpanMath.Multiply(deltas[l].AsSpan(t * o, o), -endMixing[t], scaledDeltas[l].AsSpan(t * o, o));
                SpanMath.Multiply(deltas[l].AsSpan(t * o, o), -endMomentum[t], rows[l].AsSpan(t * o, o));
            }
            SmallGemm<T>.Multiply(inputsT[l].AsSpan(0, i * n), i, n, scaledDeltas[l], o, weightsT[l], accumulate: true);
            SmallGemm<T>.Multiply(inputsT[l].AsSpan(0, i * n), i, n, rows[l], o, momentumT[l], accumulate: true);
        }
    }

    /// <summary>x̂ = (z − μ)/σ (biased variance, ε = 1e-5) into <paramref name="normed"/>; returns 1/σ.</summary>
    static T Normalize(ReadOnlySpan<T> z, Span<T> normed)
    {
        int d = z.Length;
        T mean = SpanMath.Sum(z) / T.CreateTruncating(d);
        SpanMath.Subtract(z, mean, normed[..d]);
        T variance = SpanMath.Dot<T>(normed[..d], normed[..d]) / T.CreateTruncating(d);
        T invStd = T.One / T.Sqrt(variance + T.CreateTruncating(LayerNormEps));
        SpanMath.Multiply(normed[..d], invStd, normed[..d]);
        return invStd;
    }

    /// <summary>x + x̂ γ + β: the wrapper's output from the normalized last pre-activation.</summary>
    void WrapperOutput(ReadOnlySpan<T> x, ReadOnlySpan<T> normed, Span<T> output)
    {
        for (int j = 0; j < x.Length; j++)
        {
            T value = normed[j];
            if (form.LnWeight is not null) value *= form.LnWeight[j];
            if (form.LnBias is not null) value += form.LnBias[j];
            output[j] = x[j] + value;
        }
    }

    /// <summary>(1/σ)(g − mean g − x̂ mean(g x̂)) (MemoryMlp.LayerNormBackward).</summary>
    static void LayerNormBackward(ReadOnlySpan<T> normed, T invStd, ReadOnlySpan<T> grad, Span<T> result)
    {
        int d = grad.Length;
        T meanGrad = SpanMath.Sum(grad) / T.CreateTruncating(d);
        T meanGradNormed = SpanMath.Dot(grad, normed[..d]) / T.CreateTruncating(d);
        for (int j = 0; j < d; j++) result[j] = invStd * (grad[j] - meanGrad - normed[j] * meanGradNormed);
    }

    void Activate(ReadOnlySpan<T> z, Span<T> a)
    {
        if (typeof(T) == typeof(float) && form.Activation == MemoryActivation.Gelu)
        {
            Float32Gelu.Apply(MemoryMarshal.Cast<T, float>(z), MemoryMarshal.Cast<T, float>(a));
            return;
        }
        for (int j = 0; j < z.Length; j++) a[j] = Activation(z[j]);
    }

    /// <summary>g ⊙= σ'(z).</summary>
    void MultiplyByDerivative(ReadOnlySpan<T> z, Span<T> g)
    {
        if (typeof(T) == typeof(float) && form.Activation == MemoryActivation.Gelu)
        {
            Float32Gelu.MultiplyByDerivative(MemoryMarshal.Cast<T, float>(z), MemoryMarshal.Cast<T, float>(g[..z.Length]));
            return;
        }
        for (int j = 0; j < z.Length; j++) g[j] *= ActivationDerivative(z[j]);
    }

    T Activation(T z)
    {
        double x = double.CreateTruncating(z);
        return form.Activation == MemoryActivation.Gelu
            ? T.CreateTruncating(x * NormalCdf(x))
            : T.CreateTruncating(x / (1 + Math.Exp(-x)));
    }

    /// <summary>σ'(z): GELU Φ(z) + z φ(z), SiLU s(1 + z(1 − s)).</summary>
    T ActivationDerivative(T z)
    {
        double x = double.CreateTruncating(z);
        if (form.Activation == MemoryActivation.Gelu)
            return T.CreateTruncating(NormalCdf(x) + x * Math.Exp(-0.5 * x * x - 0.5 * Math.Log(2 * Math.PI)));
        double s = 1 / (1 + Math.Exp(-x));
        return T.CreateTruncating(s * (1 + x * (1 - s)));
    }

    /// <summary>
    /// Φ(x) = ½ erfc(−x/√2) from Math.NET's erfc (exact to double precision in both tails): float64's GELU, which pins the
    /// kernel to the chunked scan to 1e-10 (float32's GELU takes the vectorized fit above).
    /// </summary>
    static double NormalCdf(double x) => 0.5 * MathNet.Numerics.SpecialFunctions.Erfc(-x / Math.Sqrt(2));
}
