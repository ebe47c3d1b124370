using System.Numerics;
using System.Numerics.Tensors;

namespace Titans.Memory.Scans;

/// <summary>What one stream of the fused kernel computes with: the memory's form and its per-head constants.</summary>
/// <param name="Shapes">(out, in) of each layer.</param>
/// <param name="Anchor">W₀ per layer ([out·in], row-major) when forgetting returns to it; null: toward 0.</param>
/// <param name="LnWeight">The wrapper's LayerNorm scale [d] (null: none); <paramref name="LnBias"/> its shift.</param>
/// <param name="Clip">The soft clamp c of each token's inner gradient; 0: off.</param>
internal sealed record ChainForm<T>((int Out, int In)[] Shapes, MemoryActivation Activation, bool ResidualLayerNorm,
    T[][]? Anchor, T[]? LnWeight, T[]? LnBias, double Clip, int ChunkSize) where T : unmanaged, IFloatingPointIeee754<T>
{
    public int Depth => Shapes.Length;
    public int Dim => Shapes[0].In;
    public int Widest => Shapes.Max(s => Math.Max(s.Out, s.In));
}

/// <summary>
/// The memory's chunk chain for one stream (one batch element and head) in one call: the same function as
/// <see cref="ChunkedMemoryScan"/> (docs/method.md §3), computed row by row on the stream's own buffers with no libtorch
/// call per chunk. Per chunk of n ≤ b tokens, at the chunk's starting weights M₀:
/// <list type="number">
/// <item>the inner-gradient factors δ_i, a_i of every token (the MLP on the keys, the LayerNorm wrapper, its backward),
/// soft-clamped;</item>
/// <item>the gate coefficients A_t, E_t, d_t, C[t,i] from segment sums of the log gates (every exponent ≤ 0);</item>
/// <item>retrieval in the dual form, W_t z = A_t W₀z + d_t S₀z + (1 − A_t) W̄z − Σ_{i≤t} C[t,i] (a_i·z) δ_i, layer by layer;</item>
/// <item>the state at the chunk's last row r: W = A_r W + d_r S + (1 − A_r) W̄ − Σ_i C[r,i] δ_i ⊗ a_i,
/// S = E_r S − Σ_i (E_r/E_i) θ_i δ_i ⊗ a_i.</item>
/// </list>
/// (W̄ is the retention target W₀ where forgetting returns to it.) Every sum runs in a fixed order, so a stream's result
/// does not depend on how many threads share the streams.
/// </summary>
internal sealed class FusedChunkChain<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    const double LayerNormEps = 1e-5;
    readonly ChainForm<T> form;
    // Per chunk, reused: per layer the keys' inputs a_l and pre-activations z_l ([b, in_l], [b, out_l]) and the deltas.
    readonly T[][] inputs, pre, deltas;
    readonly T[] query, queryPre, scratch, scratch2, normed;
    readonly T[] retention, carry, momentumDecay, mixing, endMomentum, segA, segE;

    public FusedChunkChain(ChainForm<T> form)
    {
        this.form = form;
        int b = form.ChunkSize, depth = form.Depth, widest = form.Widest;
        inputs = form.Shapes.Select(s => new T[b * s.In]).ToArray();
        pre = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        deltas = form.Shapes.Select(s => new T[b * s.Out]).ToArray();
        query = new T[widest];
        queryPre = new T[widest];
        scratch = new T[widest];
        scratch2 = new T[widest];
        normed = new T[widest];
        retention = new T[b];
        carry = new T[b];
        momentumDecay = new T[b];
        mixing = new T[b * b];
        endMomentum = new T[b];
        segA = new T[b];
        segE = new T[b];
    }

    /// <summary>
    /// Runs the stream's T tokens from the state in <paramref name="weights"/>, <paramref name="momentum"/> (updated in
    /// place to the state after the last token); the state after the last full chunk is copied to the boundary buffers.
    /// </summary>
    /// <param name="q">[T, d]</param><param name="k">[T, d]</param><param name="v">[T, d]</param>
    /// <param name="theta">[T]</param><param name="logDecay">[T]</param><param name="logEta">[T]</param>
    /// <param name="output">[T, d]</param>
    public void Run(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> theta, ReadOnlySpan<T> logDecay,
        ReadOnlySpan<T> logEta, T[][] weights, T[][] momentum, Span<T> output, T[][] boundaryWeights, T[][] boundaryMomentum)
    {
        int length = theta.Length, d = form.Dim, b = form.ChunkSize;
        int fullChunks = length / b;
        for (int start = 0, c = 0; start < length; start += b, c++)
        {
            int n = Math.Min(b, length - start);
            GradientFactors(k.Slice(start * d, n * d), v.Slice(start * d, n * d), weights, n);
            Coefficients(theta.Slice(start, n), logDecay.Slice(start, n), logEta.Slice(start, n), n);
            for (int t = 0; t < n; t++) Retrieve(q.Slice((start + t) * d, d), weights, momentum, t, output.Slice((start + t) * d, d));
            Update(weights, momentum, theta.Slice(start, n), n);
            if (c == fullChunks - 1)
                for (int l = 0; l < form.Depth; l++)
                {
                    weights[l].CopyTo(boundaryWeights[l], 0);
                    momentum[l].CopyTo(boundaryMomentum[l], 0);
                }
        }
    }

    /// <summary>δ_l and a_l of the chunk's n tokens at the weights it starts from, soft-clamped (MemoryMlp.GradientFactors).</summary>
    void GradientFactors(ReadOnlySpan<T> keys, ReadOnlySpan<T> values, T[][] weights, int n)
    {
        int depth = form.Depth, d = form.Dim;
        keys.CopyTo(inputs[0]);
        for (int l = 0; l < depth; l++)
        {
            var (o, i) = form.Shapes[l];
            for (int r = 0; r < n; r++)
            {
                var z = pre[l].AsSpan(r * o, o);
                MatVec(weights[l], o, i, inputs[l].AsSpan(r * i, i), z);
                if (l < depth - 1) Activate(z, inputs[l + 1].AsSpan(r * o, o));
            }
        }
        int last = depth - 1;
        for (int r = 0; r < n; r++)
        {
            var z = pre[last].AsSpan(r * d, d);
            var g = deltas[last].AsSpan(r * d, d);
            // error = 2 (M(k) − v), through the wrapper's LayerNorm to the last pre-activation.
            if (form.ResidualLayerNorm)
            {
                var invStd = Normalize(z, normed);
                WrapperOutput(keys.Slice(r * d, d), normed, scratch);
                for (int j = 0; j < d; j++)
                {
                    T error = T.CreateTruncating(2) * (scratch[j] - values[r * d + j]);
                    scratch[j] = form.LnWeight is null ? error : error * form.LnWeight[j];
                }
                LayerNormBackward(normed, invStd, scratch.AsSpan(0, d), g);
            }
            else
                for (int j = 0; j < d; j++) g[j] = T.CreateTruncating(2) * (z[j] - values[r * d + j]);
        }
        for (int l = last; l > 0; l--)
        {
            var (o, i) = form.Shapes[l];
            for (int r = 0; r < n; r++)
            {
                // δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1})
                var below = deltas[l - 1].AsSpan(r * i, i);
                below.Clear();
                var delta = deltas[l].AsSpan(r * o, o);
                for (int row = 0; row < o; row++)
                    TensorPrimitives.MultiplyAdd(weights[l].AsSpan(row * i, i), delta[row], below, below);
                var zBelow = pre[l - 1].AsSpan(r * i, i);
                for (int j = 0; j < i; j++) below[j] *= ActivationDerivative(zBelow[j]);
            }
        }
        if (form.Clip > 0)
            for (int l = 0; l < depth; l++)
            {
                var (o, i) = form.Shapes[l];
                for (int r = 0; r < n; r++)
                {
                    var delta = deltas[l].AsSpan(r * o, o);
                    double norm = double.CreateTruncating(TensorPrimitives.Norm<T>(delta)) * double.CreateTruncating(TensorPrimitives.Norm<T>(inputs[l].AsSpan(r * i, i)));
                    double safe = Math.Max(norm, 1e-12);
                    TensorPrimitives.Multiply(delta, T.CreateTruncating(Math.Tanh(safe / form.Clip) * form.Clip / safe), delta);
                }
            }
    }

    /// <summary>
    /// A_t, E_t, d_t and C[t,i] for t, i &lt; n (ChunkCoefficients), and (E_r/E_i) θ_i at the last row r, by their
    /// recurrences over t: A_t = (1 − α_t) A_{t−1}, E_t = η_t E_{t−1}, d_t = (1 − α_t) d_{t−1} + E_t, and with
    /// P[t,i] = Σ_{s=i..t} (A_t/A_s)(E_s/E_i): P[t,i] = (1 − α_t) P[t−1,i] + E_t/E_i, P[i,i] = 1, C[t,i] = θ_i P[t,i].
    /// Only products of gates ≤ 1 (no ratio of cumulative products, no difference of sums), so a gate of 0 is exact.
    /// </summary>
    void Coefficients(ReadOnlySpan<T> theta, ReadOnlySpan<T> logDecay, ReadOnlySpan<T> logEta, int n)
    {
        int b = form.ChunkSize;
        var ratioE = segE.AsSpan(0, n);                    // E_t/E_i for i ≤ t, updated row by row
        T a = T.One, e = T.One, dt = T.Zero;
        for (int t = 0; t < n; t++)
        {
            T keep = T.Exp(logDecay[t]), decay = T.Exp(logEta[t]);
            a *= keep;
            e *= decay;
            dt = keep * dt + e;
            retention[t] = a;
            momentumDecay[t] = e;
            carry[t] = dt;
            for (int i = 0; i < t; i++) ratioE[i] *= decay;
            ratioE[t] = T.One;
            var row = mixing.AsSpan(t * b, b);
            var above = mixing.AsSpan(Math.Max(t - 1, 0) * b, b);
            for (int i = 0; i < t; i++) segA[i] = keep * above[i] + ratioE[i];   // P[t,i], from P[t−1,i] (row t − 1)
            segA[t] = T.One;
            for (int i = 0; i <= t; i++) row[i] = segA[i];
        }
        // Rows hold P; C = θ_i P[t,i] once every row is built (row t reads row t − 1's P).
        for (int t = n - 1; t >= 0; t--)
        {
            var row = mixing.AsSpan(t * b, b);
            for (int i = 0; i <= t; i++) row[i] *= theta[i];
        }
        for (int i = 0; i < n; i++) endMomentum[i] = ratioE[i] * theta[i];   // ratioE now holds E_r/E_i for r = n − 1
    }

    /// <summary>y_t = M_t(q_t) with the per-token weights of row t of the chunk, in the dual form.</summary>
    void Retrieve(ReadOnlySpan<T> q, T[][] weights, T[][] momentum, int t, Span<T> output)
    {
        int depth = form.Depth, d = form.Dim, b = form.ChunkSize;
        q.CopyTo(query);
        T a = retention[t], dt = carry[t];
        var row = mixing.AsSpan(t * b, b);
        for (int l = 0; l < depth; l++)
        {
            var (o, i) = form.Shapes[l];
            var x = query.AsSpan(0, i);
            var z = queryPre.AsSpan(0, o);
            var y = scratch.AsSpan(0, o);
            MatVec(weights[l], o, i, x, z);
            TensorPrimitives.Multiply(z, a, z);
            MatVec(momentum[l], o, i, x, y);
            TensorPrimitives.MultiplyAdd(y, dt, z, z);
            for (int s = 0; s <= t; s++)
            {
                T score = row[s] * TensorPrimitives.Dot<T>(inputs[l].AsSpan(s * i, i), x);
                TensorPrimitives.MultiplyAdd(deltas[l].AsSpan(s * o, o), -score, z, z);
            }
            if (form.Anchor is not null)
            {
                MatVec(form.Anchor[l], o, i, x, y);
                TensorPrimitives.MultiplyAdd(y, T.One - a, z, z);
            }
            if (l < depth - 1) Activate(z, query.AsSpan(0, o));
        }
        var last = queryPre.AsSpan(0, d);
        if (!form.ResidualLayerNorm) { last.CopyTo(output); return; }
        Normalize(last, normed);
        WrapperOutput(q, normed, output);
    }

    /// <summary>The state after the chunk's last row r = n − 1, layer by layer, row by row of W (W's row uses S's old row).</summary>
    void Update(T[][] weights, T[][] momentum, ReadOnlySpan<T> theta, int n)
    {
        int r = n - 1, b = form.ChunkSize;
        T a = retention[r], dr = carry[r], e = momentumDecay[r];
        var mixingEnd = mixing.AsSpan(r * b, b);
        for (int l = 0; l < form.Depth; l++)
        {
            var (o, i) = form.Shapes[l];
            for (int row = 0; row < o; row++)
            {
                var w = weights[l].AsSpan(row * i, i);
                var s = momentum[l].AsSpan(row * i, i);
                TensorPrimitives.Multiply(w, a, w);
                TensorPrimitives.MultiplyAdd(s, dr, w, w);
                if (form.Anchor is not null) TensorPrimitives.MultiplyAdd(form.Anchor[l].AsSpan(row * i, i), T.One - a, w, w);
                TensorPrimitives.Multiply(s, e, s);
                for (int t = 0; t <= r; t++)
                {
                    T delta = deltas[l][t * o + row];
                    var input = inputs[l].AsSpan(t * i, i);
                    TensorPrimitives.MultiplyAdd(input, -(mixingEnd[t] * delta), w, w);
                    TensorPrimitives.MultiplyAdd(input, -(endMomentum[t] * delta), s, s);
                }
            }
        }
    }

    /// <summary>y = M x for M [rows, cols] row-major.</summary>
    static void MatVec(T[] m, int rows, int cols, ReadOnlySpan<T> x, Span<T> y)
    {
        for (int row = 0; row < rows; row++) y[row] = TensorPrimitives.Dot<T>(m.AsSpan(row * cols, cols), x);
    }

    /// <summary>x̂ = (z − μ)/σ (biased variance, ε = 1e-5) into <paramref name="normed"/>; returns 1/σ.</summary>
    static T Normalize(ReadOnlySpan<T> z, Span<T> normed)
    {
        int d = z.Length;
        T mean = TensorPrimitives.Sum(z) / T.CreateTruncating(d);
        TensorPrimitives.Subtract(z, mean, normed[..d]);
        T variance = TensorPrimitives.Dot<T>(normed[..d], normed[..d]) / T.CreateTruncating(d);
        T invStd = T.One / T.Sqrt(variance + T.CreateTruncating(LayerNormEps));
        TensorPrimitives.Multiply(normed[..d], invStd, normed[..d]);
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
        T meanGrad = TensorPrimitives.Sum(grad) / T.CreateTruncating(d);
        T meanGradNormed = TensorPrimitives.Dot(grad, normed[..d]) / T.CreateTruncating(d);
        for (int j = 0; j < d; j++) result[j] = invStd * (grad[j] - meanGrad - normed[j] * meanGradNormed);
    }

    void Activate(ReadOnlySpan<T> z, Span<T> a)
    {
        for (int j = 0; j < z.Length; j++) a[j] = Activation(z[j]);
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

    /// <summary>Φ(x) = ½ erfc(−x/√2), from Math.NET's erfc (exact to double precision in both tails).</summary>
    static double NormalCdf(double x) => 0.5 * MathNet.Numerics.SpecialFunctions.Erfc(-x / Math.Sqrt(2));
}
