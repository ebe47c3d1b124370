using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.CompilerServices;

namespace Titans.Memory.Scans;

/// <summary>
/// One chunk's input gradients, written by <see cref="FusedChunkChain{T}.BackwardChunk"/> into the node's gradient tensors
/// (the chunk's rows of each; fresh zeros, except the LayerNorm affine's, which sum over the stream's chunks).
/// </summary>
/// <param name="C">[n rows of stride b]: the gradient of C[t, i]</param>
/// <param name="Ends">A_r, d_r, E_r: the gradients of the coefficients at the chunk's last row</param>
/// <param name="CEnd">[n]: of C[r, ·]</param><param name="MEnd">[n]: of (E_r/E_i) θ_i</param>
internal readonly ref struct ChunkGradientSpans<T>(Span<T> q, Span<T> k, Span<T> v, Span<T> a, Span<T> d, Span<T> c, Span<T> ends,
    Span<T> cEnd, Span<T> mEnd, Span<T> lnWeight, Span<T> lnBias)
{
    public readonly Span<T> Q = q, K = k, V = v, A = a, D = d, C = c, Ends = ends, CEnd = cEnd, MEnd = mEnd, LnWeight = lnWeight, LnBias = lnBias;
}

// The chain's backward (HandWrittenScan's equations, docs/fast-memory.md): per chunk, from the state it started in, the
// inner-gradient factors again, retrieval again keeping what its backward reads, then retrieval's backward, the state
// update's and the inner gradient's (the MLP's backward and the LayerNorm wrapper's, differentiated once more).
internal sealed partial class FusedChunkChain<T>
{
    /// <summary>The state's gradient at the current chunk boundary, transposed as the state ([in, out] per layer).</summary>
    public T[][] GradWeightsT { get; private set; } = null!;
    public T[][] GradMomentumT { get; private set; } = null!;
    /// <summary>W₀'s gradient summed over the stream's chunks, transposed.</summary>
    public T[][] GradAnchorT { get; private set; } = null!;

    // Made on the first backward: the gradient of the state at the chunk's start; per layer the gradients of −Δ and −U from retrieval, of Δ, U, the pre-activations p and the carried
    // terms; scratch. Products with W, S, W̄ and the state's gradient as [out, in] use their transposes as stored
    // (SmallGemm.MultiplyTransposed): no transposed copy of anything state-sized.
    T[][] gStartWT = null!, gStartST = null!, gNegDelta = null!, gNegInput = null!, gDelta = null!, gInput = null!, gPre = null!, gCarried = null!;
    T[] bz = null!, bh = null!, gFW = null!, gFM = null!, tmpA = null!, tmpB = null!, hT = null!, nn1 = null!, nn2 = null!, nn3 = null!,
        rowA = null!, rowB = null!;
    /// <summary>A group's chunk-start states, replayed in backward ([chunk][layer], transposed; weights then momentum).</summary>
    readonly List<(T[][] Weights, T[][] Momentum)> groupStates = new();

    void EnsureBackward()
    {
        if (gStartWT is not null) return;
        int b = form.ChunkSize, widest = form.Widest;
        T[][] PerLayer(Func<(int Out, int In), int> size) => form.Shapes.Select(s => new T[size(s)]).ToArray();
        (GradWeightsT, GradMomentumT, GradAnchorT) = (PerLayer(s => s.In * s.Out), PerLayer(s => s.In * s.Out), PerLayer(s => s.In * s.Out));
        (gStartWT, gStartST) = (PerLayer(s => s.In * s.Out), PerLayer(s => s.In * s.Out));
        (gNegDelta, gNegInput, gDelta, gInput) = (PerLayer(s => b * s.Out), PerLayer(s => b * s.In), PerLayer(s => b * s.Out), PerLayer(s => b * s.In));
        (gPre, gCarried) = (PerLayer(s => b * s.Out), PerLayer(s => b * s.In));
        (bz, bh, gFW, gFM, tmpA, tmpB) = (new T[b * widest], new T[b * widest], new T[b * widest], new T[b * widest], new T[b * widest], new T[b * widest]);
        (hT, nn1, nn2, nn3) = (new T[b * widest], new T[b * b], new T[b * b], new T[b * b]);
        (rowA, rowB) = (new T[widest], new T[widest]);
    }

    /// <summary>The given coefficients of the chunk's n rows: A_t, d_t [n], C [n rows of stride b], and at its last row
    /// A_r, d_r, E_r, C[r, ·] and (E_r/E_i) θ_i [n].</summary>
    public void LoadCoefficients(ReadOnlySpan<T> a, ReadOnlySpan<T> d, ReadOnlySpan<T> c, T aEnd, T dEnd, T eEnd,
        ReadOnlySpan<T> cEnd, ReadOnlySpan<T> mEnd, int n)
    {
        int b = form.ChunkSize;
        a[..n].CopyTo(retention);
        d[..n].CopyTo(carry);
        c[..((n - 1) * b + n)].CopyTo(mixing);
        (endRetention, endCarry, endDecay) = (aEnd, dEnd, eEnd);
        cEnd[..n].CopyTo(endMixing);
        mEnd[..n].CopyTo(endMomentum);
    }

    /// <summary>One chunk forward from the loaded coefficients: its outputs, then the state after it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void ForwardChunk(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, int n, Span<T> output)
    {
        GradientFactors(k, v, n);
        Retrieve(q, n, output);
        Update(n);
    }

    /// <summary>The state after one chunk from the loaded coefficients, without its outputs (backward's replay).</summary>
    public void AdvanceChunk(ReadOnlySpan<T> k, ReadOnlySpan<T> v, int n)
    {
        GradientFactors(k, v, n);
        Update(n);
    }

    /// <summary>Clears the state's and W₀'s gradients for a new stream.</summary>
    public void BeginBackward()
    {
        EnsureBackward();
        for (int l = 0; l < form.Depth; l++)
        {
            GradWeightsT[l].AsSpan().Clear();
            GradMomentumT[l].AsSpan().Clear();
            GradAnchorT[l].AsSpan().Clear();
        }
    }

    /// <summary>The chain's own storage for chunk <paramref name="index"/> of a replayed group.</summary>
    public (T[][] Weights, T[][] Momentum) GroupState(int index)
    {
        while (groupStates.Count <= index)
            groupStates.Add((form.Shapes.Select(s => new T[s.In * s.Out]).ToArray(), form.Shapes.Select(s => new T[s.In * s.Out]).ToArray()));
        return groupStates[index];
    }

    /// <summary>
    /// One chunk backward, from the state it started in (in <see cref="WeightsT"/>, <see cref="MomentumT"/>) and its loaded
    /// coefficients: on entry <see cref="GradWeightsT"/>, <see cref="GradMomentumT"/> hold the gradient of the state at the
    /// chunk's end, on exit that at its start; <paramref name="gradOutput"/> is empty where the outputs have none.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void BackwardChunk(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, ReadOnlySpan<T> gradOutput, int n,
        ChunkGradientSpans<T> g)
    {
        int depth = form.Depth;
        GradientFactors(k, v, n);
        for (int l = 0; l < depth; l++)
        {
            gStartWT[l].AsSpan().Clear();
            gStartST[l].AsSpan().Clear();
        }
        bool retrieval = !gradOutput.IsEmpty;
        if (retrieval)
        {
            RetrieveLayers(q, n);
            RetrievalBackward(gradOutput, n, g);
        }
        StateBackward(n, g, retrieval);
        InnerGradientBackward(n, g);
        (GradWeightsT, gStartWT) = (gStartWT, GradWeightsT);
        (GradMomentumT, gStartST) = (gStartST, GradMomentumT);
    }

    /// <summary>
    /// Retrieval's backward for the output gradient: into Q, A, d and C's gradients, the state's at the chunk's start
    /// (<see cref="gStartWT"/>), W₀'s, and per layer the gradients of −Δ and −U that the state chain's backward takes.
    /// </summary>
    void RetrievalBackward(ReadOnlySpan<T> gradOutput, int n, ChunkGradientSpans<T> g)
    {
        int depth = form.Depth, d = form.Dim, b = form.ChunkSize;
        T[] gz = bz, gh = bh;
        if (form.ResidualLayerNorm)
        {
            gradOutput[..(n * d)].CopyTo(g.Q);
            for (int t = 0; t < n; t++)
            {
                var gOut = gradOutput.Slice(t * d, d);
                var x = rNormed.AsSpan(t * d, d);
                if (form.LnWeight is not null) SpanMath.MultiplyAdd(gOut, x, g.LnWeight, g.LnWeight);
                if (form.LnBias is not null) SpanMath.Add(g.LnBias, gOut, g.LnBias);
                if (form.LnWeight is not null) SpanMath.Multiply(gOut, form.LnWeight, rowA.AsSpan(0, d));
                else gOut.CopyTo(rowA);
                LayerNormBackward(x, rInvStd[t], rowA.AsSpan(0, d), gz.AsSpan(t * d, d));
            }
        }
        else
        {
            g.Q[..(n * d)].Clear();
            gradOutput[..(n * d)].CopyTo(gz);
        }
        for (int l = depth - 1; l >= 0; l--)
        {
            var (o, i) = form.Shapes[l];
            for (int t = 0; t < n; t++)
            {
                var row = gz.AsSpan(t * o, o);
                T fromWeights = SpanMath.Dot<T>(row, rFW[l].AsSpan(t * o, o));
                if (form.AnchorT is not null) fromWeights -= SpanMath.Dot<T>(row, rFA[l].AsSpan(t * o, o));   // A multiplies X − X₀
                g.A[t] += fromWeights;
                g.D[t] += SpanMath.Dot<T>(row, rFM[l].AsSpan(t * o, o));
                SpanMath.Multiply(row, retention[t], gFW.AsSpan(t * o, o));
                SpanMath.Multiply(row, carry[t], gFM.AsSpan(t * o, o));
            }
            // The state's gradients hᵀ(A∘gz), hᵀ(d∘gz), transposed as the state.
            SmallGemm<T>.Transpose(rh[l].AsSpan(0, n * i), n, i, hT);
            SmallGemm<T>.Multiply(hT, i, n, gFW, o, gStartWT[l], accumulate: true);
            SmallGemm<T>.Multiply(hT, i, n, gFM, o, gStartST[l], accumulate: true);
            // −(C∘P)Δ: the gradient of the mix gz Δᵀ [n, n], of −Δ (C∘P)ᵀ gz, of C −gMix∘P, of −U gScoresᵀ h with gScores = gMix∘C.
            SmallGemm<T>.Transpose(deltas[l].AsSpan(0, n * o), n, o, tmpA);
            SmallGemm<T>.Multiply(gz, n, o, tmpA, n, nn1, accumulate: false);
            for (int t = 0; t < n; t++)
                for (int s = 0; s < n; s++) nn2[s * n + t] = mixing[t * b + s] * rP[l][t * n + s];
            SmallGemm<T>.Multiply(nn2, n, n, gz, o, gNegDelta[l], accumulate: false);
            for (int t = 0; t < n; t++)
                for (int s = 0; s < n; s++)
                {
                    T mix = nn1[t * n + s];
                    g.C[t * b + s] -= mix * rP[l][t * n + s];
                    T score = mix * mixing[t * b + s];
                    nn2[s * n + t] = score;
                    nn3[t * n + s] = -score;
                }
            SmallGemm<T>.Multiply(nn2, n, n, rh[l], i, gNegInput[l], accumulate: false);
            // h's gradient: (A∘gz) W + (d∘gz) S − gScores U (+ ((1 − A)∘gz) W̄).
            SmallGemm<T>.MultiplyTransposed(gFW, n, o, weightsT[l], i, gh, accumulate: false);
            SmallGemm<T>.MultiplyTransposed(gFM, n, o, momentumT[l], i, gh, accumulate: true);
            SmallGemm<T>.Multiply(nn3, n, n, inputs[l], i, gh, accumulate: true);
            if (form.AnchorT is not null)
            {
                for (int t = 0; t < n; t++) SpanMath.Multiply(gz.AsSpan(t * o, o), T.One - retention[t], gFW.AsSpan(t * o, o));
                SmallGemm<T>.Multiply(hT, i, n, gFW, o, GradAnchorT[l], accumulate: true);
                SmallGemm<T>.MultiplyTransposed(gFW, n, o, form.AnchorT[l], i, gh, accumulate: true);
            }
            if (l > 0)
            {
                MultiplyByDerivative(rZ[l - 1].AsSpan(0, n * i), gh.AsSpan(0, n * i));
                (gz, gh) = (gh, gz);
            }
            else
                SpanMath.Add(g.Q[..(n * d)], gh.AsSpan(0, n * d), g.Q);
        }
    }

    /// <summary>
    /// The state update's backward, W' = A_r W + d_r S − Δᵀ diag(C[r,·]) U (+ (1 − A_r) W̄), S' = E_r S − Δᵀ diag(m) U:
    /// the end coefficients' gradients, the state's at the start (added to retrieval's), and those of Δ and U (less
    /// retrieval's shares), then back through the soft clamp to δ before it.
    /// </summary>
    void StateBackward(int n, ChunkGradientSpans<T> g, bool retrieval)
    {
        for (int l = 0; l < form.Depth; l++)
        {
            var (o, i) = form.Shapes[l];
            T[] gw = GradWeightsT[l], gs = GradMomentumT[l];
            T fromWeights = SpanMath.Dot<T>(gw, weightsT[l]);
            if (form.AnchorT is not null)
            {
                fromWeights -= SpanMath.Dot<T>(gw, form.AnchorT[l]);                 // A_r multiplies W − W̄
                SpanMath.MultiplyAdd(gw, T.One - endRetention, GradAnchorT[l], GradAnchorT[l]);
            }
            g.Ends[0] += fromWeights;
            g.Ends[1] += SpanMath.Dot<T>(gw, momentumT[l]);
            g.Ends[2] += SpanMath.Dot<T>(gs, momentumT[l]);
            SpanMath.MultiplyAdd(gw, endRetention, gStartWT[l], gStartWT[l]);
            SpanMath.MultiplyAdd(gw, endCarry, gStartST[l], gStartST[l]);
            SpanMath.MultiplyAdd(gs, endDecay, gStartST[l], gStartST[l]);
            // U's gradient −c_t (Δ gW)_t − m_t (Δ gS)_t, and C[r,·]'s and m's as row dots.
            SmallGemm<T>.MultiplyTransposed(deltas[l], n, o, gw, i, tmpA, accumulate: false);
            SmallGemm<T>.MultiplyTransposed(deltas[l], n, o, gs, i, tmpB, accumulate: false);
            for (int t = 0; t < n; t++)
            {
                var u = inputs[l].AsSpan(t * i, i);
                var dw = tmpA.AsSpan(t * i, i);
                var ds = tmpB.AsSpan(t * i, i);
                g.CEnd[t] -= SpanMath.Dot<T>(dw, u);
                g.MEnd[t] -= SpanMath.Dot<T>(ds, u);
                var gu = gInput[l].AsSpan(t * i, i);
                SpanMath.Multiply(dw, -endMixing[t], gu);
                SpanMath.MultiplyAdd(ds, -endMomentum[t], gu, gu);
                if (retrieval) SpanMath.Subtract(gu, gNegInput[l].AsSpan(t * i, i), gu);
            }
            // Δ's gradient −c_t (U gWᵀ)_t − m_t (U gSᵀ)_t.
            SmallGemm<T>.Multiply(inputs[l], n, i, gw, o, tmpA, accumulate: false);
            SmallGemm<T>.Multiply(inputs[l], n, i, gs, o, tmpB, accumulate: false);
            for (int t = 0; t < n; t++)
            {
                var gd = gDelta[l].AsSpan(t * o, o);
                SpanMath.Multiply(tmpA.AsSpan(t * o, o), -endMixing[t], gd);
                SpanMath.MultiplyAdd(tmpB.AsSpan(t * o, o), -endMomentum[t], gd, gd);
                if (retrieval) SpanMath.Subtract(gd, gNegDelta[l].AsSpan(t * o, o), gd);
            }
            if (form.Clip <= 0) continue;
            // δ' = s(n) δ with n = ‖δ‖‖a‖, s = c·tanh(n/c)/n: back to δ before it, and more for a.
            for (int t = 0; t < n; t++)
            {
                var raw = rawDeltas[l].AsSpan(t * o, o);
                var gd = gDelta[l].AsSpan(t * o, o);
                double deltaNorm = double.CreateTruncating(deltaNorms[l][t]), inputNorm = double.CreateTruncating(inputNorms[l][t]);
                double scale = double.CreateTruncating(clipScales[l][t]);
                double norm = Math.Max(deltaNorm * inputNorm, 1e-12);
                double tanh = scale * norm / form.Clip;
                double gNorm = double.CreateTruncating(SpanMath.Dot<T>(gd, raw)) * (1 - tanh * tanh - scale) / norm;
                SpanMath.MultiplyAdd(inputs[l].AsSpan(t * i, i), T.CreateTruncating(gNorm * deltaNorm / Math.Max(inputNorm, 1e-30)),
                    gInput[l].AsSpan(t * i, i), gInput[l].AsSpan(t * i, i));
                SpanMath.Multiply(gd, T.CreateTruncating(scale), gd);
                SpanMath.MultiplyAdd(raw, T.CreateTruncating(gNorm * inputNorm / Math.Max(deltaNorm, 1e-30)), gd, gd);
            }
        }
    }

    /// <summary>
    /// The inner gradient's backward: δ_l = (δ_{l+1} W_{l+1}) ∘ σ'(p_l) down from the last layer's error (through the
    /// LayerNorm wrapper where there is one), then the key path p_l = a_l W_lᵀ, into K, V, the LayerNorm affine and the
    /// state's gradient at the chunk's start.
    /// </summary>
    void InnerGradientBackward(int n, ChunkGradientSpans<T> g)
    {
        int depth = form.Depth, d = form.Dim, last = depth - 1;
        for (int l = 0; l < depth; l++) gPre[l].AsSpan(0, n * form.Shapes[l].Out).Clear();
        for (int l = 0; l < last; l++)
        {
            int width = n * form.Shapes[l].Out;
            var (above, aboveIn) = form.Shapes[l + 1];
            var gc = gCarried[l + 1].AsSpan(0, width);
            gDelta[l].AsSpan(0, width).CopyTo(gc);
            MultiplyByDerivative(pre[l].AsSpan(0, width), gc);                                  // the gradient of δ_{l+1} W_{l+1}
            SpanMath.Multiply(gDelta[l].AsSpan(0, width), carried[l].AsSpan(0, width), gPre[l].AsSpan(0, width));
            MultiplySecondDerivative(pre[l].AsSpan(0, width), gPre[l].AsSpan(0, width));
            SmallGemm<T>.Multiply(gCarried[l + 1], n, aboveIn, weightsT[l + 1], above, gDelta[l + 1], accumulate: true);
        }
        T two = T.CreateTruncating(2);
        if (form.ResidualLayerNorm)
        {
            // δ = N(e) with N(e) = (1/σ)(e − mean e − x̂ mean(e x̂)), e = γ∘err, err = 2(K + γ∘x̂ + β − V), x̂ = LN(p).
            T width = T.CreateTruncating(d);
            var e = rowA.AsSpan(0, d);
            var ge = rowB.AsSpan(0, d);
            for (int t = 0; t < n; t++)
            {
                var gd = gDelta[last].AsSpan(t * d, d);
                var x = normed.AsSpan(t * d, d);
                var error = errors.AsSpan(t * d, d);
                var raw = RawDeltas(last).AsSpan(t * d, d);
                T invStd = invStds[t];
                if (form.LnWeight is not null) SpanMath.Multiply(error, form.LnWeight, e);
                else error.CopyTo(e);
                LayerNormBackward(x, invStd, gd, ge);                                            // N is symmetric
                T meanE = SpanMath.Sum<T>(e) / width, meanEx = SpanMath.Dot<T>(e, x) / width;
                T gdCentered = SpanMath.Dot<T>(gd, e) - meanE * SpanMath.Sum<T>(gd);
                T gdNormed = SpanMath.Dot<T>(gd, x);
                T varScale = invStd * invStd / width;
                var gp = gPre[last].AsSpan(t * d, d);
                var gk = g.K.Slice(t * d, d);
                var gv = g.V.Slice(t * d, d);
                for (int j = 0; j < d; j++)
                {
                    // p through 1/σ and x̂ at fixed e (d(1/σ)/dp = −x̂/(nσ²), dx̂/dp = N).
                    gp[j] += -(varScale * gdCentered) * x[j] - meanEx * invStd * ge[j] - gdNormed * varScale * (raw[j] / invStd - meanEx * x[j]);
                    T gy = two * (form.LnWeight is null ? ge[j] : ge[j] * form.LnWeight[j]);
                    gk[j] = gy;
                    gv[j] = -gy;
                    if (form.LnWeight is not null) g.LnWeight[j] += ge[j] * error[j] + gy * x[j];
                    if (form.LnBias is not null) g.LnBias[j] += gy;
                    e[j] = form.LnWeight is null ? gy : gy * form.LnWeight[j];                  // e is done with: γ∘gy for N below
                }
                LayerNormBackward(x, invStd, e, ge);
                SpanMath.Add(gp, ge, gp);
            }
        }
        else
            for (int t = 0; t < n * d; t++)
            {
                T gd = gDelta[last][t];
                gPre[last][t] += two * gd;
                g.K[t] = T.Zero;
                g.V[t] = -two * gd;
            }
        for (int l = last; l >= 0; l--)
        {
            var (o, i) = form.Shapes[l];
            // The state's gradient aᵀ gp (+ gCarriedᵀ δ_raw, the δ-recursion's term), transposed as the state.
            SmallGemm<T>.Multiply(inputsT[l].AsSpan(0, i * n), i, n, gPre[l], o, gStartWT[l], accumulate: true);
            if (l > 0)
            {
                SmallGemm<T>.Transpose(gCarried[l].AsSpan(0, n * i), n, i, hT);
                SmallGemm<T>.Multiply(hT, i, n, RawDeltas(l), o, gStartWT[l], accumulate: true);
            }
            // a's gradient: U's from the update and retrieval, + gp W.
            SmallGemm<T>.MultiplyTransposed(gPre[l], n, o, weightsT[l], i, gInput[l], accumulate: true);
            if (l > 0)
            {
                MultiplyByDerivative(pre[l - 1].AsSpan(0, n * i), gInput[l].AsSpan(0, n * i));
                SpanMath.Add(gPre[l - 1].AsSpan(0, n * i), gInput[l].AsSpan(0, n * i), gPre[l - 1]);
            }
            else
                SpanMath.Add(g.K[..(n * d)], gInput[0].AsSpan(0, n * d), g.K);
        }
    }

    /// <summary>g ⊙= σ''(z): GELU φ(z)(2 − z²), SiLU s(1 − s)(2 + z(1 − 2s)).</summary>
    void MultiplySecondDerivative(ReadOnlySpan<T> z, Span<T> g)
    {
        if (typeof(T) == typeof(float) && form.Activation == MemoryActivation.Gelu)
        {
            Float32Gelu.MultiplySecondDerivative(MemoryMarshal.Cast<T, float>(z), MemoryMarshal.Cast<T, float>(g[..z.Length]));
            return;
        }
        for (int j = 0; j < z.Length; j++)
        {
            double x = double.CreateTruncating(z[j]), value;
            if (form.Activation == MemoryActivation.Gelu)
                value = Math.Exp(-0.5 * x * x - 0.5 * Math.Log(2 * Math.PI)) * (2 - x * x);
            else
            {
                double s = 1 / (1 + Math.Exp(-x));
                value = s * (1 - s) * (2 + x * (1 - 2 * s));
            }
            g[j] *= T.CreateTruncating(value);
        }
    }
}
