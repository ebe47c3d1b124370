using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>
/// The memory's chunk chain as one C# kernel call on the CPU (<see cref="FusedChunkChain{T}"/>), without autograd: the
/// same function as <see cref="ChunkedMemoryScan"/>, its oracle, which makes 100–250 libtorch calls per chunk where this
/// makes none. Streams (batch elements × heads) run in parallel on the tensors' own memory, each in a fixed order, so
/// results do not depend on the thread count. Covers scalar gates with every stabilizer but the fixed norm, float32 and
/// float64 (<see cref="Unsupported"/>).
/// </summary>
public static class FusedMemoryScan
{
    /// <summary>Why the kernel cannot run a call of this form, or null when it can.</summary>
    public static string? Unsupported(NeuralMemoryConfig config, DeviceType device, ScalarType dtype) =>
        device != DeviceType.CPU ? $"the kernel runs on the CPU, not {device}"
        : dtype is not (ScalarType.Float32 or ScalarType.Float64) ? $"the kernel computes in float32 or float64, not {dtype}"
        : config.ChannelwiseForgetting ? "the kernel does not cover channel-wise forgetting"
        : config.FixedNorm != FastWeightNorm.None ? "the kernel does not cover the fixed-norm stabilizer"
        : null;

    /// <param name="queries">[B, H, T, d_h]</param>
    /// <param name="keys">[B, H, T, d_h]</param>
    /// <param name="values">[B, H, T, d_h]</param>
    /// <param name="gates">per token, [B, H, T]; scalar forgetting only</param>
    /// <param name="state">[B, H, out, in] per layer (or broadcastable to it)</param>
    public static MemoryScanResult Scan(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, MemoryStabilizers? stabilizers = null)
    {
        stabilizers ??= MemoryStabilizers.None;
        if (gates.ChannelLogDecay is not null || stabilizers.NormTarget is not null)
            throw new ArgumentException("The fused memory kernel covers scalar forgetting without the fixed-norm stabilizer.");
        long length = keys.shape[2];
        if (length == 0) return new MemoryScanResult(queries.narrow(2, 0, 0), state, 0, state);
        return keys.dtype switch
        {
            ScalarType.Float32 => Run<float>(mlp, queries, keys, values, gates, state, chunkSize, stabilizers),
            ScalarType.Float64 => Run<double>(mlp, queries, keys, values, gates, state, chunkSize, stabilizers),
            _ => throw new ArgumentException($"The fused memory kernel computes in float32 or float64, not {keys.dtype}."),
        };
    }

    static unsafe MemoryScanResult Run<T>(MemoryMlp mlp, Tensor queries, Tensor keys, Tensor values, MemoryGates gates,
        MemoryWeights state, int chunkSize, MemoryStabilizers stabilizers) where T : unmanaged, IFloatingPointIeee754<T>
    {
        long batch = keys.shape[0], heads = keys.shape[1], length = keys.shape[2], dim = keys.shape[3];
        int streams = checked((int)(batch * heads)), depth = state.Depth;
        var shapes = state.Weights.Select(w => ((int)w.shape[^2], (int)w.shape[^1])).ToArray();
        long fullChunks = length / chunkSize;
        using var scope = NewDisposeScope();
        Tensor Dense(Tensor t) => FusedMemoryScan.Dense(t, keys.dtype);
        Tensor q = Dense(queries), k = Dense(keys), v = Dense(values);
        Tensor theta = Dense(gates.Theta), logDecay = Dense(gates.LogDecay), logEta = Dense(gates.LogEta);
        Tensor[] weights = state.Weights.Select(w => Dense(w.expand(batch, heads, w.shape[^2], w.shape[^1]))).ToArray();
        Tensor[] momentum = state.Momentum.Select(s => Dense(s.expand(batch, heads, s.shape[^2], s.shape[^1]))).ToArray();
        // Per-head constants, each tensor read once: W₀ [H, out, in] per layer, the LayerNorm's affine [H, d].
        T[][]? anchors = stabilizers.RetentionTarget?.Select(w => Values<T>(w.detach().expand(1, heads, w.shape[^2], w.shape[^1]))).ToArray();
        T[]? lnWeight = mlp.LnWeight is null ? null : Values<T>(mlp.LnWeight.detach());
        T[]? lnBias = mlp.LnBias is null ? null : Values<T>(mlp.LnBias.detach());
        var forms = Enumerable.Range(0, (int)heads)
            .Select(h => ChainForm<T>.Slice(h, shapes, mlp, anchors, lnWeight, lnBias, stabilizers.GradientClip, chunkSize)).ToArray();

        Tensor output = empty(batch, heads, length, dim, dtype: keys.dtype);
        Tensor[] finalWeights = weights.Select(w => empty_like(w)).ToArray(), finalMomentum = momentum.Select(s => empty_like(s)).ToArray();
        bool closesEarly = length % chunkSize != 0 && fullChunks > 0;
        Tensor[]? boundaryWeights = closesEarly ? weights.Select(w => empty_like(w)).ToArray() : null;
        Tensor[]? boundaryMomentum = closesEarly ? momentum.Select(s => empty_like(s)).ToArray() : null;

        // Addresses, not pointers, cross into the parallel body (a lambda cannot capture a pointer).
        nint qp = Address(q), kp = Address(k), vp = Address(v), tp = Address(theta), dp = Address(logDecay), ep = Address(logEta);
        nint op = Address(output);
        nint[] wp = weights.Select(Address).ToArray(), sp = momentum.Select(Address).ToArray();
        nint[] fwp = finalWeights.Select(Address).ToArray(), fsp = finalMomentum.Select(Address).ToArray();
        nint[]? bwp = boundaryWeights?.Select(Address).ToArray(), bsp = boundaryMomentum?.Select(Address).ToArray();
        int len = (int)length, d = (int)dim;
        int nonFinite = 0;                                        // streams whose outputs or state left the finite numbers
        void Stream(int stream)
        {
            var chain = FusedChunkChain<T>.For(forms[stream % heads]);
            for (int l = 0; l < depth; l++)
            {
                int size = shapes[l].Item1 * shapes[l].Item2;
                chain.LoadState(l, At<T>(wp[l], (long)stream * size, size), At<T>(sp[l], (long)stream * size, size));
            }
            long at = (long)stream * len * d;
            chain.Run(At<T>(qp, at, len * d), At<T>(kp, at, len * d), At<T>(vp, at, len * d),
                At<T>(tp, (long)stream * len, len), At<T>(dp, (long)stream * len, len), At<T>(ep, (long)stream * len, len),
                At<T>(op, at, len * d));
            if (!chain.Finite(At<T>(op, at, len * d))) Interlocked.Increment(ref nonFinite);
            Untranspose(chain.WeightsT, shapes, stream, fwp);
            Untranspose(chain.MomentumT, shapes, stream, fsp);
            if (bwp is null) return;
            Untranspose(chain.BoundaryWeightsT, shapes, stream, bwp);
            Untranspose(chain.BoundaryMomentumT, shapes, stream, bsp!);
        }
        ForStreams(streams, length, shapes, Stream);

        var final = new MemoryWeights(finalWeights, finalMomentum);
        // The state after the last full chunk: the start (no full chunk), the end (no partial one), or its own copy.
        MemoryWeights boundary = fullChunks == 0 ? state : closesEarly ? new MemoryWeights(boundaryWeights!, boundaryMomentum!) : final;
        scope.MoveToOuter(final.Tensors.Concat(boundaryWeights ?? []).Concat(boundaryMomentum ?? []).Append(output));
        return new MemoryScanResult(output, boundary, fullChunks * chunkSize, final) { KnownFinite = nonFinite == 0 };
    }

    /// <summary>
    /// Runs <paramref name="stream"/> for every stream, in parallel where there is enough work to share (streams × tokens
    /// × state size ≥ 2²⁰); a short call, such as MAC's segment, runs on this thread.
    /// </summary>
    internal static void ForStreams(int streams, long tokens, IEnumerable<(int Out, int In)> shapes, Action<int> stream)
    {
        long work = streams * tokens * shapes.Sum(s => (long)s.Out * s.In);
        int threads = work < 1 << 20 ? 1 : Math.Max(1, get_num_threads());
        if (threads == 1)
            for (int s = 0; s < streams; s++) stream(s);
        else
            Parallel.For(0, streams, new ParallelOptions { MaxDegreeOfParallelism = threads }, stream);
    }

    /// <summary>Per-layer matrices the kernel holds transposed ([in, out]) into stream s of [streams, out, in] tensors.</summary>
    internal static void Untranspose<T>(T[][] source, IReadOnlyList<(int Out, int In)> shapes, int s, nint[] target)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int l = 0; l < shapes.Count; l++)
        {
            var (o, i) = shapes[l];
            SmallGemm<T>.Transpose(source[l], i, o, At<T>(target[l], (long)s * o * i, o * i));
        }
    }

    internal static unsafe Span<T> At<T>(nint address, long offset, int count) where T : unmanaged => new((T*)address + offset, count);

    /// <summary>Where a dense CPU tensor's elements start (its own memory: <c>bytes</c> is a view of it, not a copy).</summary>
    internal static unsafe nint Address(Tensor t) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>A small tensor's values as an array of <typeparamref name="T"/> (per-head constants: W₀, the LayerNorm's affine).</summary>
    internal static unsafe T[] Values<T>(Tensor t) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var scope = NewDisposeScope();
        Tensor dense = Dense(t, typeof(T) == typeof(float) ? ScalarType.Float32 : ScalarType.Float64);
        return new ReadOnlySpan<T>((void*)Address(dense), (int)dense.numel()).ToArray();
    }

    /// <summary>
    /// <paramref name="t"/> itself where it is dense and of <paramref name="dtype"/>, so that a kernel reads it in place (the
    /// kernels never write their inputs); otherwise a dense copy of that type, in the current dispose scope.
    /// </summary>
    internal static Tensor Dense(Tensor t, ScalarType dtype) => t.dtype == dtype && t.is_contiguous() ? t : t.detach().to(dtype).contiguous();
}
