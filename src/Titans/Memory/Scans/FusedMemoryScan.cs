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
        Tensor Dense(Tensor t) => t.detach().contiguous();
        Tensor q = Dense(queries), k = Dense(keys), v = Dense(values);
        Tensor theta = Dense(gates.Theta), logDecay = Dense(gates.LogDecay), logEta = Dense(gates.LogEta);
        Tensor[] weights = state.Weights.Select(w => Dense(w.expand(batch, heads, w.shape[^2], w.shape[^1]))).ToArray();
        Tensor[] momentum = state.Momentum.Select(s => Dense(s.expand(batch, heads, s.shape[^2], s.shape[^1]))).ToArray();
        // Per-head constants, each tensor read once: W₀ [H, out, in] per layer, the LayerNorm's affine [H, d].
        T[][]? anchors = stabilizers.RetentionTarget?.Select(w => Values<T>(w.detach().expand(1, heads, w.shape[^2], w.shape[^1]))).ToArray();
        T[]? lnWeight = mlp.LnWeight is null ? null : Values<T>(mlp.LnWeight.detach());
        T[]? lnBias = mlp.LnBias is null ? null : Values<T>(mlp.LnBias.detach());
        int d0 = (int)dim;
        var forms = Enumerable.Range(0, (int)heads).Select(h => new ChainForm<T>(shapes, mlp.Activation, mlp.ResidualLayerNorm,
            anchors?.Select((a, l) =>
            {
                var (o, i) = shapes[l];
                var transposed = new T[o * i];
                SmallGemm<T>.Transpose(a.AsSpan(h * o * i, o * i), o, i, transposed);
                return transposed;
            }).ToArray(),
            lnWeight?.AsSpan(h * d0, d0).ToArray(), lnBias?.AsSpan(h * d0, d0).ToArray(), stabilizers.GradientClip, chunkSize)).ToArray();

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
        // Streams in parallel where there is enough work to share; a short call (MAC's segment) runs on this thread.
        long work = (long)streams * length * shapes.Sum(sh => (long)sh.Item1 * sh.Item2);
        int threads = work < 1 << 20 ? 1 : Math.Max(1, get_num_threads());
        var options = new ParallelOptions { MaxDegreeOfParallelism = threads };
        int nonFinite = 0;                                        // streams whose outputs or state left the finite numbers
        void Stream(int stream)
        {
            var chain = FusedChunkChain<T>.For(forms[stream % heads]);
            for (int l = 0; l < depth; l++)
            {
                int size = shapes[l].Item1 * shapes[l].Item2;
                At<T>(wp[l], (long)stream * size, size).CopyTo(chain.Weights[l]);
                At<T>(sp[l], (long)stream * size, size).CopyTo(chain.Momentum[l]);
            }
            long at = (long)stream * len * d;
            chain.Run(At<T>(qp, at, len * d), At<T>(kp, at, len * d), At<T>(vp, at, len * d),
                At<T>(tp, (long)stream * len, len), At<T>(dp, (long)stream * len, len), At<T>(ep, (long)stream * len, len),
                At<T>(op, at, len * d));
            if (!chain.Finite(At<T>(op, at, len * d))) Interlocked.Increment(ref nonFinite);
            for (int l = 0; l < depth; l++)
            {
                int size = shapes[l].Item1 * shapes[l].Item2;
                chain.Weights[l].CopyTo(At<T>(fwp[l], (long)stream * size, size));
                chain.Momentum[l].CopyTo(At<T>(fsp[l], (long)stream * size, size));
                if (bwp is null) continue;
                chain.BoundaryWeights[l].CopyTo(At<T>(bwp[l], (long)stream * size, size));
                chain.BoundaryMomentum[l].CopyTo(At<T>(bsp![l], (long)stream * size, size));
            }
        }
        if (threads == 1)
            for (int stream = 0; stream < streams; stream++) Stream(stream);
        else
            Parallel.For(0, streams, options, Stream);

        var final = new MemoryWeights(finalWeights, finalMomentum);
        // The state after the last full chunk: the start (no full chunk), the end (no partial one), or its own copy.
        MemoryWeights boundary = fullChunks == 0 ? state : closesEarly ? new MemoryWeights(boundaryWeights!, boundaryMomentum!) : final;
        scope.MoveToOuter(final.Tensors.Concat(boundaryWeights ?? []).Concat(boundaryMomentum ?? []).Append(output));
        return new MemoryScanResult(output, boundary, fullChunks * chunkSize, final) { KnownFinite = nonFinite == 0 };
    }

    internal static unsafe Span<T> At<T>(nint address, long offset, int count) where T : unmanaged => new((T*)address + offset, count);

    /// <summary>Where a dense CPU tensor's elements start (its own memory: <c>bytes</c> is a view of it, not a copy).</summary>
    internal static unsafe nint Address(Tensor t) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>A small tensor's values as an array of <typeparamref name="T"/> (per-head constants: W₀, the LayerNorm's affine).</summary>
    static unsafe T[] Values<T>(Tensor t) where T : unmanaged, IFloatingPointIeee754<T>
    {
        using var dense = t.contiguous().to(typeof(T) == typeof(float) ? ScalarType.Float32 : ScalarType.Float64);
        var values = new T[dense.numel()];
        new ReadOnlySpan<T>((void*)Address(dense), values.Length).CopyTo(values);
        return values;
    }
}
