using TorchSharp;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

// The backward pass: retrieval's backward per batch of chunks, then the state chain's, chunk by chunk, last to first.
public static partial class HandWrittenScan
{
    /// <summary>
    /// Gradients of a batch of chunks' retrieval (recomputed) for its output gradient: of Q, A, d and −C (batched), and the
    /// contributions to each chunk's starting state, U and −Δ... (signs as named), and the LayerNorm affine summed per row.
    /// </summary>
    sealed record RetrievalGradients(Tensor Q, Tensor A, Tensor D, Tensor NegC, Tensor[] Weights, Tensor[] Momentum,
        Tensor[] NegDeltas, Tensor[] NegInputs, Tensor? LnWeight, Tensor? LnBias, Tensor[]? Anchor);

    static RetrievalGradients RetrievalBackward(Form form, Retrieval x, MemoryWeights start, Tensor[] inputs, Tensor[] deltas, Tensor gradOutput)
    {
        int depth = form.Depth;
        MemoryMlp mlp = form.Mlp;
        var r = new RetrievalPass(depth);
        Retrieve(form, x, start, inputs, deltas, r);
        Tensor gQ, gz;
        Tensor? gLnWeight = null, gLnBias = null;
        if (mlp.ResidualLayerNorm)
        {
            gQ = gradOutput;
            if (x.LnWeight is not null) gLnWeight = (gradOutput * r.Normed!).sum(-2, keepdim: true);
            if (x.LnBias is not null) gLnBias = gradOutput.sum(-2, keepdim: true);
            gz = MemoryMlp.LayerNormBackward(r.Normed!, r.InvStd!, x.LnWeight is null ? gradOutput : gradOutput * x.LnWeight);
        }
        else
        {
            gQ = zeros_like(x.Q);
            gz = gradOutput;
        }
        Tensor? gA = null, gD = null, gNegC = null;
        var gW = new Tensor[depth];
        var gS = new Tensor[depth];
        var gNegDelta = new Tensor[depth];
        var gNegInput = new Tensor[depth];
        Tensor[]? gAnchor = x.Anchor is null ? null : new Tensor[depth];
        for (int l = depth - 1; l >= 0; l--)
        {
            Tensor h = r.Inputs[l];
            // With retention toward W₀, z has A∘X + (1 − A)∘X₀: A's gradient sees X − X₀.
            Tensor fromWeights = r.FromAnchor[l] is { } x0 ? r.FromWeights[l] - x0 : r.FromWeights[l];
            Tensor rowsA = (gz * fromWeights).sum(-1, keepdim: true), rowsD = (gz * r.FromMomentum[l]).sum(-1, keepdim: true);
            gA = gA is null ? rowsA : gA.add_(rowsA);
            gD = gD is null ? rowsD : gD.add_(rowsD);
            Tensor gFromWeights = x.A * gz, gFromMomentum = x.D * gz;
            gW[l] = gFromWeights.transpose(-1, -2).matmul(h);
            gS[l] = gFromMomentum.transpose(-1, -2).matmul(h);
            Tensor gMixed = gz.matmul(deltas[l].transpose(-1, -2));          // minus the gradient of C∘P, [.., b, b]
            gNegDelta[l] = (x.C * r.Scores[l]).transpose(-1, -2).matmul(gz);
            gNegC = gNegC is null ? gMixed * r.Scores[l] : gNegC.addcmul_(gMixed, r.Scores[l], 1);
            Tensor gScores = gMixed * x.C;                                    // minus the gradient of P
            gNegInput[l] = gScores.transpose(-1, -2).matmul(h);
            Tensor gh = gFromWeights.matmul(start.Weights[l]);
            gh = gFromMomentum.baddbmm(start.Momentum[l], gh, 1, 1);
            gh = gScores.baddbmm(inputs[l], gh, 1, -1);
            if (gAnchor is not null)
            {
                Tensor gFromAnchor = x.PerRow(x.Forgotten! * gz);                              // [BH, G·b, out]
                gAnchor[l] = gFromAnchor.transpose(-1, -2).matmul(x.PerRow(h));                // summed over the batch's chunks
                gh = gh.add_(x.PerChunk(gFromAnchor.matmul(x.Anchor![l])));
            }
            if (l > 0) gz = gh * mlp.ActivationDerivative(r.PreActivations[l - 1]);
            else gQ = gQ + gh;
        }
        return new RetrievalGradients(gQ, gA!, gD!, gNegC!, gW, gS, gNegDelta, gNegInput, gLnWeight, gLnBias, gAnchor);
    }

    /// <param name="saved">what forward kept besides the inputs (<see cref="Kept"/>)</param>
    static List<Tensor> Backward(Form form, List<Tensor> inputs, List<Tensor> saved, List<Tensor> gradOutputs)
    {
        NodeInputs x = Unpack(form, NodeTensors.Read(form, new TensorReader(inputs)));
        var ln = (x.LnWeight, x.LnBias);
        int depth = form.Depth, n = x.Chunks.Length;
        // The outputs' gradients, by name (an output autograd gave none is null: zero).
        var given = new TensorReader(gradOutputs);
        Tensor? gradOutput = given.NextDefined();
        Tensor?[] finalW = Enumerable.Range(0, depth).Select(_ => given.NextDefined()).ToArray(), finalS = Enumerable.Range(0, depth).Select(_ => given.NextDefined()).ToArray();
        Tensor?[] boundaryW = Enumerable.Range(0, depth).Select(_ => given.NextDefined()).ToArray(), boundaryS = Enumerable.Range(0, depth).Select(_ => given.NextDefined()).ToArray();
        // The running gradient of the state at the current chunk boundary, starting from the final state's.
        var gW = Enumerable.Range(0, depth).Select(l => finalW[l] ?? zeros_like(x.Start.Weights[l])).ToArray();
        var gS = Enumerable.Range(0, depth).Select(l => finalS[l] ?? zeros_like(x.Start.Momentum[l])).ToArray();
        var chunkGrads = new ChunkGradients[n];
        var groupGrads = new List<GroupGradients>();
        Tensor? gLnWeight = x.LnWeight is null ? null : zeros_like(x.LnWeight), gLnBias = x.LnBias is null ? null : zeros_like(x.LnBias);
        Tensor[]? gAnchor = x.Anchor?.Select(w => zeros_like(w)).ToArray();
        void AddShared(Tensor? weight, Tensor? bias, Tensor[]? anchor)
        {
            if (gLnWeight is not null && weight is not null) gLnWeight.add_(weight);
            if (gLnBias is not null && bias is not null) gLnBias.add_(bias);
            if (gAnchor is not null && anchor is not null) for (int l = 0; l < depth; l++) gAnchor[l].add_(anchor[l]);
        }

        int groupChunks = Math.Min(form.GroupChunks, n), groups = (n + groupChunks - 1) / groupChunks;
        var reader = new TensorReader(saved);
        var kept = Kept.Read(form, reader, groups, n - (groups - 1) * groupChunks);
        reader.End();
        for (int group = groups - 1; group >= 0; group--)
        {
            int first = group * groupChunks, count = Math.Min(groupChunks, n - first);
            var starts = new MemoryWeights[count];
            var factors = new FactorPass[count];
            using var groupScope = NewDisposeScope();
            if (group == groups - 1)
                for (int i = 0; i < count; i++)   // kept by forward: no replay
                    (starts[i], factors[i]) = kept.LastGroup[i];
            else
            {
                starts[0] = kept.GroupStarts[group];
                for (int i = 0; i < count; i++)
                {
                    factors[i] = Factors(form, x.Chunks[first + i], starts[i], ln);
                    if (i + 1 < count) starts[i + 1] = Update(x.Chunks[first + i], starts[i], factors[i], x.Anchor);
                }
            }

            // Retrieval in batches of chunks (it does not depend on the gradient flowing back through the states), each
            // followed by the state chain backward over its chunks.
            int batches = (count + RetrievalChunks - 1) / RetrievalChunks;
            for (int batch = batches - 1; batch >= 0; batch--)
            {
                int sub = batch * RetrievalChunks, size = Math.Min(RetrievalChunks, count - sub);
                RetrievalGradients? retrieval = null;
                Tensor[][]? retrievalW = null, retrievalS = null, retrievalNegDelta = null, retrievalNegInput = null;
                if (gradOutput is not null)
                {
                    var (states, us, deltas) = Batch(starts.Skip(sub).Take(size).ToList(), factors.Skip(sub).Take(size).ToList());
                    Tensor g = gradOutput.narrow(1, first + sub, size).reshape(x.Rows * size, gradOutput.shape[2], gradOutput.shape[3]);
                    retrieval = RetrievalBackward(form, x.Group(first + sub, size), states, us, deltas, g);
                    Tensor[][] PerChunk(Tensor[] batched) =>
                        batched.Select(t => t.view(new[] { x.Rows, (long)size }.Concat(t.shape.Skip(1)).ToArray()).unbind(1)).ToArray();
                    (retrievalW, retrievalS) = (PerChunk(retrieval.Weights), PerChunk(retrieval.Momentum));
                    (retrievalNegDelta, retrievalNegInput) = (PerChunk(retrieval.NegDeltas), PerChunk(retrieval.NegInputs));
                    Tensor? Rows(Tensor? t) => t?.view(x.Rows, size, t.shape[1], t.shape[2]).sum(1);
                    AddShared(Rows(retrieval.LnWeight), Rows(retrieval.LnBias), retrieval.Anchor);
                }

                for (int j = size - 1; j >= 0; j--)
                {
                    int i = sub + j, c = first + i;
                    if (form.BoundaryOutput && c == n - 2)
                        for (int l = 0; l < depth; l++)
                        {
                            if (boundaryW[l] is { } gb) gW[l] = gW[l] + gb;
                            if (boundaryS[l] is { } gbs) gS[l] = gS[l] + gbs;
                        }
                    using var scope = NewDisposeScope();
                    var fromRetrieval = retrieval is null ? null : new ChunkRetrieval(
                        retrievalW!.Select(p => p[j]).ToArray(), retrievalS!.Select(p => p[j]).ToArray(),
                        retrievalNegDelta!.Select(p => p[j]).ToArray(), retrievalNegInput!.Select(p => p[j]).ToArray());
                    var grads = ChunkBackward(form, x.Chunks[c], starts[i], factors[i], ln, x.Anchor, fromRetrieval, gW, gS);
                    AddShared(grads.LnWeight, grads.LnBias, grads.Anchor);
                    scope.MoveToOuter(grads.Tensors.Concat(gW).Concat(gS));
                    chunkGrads[c] = grads;
                }
                Tensor Shaped(Tensor t) => t.view(new[] { x.Rows, (long)size }.Concat(t.shape.Skip(1)).ToArray());
                int at = first + sub;
                groupGrads.Add(retrieval is null
                    ? new GroupGradients(zeros_like(x.Q.narrow(1, at, size)), zeros_like(x.A.narrow(1, at, size)),
                        zeros_like(x.D.narrow(1, at, size)), zeros_like(x.C.narrow(1, at, size)))
                    : new GroupGradients(Shaped(retrieval.Q), Shaped(retrieval.A.squeeze(-1)), Shaped(retrieval.D.squeeze(-1)), Shaped(retrieval.NegC)));
            }
            groupScope.MoveToOuter(chunkGrads.Skip(first).Take(count).SelectMany(t => t.Tensors).Concat(gW).Concat(gS)
                .Concat(groupGrads.SelectMany(t => t.Tensors)));
        }

        groupGrads.Reverse();
        Tensor Joined(Func<GroupGradients, Tensor> pick) => groupGrads.Count == 1 ? pick(groupGrads[0]) : cat(groupGrads.Select(pick).ToList(), 1);
        Tensor Stack(Func<ChunkGradients, Tensor> pick) => stack(chunkGrads.Select(pick), 1);
        return new NodeTensors(Joined(t => t.Q), Stack(t => t.K), Stack(t => t.V), Joined(t => t.A), Joined(t => t.D), Joined(t => t.NegC).neg(),
            Stack(t => t.AEnd), Stack(t => t.DEnd), Stack(t => t.NegCEnd).neg_(), Stack(t => t.EEnd), Stack(t => t.NegMEnd).neg_(),
            new MemoryWeights(gW, gS), gLnWeight, gLnBias, gAnchor).Flat.ToList();
    }

    /// <summary>A retrieval batch's input gradients, shaped [BH, chunks, ..]; that of C negated (see <see cref="ChunkGradients"/>).</summary>
    sealed record GroupGradients(Tensor Q, Tensor A, Tensor D, Tensor NegC)
    {
        public IEnumerable<Tensor> Tensors => new[] { Q, A, D, NegC };
    }

    /// <summary>One chunk's share of its group's retrieval gradients.</summary>
    sealed record ChunkRetrieval(Tensor[] Weights, Tensor[] Momentum, Tensor[] NegDeltas, Tensor[] NegInputs);

    /// <summary>One chunk's input gradients from the state chain; those of the end rows C[r, ·], (E_r/E_i)θ_i negated (signs
    /// folded into the loop, undone once for all chunks).</summary>
    sealed record ChunkGradients(Tensor K, Tensor V, Tensor AEnd, Tensor DEnd, Tensor NegCEnd, Tensor EEnd, Tensor NegMEnd,
        Tensor? LnWeight, Tensor? LnBias, Tensor[]? Anchor)
    {
        public IEnumerable<Tensor> Tensors => new[] { K, V, AEnd, DEnd, NegCEnd, EEnd, NegMEnd }
            .Concat(LnWeight is null ? Array.Empty<Tensor>() : new[] { LnWeight }).Concat(LnBias is null ? Array.Empty<Tensor>() : new[] { LnBias })
            .Concat(Anchor ?? Array.Empty<Tensor>());
    }

    /// <summary>
    /// One chunk backward through the state chain: the state update and the inner gradient, with the chunk's share of its
    /// group's retrieval gradients. On entry <paramref name="gW"/>, <paramref name="gS"/> hold the gradient of the state at
    /// the chunk's end; on exit that of its start.
    /// </summary>
    static ChunkGradients ChunkBackward(Form form, ChunkInputs x, MemoryWeights start, FactorPass f, (Tensor? Weight, Tensor? Bias) ln,
        Tensor[]? anchor, ChunkRetrieval? retrieval, Tensor[] gW, Tensor[] gS)
    {
        int depth = form.Depth;
        MemoryMlp mlp = form.Mlp;
        var gDelta = new Tensor[depth];
        var gInput = new Tensor[depth];
        var gStartW = new Tensor[depth];
        var gStartS = new Tensor[depth];
        Tensor? gAEnd = null, gDEnd = null, gNegCEnd = null, gEEnd = null, gNegMEnd = null;
        Tensor Sum(Tensor? total, Tensor term) => total is null ? term : total + term;
        // ⟨u, w⟩ per row as one batched matmul, [BH,1,1]: it reads both states and writes nothing state-sized.
        Tensor MatrixDot(Tensor u, Tensor w) => u.reshape(u.shape[0], 1, -1).bmm(w.reshape(w.shape[0], -1, 1));

        // The state update: W' = A_r W + d_r S + Δᵀ diag(−c) U (+ (1 − A_r) W₀), S' = E_r S + Δᵀ diag(−m) U.
        var gAnchor = anchor is null ? null : new Tensor[depth];
        for (int l = 0; l < depth; l++)
        {
            Tensor u = f.Inputs[l], delta = f.Deltas[l];
            gAEnd = Sum(gAEnd, MatrixDot(gW[l], start.Weights[l]));
            if (anchor is not null) gAEnd = gAEnd - MatrixDot(gW[l], anchor[l]);           // A_r multiplies W − W₀
            if (gAnchor is not null) gAnchor[l] = x.ForgottenEnd! * gW[l];
            gDEnd = Sum(gDEnd, MatrixDot(gW[l], start.Momentum[l]));
            gEEnd = Sum(gEEnd, MatrixDot(gS[l], start.Momentum[l]));
            // Into the retrieval's share where there is one (a per-chunk view used once): no new state-sized tensors.
            gStartW[l] = retrieval is null ? x.AEnd * gW[l] : retrieval.Weights[l].addcmul_(x.AEnd, gW[l], 1);
            gStartS[l] = (retrieval is null ? x.DEnd * gW[l] : retrieval.Momentum[l].addcmul_(x.DEnd, gW[l], 1)).addcmul_(x.EEnd, gS[l], 1);
            Tensor dw = delta.matmul(gW[l]), ds = delta.matmul(gS[l]);                   // [BH,b,in]
            gInput[l] = (x.NegCEnd * dw).addcmul(x.NegMEnd, ds, 1);
            gNegCEnd = Sum(gNegCEnd, (dw * u).sum(-1, keepdim: true));
            gNegMEnd = Sum(gNegMEnd, (ds * u).sum(-1, keepdim: true));
            gDelta[l] = (x.NegCEnd * u.matmul(gW[l].transpose(-1, -2))).addcmul(x.NegMEnd, u.matmul(gS[l].transpose(-1, -2)), 1);
            if (retrieval is not null)
            {
                gInput[l] = gInput[l].sub_(retrieval.NegInputs[l]);
                gDelta[l] = gDelta[l].sub_(retrieval.NegDeltas[l]);
            }
        }

        // The soft clamp, δ' = s(n) δ with n = ‖δ‖‖a‖: back to the gradient of δ before it (and more for a).
        if (form.Clipped)
            for (int l = 0; l < depth; l++)
            {
                Tensor raw = f.RawDeltas![l], scale = f.Scales![l], deltaNorm = f.DeltaNorms![l], inputNorm = f.InputNorms![l];
                Tensor norm = (deltaNorm * inputNorm).clamp_min(1e-12);
                Tensor tanh = scale * norm / form.Clip;                                    // tanh(n/c)
                Tensor slope = (1 - tanh.square() - scale) / norm;                         // ds/dn
                Tensor gNorm = (gDelta[l] * raw).sum(-1, keepdim: true).mul_(slope);
                gInput[l] = gInput[l].addcmul(gNorm * deltaNorm / inputNorm.clamp_min(1e-30), f.Inputs[l], 1);
                gDelta[l] = (gDelta[l] * scale).addcmul_(gNorm * inputNorm / deltaNorm.clamp_min(1e-30), raw, 1);
            }

        // The inner gradient: δ_l = (δ_{l+1} W_{l+1}) ∘ σ'(p_l) up to the last layer's error, then the key path.
        Tensor? gLnWeight = null, gLnBias = null;
        var gPre = new Tensor?[depth];
        var gCarriedOf = new Tensor?[depth];   // layer l's δ-recursion term δ_lᵀ(gδ_{l−1}∘σ'), folded into its key-path matmul
        for (int l = 0; l < depth - 1; l++)
        {
            Tensor p = f.PreActivations[l];
            Tensor gCarried = gDelta[l] * f.Slopes[l];
            gPre[l] = gDelta[l] * f.Carried[l] * mlp.ActivationSecondDerivative(p);
            gDelta[l + 1] = gCarried.matmul(start.Weights[l + 1].transpose(-1, -2)).add_(gDelta[l + 1]);
            gCarriedOf[l + 1] = gCarried;
        }
        Tensor gK, gV;
        Tensor gd = gDelta[depth - 1];
        if (mlp.ResidualLayerNorm)
        {
            // δ = N(e) with N(e) = (1/σ)(e − mean e − x̂ mean(e x̂)) and e = γ∘err, err = 2(K + γ∘x̂ + β − V), x̂ = LN(z).
            Tensor normed = f.Normed!, invStd = f.InvStd!, error = f.Error!;
            Tensor e = ln.Weight is null ? error : error * ln.Weight;
            Tensor ge = MemoryMlp.LayerNormBackward(normed, invStd, gd);            // N is symmetric: its transpose is itself
            long width = normed.shape[^1];
            Tensor centered = e - e.mean(new long[] { -1 }, keepdim: true);
            Tensor meanEx = (e * normed).mean(new long[] { -1 }, keepdim: true);
            Tensor gdCentered = (gd * centered).sum(-1, keepdim: true), gdNormed = (gd * normed).sum(-1, keepdim: true);
            Tensor varScale = invStd.square() / width;
            // z through 1/σ and x̂ at fixed e (d(1/σ)/dz = −x̂/(nσ²), dx̂/dz = N):
            Tensor gz = -(varScale * gdCentered) * normed - meanEx * invStd * ge - gdNormed * varScale * (f.Raw(depth - 1) / invStd - meanEx * normed);
            Tensor gError = ln.Weight is null ? ge : ge * ln.Weight;
            Tensor gy = 2 * gError;
            gK = gy;
            gV = -gy;
            if (ln.Weight is not null) gLnWeight = (ge * error).addcmul(gy, normed, 1).sum(-2, keepdim: true);
            if (ln.Bias is not null) gLnBias = gy.sum(-2, keepdim: true);
            gPre[depth - 1] = Sum(gPre[depth - 1], gz + MemoryMlp.LayerNormBackward(normed, invStd, ln.Weight is null ? gy : gy * ln.Weight));
        }
        else
        {
            gPre[depth - 1] = Sum(gPre[depth - 1], 2 * gd);
            gK = zeros_like(x.K);
            gV = -2 * gd;
        }
        for (int l = depth - 1; l >= 0; l--)
        {
            Tensor gp = gPre[l]!;
            // gW_l += gp_lᵀ a_l (+ δ_lᵀ gCarried): one matmul over both, stacked along the tokens.
            gStartW[l] = gCarriedOf[l] is { } carried
                ? cat(new[] { gp, f.Raw(l) }, -2).transpose(-1, -2).baddbmm(cat(new[] { f.Inputs[l], carried }, -2), gStartW[l], 1, 1)
                : gp.transpose(-1, -2).baddbmm(f.Inputs[l], gStartW[l], 1, 1);
            Tensor ga = gp.baddbmm(start.Weights[l], gInput[l], 1, 1);
            if (l > 0) gPre[l - 1] = Sum(gPre[l - 1], ga * f.Slopes[l - 1]);
            else gK = gK + ga;
        }

        for (int l = 0; l < depth; l++) { gW[l] = gStartW[l]; gS[l] = gStartS[l]; }
        return new ChunkGradients(gK, gV, gAEnd!.view(-1), gDEnd!.view(-1), gNegCEnd!.squeeze(-1), gEEnd!.view(-1), gNegMEnd!.squeeze(-1),
            gLnWeight, gLnBias, gAnchor);
    }
}
