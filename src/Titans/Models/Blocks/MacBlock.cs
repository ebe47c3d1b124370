using Titans.Layers;
using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// MAC (docs/method.md §4.1), segment by segment: read the memory as it was before the segment; attend over [persistent ‖ read ‖
/// segment]; write the attention output (divided by its RMS) into the memory; gate the attention output with
/// σ(RMSNorm(read of the updated memory)). Its state is a <see cref="MacBlockState"/>.
/// </summary>
public sealed class MacBlock : Block
{
    readonly int segment;
    readonly MacWrite macWrite;
    readonly RmsNorm memory_out_norm;
    readonly CausalAttention attention;
    readonly NeuralMemory memory;

    public MacBlock(string name, TitansConfig config) : base(name, config)
    {
        segment = config.SegmentLength;
        macWrite = config.MacWrite;
        attention = new CausalAttention("attention", config.ModelDim, config.Heads, null, config.PersistentTokens);
        memory = new NeuralMemory("memory", config.Memory);
        memory_out_norm = new RmsNorm("memory_out_norm", config.ModelDim);
        Register(config, ("memory_out_norm", memory_out_norm), ("attention", attention), ("memory", memory));
    }

    internal override CausalAttention Attention => attention;
    internal override NeuralMemory Memory => memory;
    internal RmsNorm MemoryOutNorm => memory_out_norm;

    /// <summary>
    /// For probes (<see cref="Experiments.MacWriteProbe"/>): called per segment piece with the block's normed input
    /// (the piece), the memory's read h and the value written into the memory, each [B, piece, d].
    /// </summary>
    internal Action<Tensor, Tensor, Tensor>? Observer { get; set; }

    /// <summary>Recomputed groups end on segment boundaries, so each segment's reads and write stay in one group.</summary>
    internal override long AlignedGroupTokens(long tokens) => Math.Max(1, tokens / segment) * segment;

    protected override (Tensor Output, BlockState State) Mix(Tensor x, BlockState? state)
    {
        var (mixed, next) = MemoryAsContext(mixer_norm.forward(x), StateOf<MacBlockState>(state));
        return (x + mixed, next);
    }

    /// <summary>
    /// Segments are aligned to absolute positions, so a piece may start or end inside one: (1) h = M*_{t−1}(q), a read
    /// of the memory as it was when the segment began; (2) attention over [persistent ‖ h ‖ segment], where query i sees
    /// h_j and s_j for j ≤ i; (3) y = the attention output; (4) the memory is updated with ŷ = y / rms(y) (keys and
    /// values from it; <see cref="MacWrite.SegmentInput"/> writes the segment's own tokens instead); (5) o = y ⊙
    /// σ(norm(M_t(ŷ))), the read of the updated memory. Step 5 reads token i with the memory written up to token i (the
    /// memory's own causal read), since the memory at the segment's end would show token i the segment's later tokens.
    /// <para>
    /// Only the chain from one segment's write to the next segment's read runs segment by segment: the read's queries and
    /// output gate, attention's queries, keys and values and the persistent memory's are computed for the whole call
    /// first, and step 5's read-out for the whole call last. <see cref="MemoryAsContextBySegment"/> is the same
    /// function step by step, the reference the tests hold this to.
    /// </para>
    /// </summary>
    internal (Tensor Output, MacBlockState State) MemoryAsContext(Tensor x, MacBlockState? state)
    {
        long batch = x.shape[0], length = x.shape[1];
        NeuralMemoryState memoryState = state?.Memory ?? memory.InitialState(batch, x.dtype, x.device);
        IReadOnlyList<Tensor> segmentMemory = state?.SegmentMemory ?? memoryState.Memory.Weights;
        AttentionCache? cache = state?.Attention;
        long position = memoryState.Position;

        var (readQueries, readConv) = memory.ProjectQueries(x, state?.ReadConvCache);
        Tensor? readGate = memory.OutputGateOf(x);
        var (cos, sin) = SegmentRotary(position % segment, length, x);
        var (queries, keys, values) = attention.Project(x, cos, sin);
        var persistent = attention.Persistent(batch, x.dtype);

        var attendedPieces = new List<Tensor>();
        var writtenPieces = new List<Tensor>();
        var retrievedPieces = new List<Tensor>();
        for (long done = 0; done < length;)
        {
            long size = Math.Min(segment - position % segment, length - done);
            Tensor Piece(Tensor t, int dim) => t.narrow(dim, done, size);
            Tensor read = memory.ReadOutGated(memory.Mlp.Forward(segmentMemory, Piece(readQueries, 2)), readGate is null ? null : Piece(readGate, 1));
            var (attended, cachedKeys, cachedValues) = attention.Attend(Piece(queries, 2), Piece(keys, 2), Piece(values, 2), read, cache,
                persistent, Piece(cos, 0), Piece(sin, 0));
            Tensor written = Written(Piece(x, 1), attended);
            Observer?.Invoke(Piece(x, 1), read, written);
            (Tensor retrieved, memoryState) = memory.Write(written, memoryState);
            attendedPieces.Add(attended);
            writtenPieces.Add(written);
            retrievedPieces.Add(retrieved);
            done += size;
            position += size;
            cache = new AttentionCache(cachedKeys, cachedValues, position % segment);
            if (position % segment == 0)
            {
                // The segment is over: its attention context is dropped and the next segment reads what it wrote.
                cache = null;
                segmentMemory = memoryState.Memory.Weights;
            }
        }
        Tensor remembered = memory.ReadOut(cat(retrievedPieces, 2), cat(writtenPieces, 1));
        return (cat(attendedPieces, 1) * memory_out_norm.forward(remembered).sigmoid(), NextState(state, cache, memoryState, segmentMemory, readConv));
    }

    /// <summary><see cref="MemoryAsContext"/> one segment piece at a time, each step through the modules' own forward: the reference.</summary>
    internal (Tensor Output, MacBlockState State) MemoryAsContextBySegment(Tensor x, MacBlockState? state)
    {
        long length = x.shape[1];
        NeuralMemoryState memoryState = state?.Memory ?? memory.InitialState(x.shape[0], x.dtype, x.device);
        IReadOnlyList<Tensor> segmentMemory = state?.SegmentMemory ?? memoryState.Memory.Weights;
        AttentionCache? cache = state?.Attention;
        Tensor? readConv = state?.ReadConvCache;
        long position = memoryState.Position;
        var outputs = new List<Tensor>();
        for (long done = 0; done < length;)
        {
            long size = Math.Min(segment - position % segment, length - done);
            Tensor piece = x.narrow(1, done, size);
            (Tensor read, readConv) = memory.Read(piece, segmentMemory, readConv);
            (Tensor attended, cache) = attention.Forward(piece, read, cache);
            Tensor written = Written(piece, attended);
            Observer?.Invoke(piece, read, written);
            (Tensor remembered, memoryState) = memory.Forward(written, memoryState);
            outputs.Add(attended * memory_out_norm.forward(remembered).sigmoid());
            done += size;
            position += size;
            if (position % segment == 0)
            {
                cache = null;
                segmentMemory = memoryState.Memory.Weights;
            }
        }
        return (cat(outputs, 1), NextState(state, cache, memoryState, segmentMemory, readConv));
    }

    /// <summary>
    /// What the memory is written with: the attention output divided by its RMS. Written raw, its scale drives the inner
    /// loop's steps and the outer gradients explode (SOTU, tiny: |g| up to 8e5, then divergence); a learned scale let that
    /// scale grow back (|g| median 34 by step 800), so it is normalized without one. The segment input is normalized already.
    /// </summary>
    Tensor Written(Tensor piece, Tensor attended) => macWrite == MacWrite.SegmentInput ? piece : RmsNorm.Normalize(attended);

    /// <summary>
    /// cos and sin of the rotary angles for a call's tokens, [length, d_h]: positions within their segment, from
    /// <paramref name="offset"/> on and back to 0 at each segment boundary (the attention context restarts there).
    /// </summary>
    (Tensor Cos, Tensor Sin) SegmentRotary(long offset, long length, Tensor like)
    {
        var (cos, sin) = attention.RotaryTables(0, segment, like.dtype, like.device);
        if (offset + length <= segment) return (cos.narrow(0, offset, length), sin.narrow(0, offset, length));
        using Tensor positions = arange(offset, offset + length, dtype: ScalarType.Int64, device: like.device).remainder(segment);
        return (cos.index_select(0, positions), sin.index_select(0, positions));
    }

    MacBlockState NextState(MacBlockState? state, AttentionCache? cache, NeuralMemoryState memoryState, IReadOnlyList<Tensor> segmentMemory, Tensor? readConv)
    {
        // Tensors carried over unchanged from the caller's state get handles of their own, so either can be disposed.
        var own = OwnedApartFrom(state?.Tensors);
        return new MacBlockState(
            cache is null ? null : cache with { Keys = own(cache.Keys), Values = own(cache.Values) },
            memoryState,
            // At a segment's end these are the memory state's own weights, which need handles of their own too.
            segmentMemory.Select(w => memoryState.Memory.Weights.Any(m => ReferenceEquals(m, w)) ? w.alias() : own(w)).ToArray(),
            readConv is null ? null : own(readConv));
    }

    internal override BlockState WithGradientToStart(BlockState state) =>
        TiedToStart<MacBlockState>(state, (given, start) => new MacBlockState(OwnCopy(given.Attention), NeuralMemory.WithGradientToStart(given.Memory, start),
            NeuralMemory.LinkToStart(given.SegmentMemory, start.Memory.Weights), given.ReadConvCache?.alias()));
}
