using Titans.Runtime;
using TorchSharp;
using Titans.Layers;
using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// Pre-norm residual block: h = x + mixer(RMSNorm(x)); y = h + SwiGLU(RMSNorm(h)). The mixer is the architecture
/// (TITANS.md §4): attention (Transformer++, SWA), the neural memory (LMM), memory as context (MAC), memory as gate
/// (MAG); MAL has two residual mixers, the memory layer and then sliding-window attention.
/// </summary>
public sealed class Block : StreamingModule<BlockState>
{
    readonly Architecture architecture;
    readonly int segment;
    readonly MacWrite macWrite;
    // Field names are the checkpoint's tensor names.
    readonly RmsNorm mixer_norm, ffn_norm;
    readonly RmsNorm? memory_norm;                          // MAL: pre-norm of the memory layer
    readonly RmsNorm? attention_out_norm, memory_out_norm;  // MAG, MAC: normalization inside the gate
    readonly CausalAttention? attention;
    readonly NeuralMemory? memory;
    readonly SwiGlu ffn;

    internal CausalAttention? Attention => attention;
    internal NeuralMemory? Memory => memory;
    internal RmsNorm? MemoryOutNorm => memory_out_norm;

    /// <summary>
    /// For probes (<see cref="Experiments.MacWriteProbe"/>): MAC calls it per segment piece with the block's normed input
    /// (the piece), the memory's read h and the value written into the memory, each [B, piece, d].
    /// </summary>
    internal Action<Tensor, Tensor, Tensor>? MacObserver { get; set; }

    public Block(string name, TitansConfig config) : base(name)
    {
        architecture = config.Architecture;
        segment = config.SegmentLength;
        macWrite = config.MacWrite;
        int d = config.ModelDim;
        mixer_norm = new RmsNorm("mixer_norm", d);
        ffn_norm = new RmsNorm("ffn_norm", d);
        if (config.UsesAttention)
            attention = new CausalAttention("attention", d, config.Heads, config.UsesWindow ? config.Window : null,
                config.UsesPersistentMemory ? config.PersistentTokens : 0);
        if (config.UsesMemory) memory = new NeuralMemory("memory", config.MemoryConfig);
        if (architecture == Architecture.Mal) memory_norm = new RmsNorm("memory_norm", d);
        if (architecture is Architecture.Mac or Architecture.Mag) memory_out_norm = new RmsNorm("memory_out_norm", d);
        if (architecture == Architecture.Mag) attention_out_norm = new RmsNorm("attention_out_norm", d);
        ffn = new SwiGlu("ffn", d, config.FeedForwardWidth);
        RegisterComponents();
    }

    public override (Tensor Output, BlockState State) Forward(Tensor x, BlockState? state)
    {
        // Training with recomputation (the memory's RecomputeGroup): the block streams over groups of tokens, each group
        // one recomputed autograd node, so autograd keeps the block's state at group boundaries only (streaming in pieces
        // equals one pass, so the values are the same). Groups end on the memory's chunk boundaries (MAC: on segment
        // boundaries), so no memory call spans two groups.
        if (memory is null || memory.Config.RecomputeGroup == 0 || !is_grad_enabled()) return ForwardPiece(x, state);
        long groupTokens = (long)memory.Config.RecomputeGroup * memory.Config.ChunkSize;
        if (architecture == Architecture.Mac) groupTokens = Math.Max(1, groupTokens / segment) * segment;
        if (x.shape[1] <= groupTokens) return ForwardPiece(x, state);
        long position = state?.Memory?.Position
                        ?? (architecture is Architecture.Mag or Architecture.Mal ? attention!.PersistentMemory?.shape[0] ?? 0 : 0);
        var sizes = new List<long>();
        for (long done = 0; done < x.shape[1]; done += sizes[^1])
            sizes.Add(Math.Min(groupTokens - (position + done) % groupTokens, x.shape[1] - done));
        Tensor[] pieces = x.split(sizes.ToArray(), 1);   // one split, so x's gradient is assembled once (not a narrow per group)
        var outputs = new List<Tensor>();
        BlockState? current = state;
        var parameters = this.parameters().ToArray();
        foreach (Tensor piece in pieces)
        {
            BlockState? given = current, produced = null;
            Tensor[] Group(Tensor[] inputs)
            {
                var (output, next) = ForwardPiece(inputs[0], given?.WithTensors(inputs.Skip(1)));
                produced = next;   // the structure of the outputs, the same on recomputation
                return next.Tensors.Prepend(output).ToArray();
            }
            Tensor[] result = Recomputation.Apply(Group, (given?.Tensors ?? []).Prepend(piece).ToArray(), parameters);
            outputs.Add(result[0]);
            current = produced!.WithTensors(result.Skip(1));
        }
        return (cat(outputs, 1), current!);
    }

    (Tensor Output, BlockState State) ForwardPiece(Tensor x, BlockState? state)
    {
        Tensor h;
        BlockState next;
        switch (architecture)
        {
            case Architecture.TransformerPlusPlus or Architecture.SlidingWindow:
            {
                var (mixed, cache) = attention!.Forward(mixer_norm.forward(x), state?.Attention);
                (h, next) = (x + mixed, new BlockState(cache, null));
                break;
            }
            case Architecture.Lmm:
            {
                var (mixed, memoryState) = memory!.Forward(mixer_norm.forward(x), state?.Memory);
                (h, next) = (x + mixed, new BlockState(null, memoryState));
                break;
            }
            case Architecture.Mac:
            {
                (Tensor mixed, next) = MemoryAsContext(mixer_norm.forward(x), state);
                h = x + mixed;
                break;
            }
            case Architecture.Mag:
            {
                Tensor normed = mixer_norm.forward(x);
                var (attended, cache) = attention!.Forward(normed, state?.Attention);
                var (remembered, memoryState) = memory!.Forward(normed, state?.Memory ?? PersistentPrefix(normed));
                Tensor gated = attention_out_norm!.forward(attended) * memory_out_norm!.forward(remembered).sigmoid();
                (h, next) = (x + gated, new BlockState(cache, memoryState));
                break;
            }
            case Architecture.Mal:
            {
                Tensor normed = memory_norm!.forward(x);
                var (remembered, memoryState) = memory!.Forward(normed, state?.Memory ?? PersistentPrefix(normed));
                Tensor afterMemory = x + remembered;
                var (attended, cache) = attention!.Forward(mixer_norm.forward(afterMemory), state?.Attention);
                (h, next) = (afterMemory + attended, new BlockState(cache, memoryState));
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(architecture), $"Architecture {architecture} has no block.");
        }
        return (h + ffn.forward(ffn_norm.forward(h)), next);
    }

    /// <summary>
    /// MAG and MAL run the memory over [p ‖ x] (§4.2, §4.3): at a sequence start it first reads the persistent memory
    /// tokens (their outputs are not used), so every sequence starts from W_0 updated on p. Null without persistent memory.
    /// </summary>
    NeuralMemoryState? PersistentPrefix(Tensor like) => PersistentPrefix(like.shape[0], like.dtype);

    NeuralMemoryState? PersistentPrefix(long batch, ScalarType dtype)
    {
        if (attention!.PersistentMemory is not Tensor p) return null;
        var (_, state) = memory!.Forward(p.to(dtype).unsqueeze(0).expand(batch, -1, -1), null);
        return state;
    }

    /// <summary>
    /// <paramref name="state"/>, reached without gradient, with its memory tied to the gradient path of the state a stream
    /// starts from (<see cref="NeuralMemory.WithGradientToStart"/>); MAC's segment read is tied the same way. Blocks
    /// without memory return their state with handles of their own.
    /// </summary>
    internal BlockState WithGradientToStart(BlockState state)
    {
        var attentionCache = state.Attention is null ? null : state.Attention with { Keys = state.Attention.Keys.alias(), Values = state.Attention.Values.alias() };
        if (memory is null || state.Memory is null)
            return new BlockState(attentionCache, null, state.SegmentMemory?.Select(w => w.alias()).ToArray(), state.ReadConvCache?.alias());
        Tensor like = state.Memory.Memory.Weights[0];
        using var scope = torch.NewDisposeScope();
        NeuralMemoryState start = (architecture is Architecture.Mag or Architecture.Mal ? PersistentPrefix(like.shape[0], like.dtype) : null)
                                  ?? memory.InitialState(like.shape[0], like.dtype, like.device);
        var next = new BlockState(attentionCache, NeuralMemory.WithGradientToStart(state.Memory, start),
            state.SegmentMemory is null ? null : NeuralMemory.LinkToStart(state.SegmentMemory, start.Memory.Weights),
            state.ReadConvCache?.alias());
        scope.MoveToOuter(next.Tensors);
        return next;
    }

    /// <summary>
    /// MAC (§4.1), segment by segment (segments are aligned to absolute positions, so a piece may start or end inside
    /// one): (1) h = M*_{t−1}(q), a read of the memory as it was when the segment began; (2) attention over
    /// [persistent ‖ h ‖ segment], where query i sees h_j and s_j for j ≤ i; (3) y = the attention output; (4) the
    /// memory is updated with ŷ = y / rms(y) (keys and values from it; <see cref="MacWrite.SegmentInput"/> writes the
    /// segment's own tokens instead); (5) o = y ⊙ σ(norm(M_t(ŷ))), the read of the updated memory.
    /// Step 5 reads token i with the memory written up to token i (the memory's own causal read), since the memory
    /// at the segment's end would show token i the segment's later tokens.
    /// </summary>
    internal (Tensor Output, BlockState State) MemoryAsContext(Tensor x, BlockState? state)
    {
        long length = x.shape[1];
        NeuralMemoryState memoryState = state?.Memory ?? memory!.InitialState(x.shape[0], x.dtype, x.device);
        IReadOnlyList<Tensor> segmentMemory = state?.SegmentMemory ?? memoryState.Memory.Weights;
        AttentionCache? cache = state?.Attention;
        Tensor? readConv = state?.ReadConvCache;
        long position = memoryState.Position;
        var outputs = new List<Tensor>();
        for (long done = 0; done < length;)
        {
            long size = Math.Min(segment - position % segment, length - done);
            Tensor piece = x.narrow(1, done, size);
            (Tensor read, readConv) = memory!.Read(piece, segmentMemory, readConv);
            (Tensor attended, cache) = attention!.Forward(piece, read, cache);
            // The attention output is not normalized; written raw, its scale drives the inner loop's steps and the outer
            // gradients explode (SOTU, tiny: |g| up to 8e5, then divergence). A learned scale let that scale grow back
            // (|g| median 34 by step 800), so the write is normalized without one. The segment input is normalized already.
            Tensor written = macWrite == MacWrite.SegmentInput ? piece : RmsNorm.Normalize(attended);
            MacObserver?.Invoke(piece, read, written);
            (Tensor remembered, memoryState) = memory.Forward(written, memoryState);
            outputs.Add(attended * memory_out_norm!.forward(remembered).sigmoid());
            done += size;
            position += size;
            if (position % segment == 0)
            {
                // The segment is over: its attention context is dropped and the next segment reads what it wrote.
                cache = null;
                segmentMemory = memoryState.Memory.Weights;
            }
        }
        // Tensors carried over unchanged from the caller's state get handles of their own, so either can be disposed.
        var own = OwnedApartFrom(state?.Tensors);
        var next = new BlockState(
            cache is null ? null : cache with { Keys = own(cache.Keys), Values = own(cache.Values) },
            memoryState,
            // At a segment's end these are the memory state's own weights, which need handles of their own too.
            segmentMemory.Select(w => memoryState.Memory.Weights.Any(m => ReferenceEquals(m, w)) ? w.alias() : own(w)).ToArray(),
            readConv is null ? null : own(readConv));
        return (cat(outputs, 1), next);
    }
}
