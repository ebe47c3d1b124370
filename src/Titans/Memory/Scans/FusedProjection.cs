using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static TorchSharp.torch;

namespace Titans.Memory.Scans;

/// <summary>
/// The memory's input path (<see cref="NeuralMemory.Project"/>) as one C# call, without autograd: q, k, v = SiLU(conv(x W))
/// per head with q and k L2-normalized, and the gates θ, log η, log(1 − α) per token and head. The same function as the
/// libtorch path, its oracle, which makes about 25 calls for it (three projections, the short convolution's shifted
/// multiply-adds, SiLU, two normalizations, the gate projection and its sigmoids), each doing little arithmetic on a
/// MAC segment's 32 tokens: MAC streams 1.15× faster with this, LMM's 128-token calls tie (docs/fast-memory/fused-projection.md).
/// Scalar forgetting only.
/// </summary>
internal static class FusedProjection
{
    /// <summary>The parameters of the input path, as the module holds them.</summary>
    /// <param name="Projections">q, k, v weights, [H·d_h, d] each</param>
    /// <param name="Convolution">[K, 3·H·d_h] (tap K−1 multiplies the newest input), or null without convolution</param>
    /// <param name="GateProjection">[3H, d], or null where the gates are fixed</param>
    /// <param name="GateBias">[3H]: θ, η, α logits per head</param>
    public sealed record Weights(Tensor[] Projections, Tensor? Convolution, Tensor? GateProjection, Tensor GateBias);

    /// <summary>x: [B, T, d]; cache: [B, K−1, 3·H·d_h] (the previous inputs of the convolution) or null for a sequence start.</summary>
    public static MemoryInputs Project(NeuralMemoryConfig config, Weights weights, Tensor x, Tensor? cache) => x.dtype switch
    {
        ScalarType.Float32 => Run<float>(config, weights, x, cache),
        ScalarType.Float64 => Run<double>(config, weights, x, cache),
        _ => throw new ArgumentException($"The fused projection computes in float32 or float64, not {x.dtype}."),
    };

    static MemoryInputs Run<T>(NeuralMemoryConfig config, Weights weights, Tensor x, Tensor? cache) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int batch = (int)x.shape[0], length = (int)x.shape[1], d = (int)x.shape[2];
        int h = config.Heads, dh = config.HeadDim, inner = h * dh, channels = 3 * inner, gates = 3 * h;
        int kernel = weights.Convolution is null ? 1 : (int)weights.Convolution.shape[0], past = kernel - 1;
        using var scope = NewDisposeScope();
        // Parameters are read where they lie (dense, of x's dtype); anything else through a dense copy.
        nint Dense(Tensor t) => FusedMemoryScan.Address(FusedMemoryScan.Dense(t, x.dtype));
        nint[] projections = weights.Projections.Select(Dense).ToArray();
        nint? taps = weights.Convolution is null ? null : Dense(weights.Convolution);
        nint? gateProjection = weights.GateProjection is null ? null : Dense(weights.GateProjection);
        var bias = FusedMemoryScan.At<T>(Dense(weights.GateBias), 0, gates);

        nint xp = Dense(x);
        Tensor q = empty(batch, h, length, dh, dtype: x.dtype), k = empty(batch, h, length, dh, dtype: x.dtype), v = empty(batch, h, length, dh, dtype: x.dtype);
        Tensor theta = empty(batch, h, length, dtype: x.dtype), logEta = empty(batch, h, length, dtype: x.dtype), logDecay = empty(batch, h, length, dtype: x.dtype);
        Tensor? newCache = taps is null ? null : empty(batch, past, channels, dtype: x.dtype);
        nint? oldCache = taps is null || cache is null ? null : Dense(cache);
        nint[] targets = { FusedMemoryScan.Address(q), FusedMemoryScan.Address(k), FusedMemoryScan.Address(v) };
        nint tp = FusedMemoryScan.Address(theta), ep = FusedMemoryScan.Address(logEta), dp = FusedMemoryScan.Address(logDecay);
        nint? np = newCache is null ? null : FusedMemoryScan.Address(newCache);

        var buffers = Buffers<T>.For(past + length, inner, length, gates);
        T maxRate = T.CreateTruncating(config.MaxInnerLearningRate), tiny = T.CreateTruncating(1e-12);
        for (int b = 0; b < batch; b++)
        {
            var xb = FusedMemoryScan.At<T>(xp, (long)b * length * d, length * d);
            for (int part = 0; part < 3; part++)
            {
                // The convolution's input for this part's channels: its cached rows, then this call's projections.
                var raw = buffers.Raw.AsSpan(0, (past + length) * inner);
                SmallGemm<T>.MultiplyTransposed(xb, length, d, FusedMemoryScan.At<T>(projections[part], 0, inner * d), inner, raw[(past * inner)..], accumulate: false);
                var mixed = buffers.Mixed.AsSpan(0, length * inner);
                if (taps is { } tap)
                {
                    for (int r = 0; r < past; r++)
                    {
                        var row = raw.Slice(r * inner, inner);
                        if (oldCache is { } c) FusedMemoryScan.At<T>(c, ((long)b * past + r) * channels + part * inner, inner).CopyTo(row);
                        else row.Clear();
                    }
                    var all = FusedMemoryScan.At<T>(tap, 0, kernel * channels);
                    for (int t = 0; t < length; t++)
                    {
                        // out_t = Σ_j in_{t+j} ⊙ w_j, tap 0 first, as the libtorch path sums.
                        var output = mixed.Slice(t * inner, inner);
                        SpanMath.Multiply(raw.Slice(t * inner, inner), all.Slice(part * inner, inner), output);
                        for (int j = 1; j < kernel; j++)
                            SpanMath.MultiplyAdd(raw.Slice((t + j) * inner, inner), all.Slice(j * channels + part * inner, inner), output, output);
                    }
                    for (int r = 0; r < past; r++)
                        raw.Slice((length + r) * inner, inner).CopyTo(FusedMemoryScan.At<T>(np!.Value, ((long)b * past + r) * channels + part * inner, inner));
                }
                else
                    raw.CopyTo(mixed);
                Silu(mixed);
                // [T, H, d_h] → [H, T, d_h]; q and k divided by max(‖·‖, 10⁻¹²), as libtorch's normalize.
                for (int head = 0; head < h; head++)
                {
                    var rows = FusedMemoryScan.At<T>(targets[part], ((long)b * h + head) * length * dh, length * dh);
                    for (int t = 0; t < length; t++)
                    {
                        var source = mixed.Slice(t * inner + head * dh, dh);
                        var row = rows.Slice(t * dh, dh);
                        if (part == 2) source.CopyTo(row);
                        else SpanMath.Multiply(source, T.One / T.Max(T.Sqrt(SpanMath.Dot<T>(source, source)), tiny), row);
                    }
                }
            }
            // Gates: logits = x W_gᵀ + bias (the bias alone where the gates are fixed).
            var logits = buffers.Logits.AsSpan(0, length * gates);
            if (gateProjection is { } g) SmallGemm<T>.MultiplyTransposed(xb, length, d, FusedMemoryScan.At<T>(g, 0, gates * d), gates, logits, accumulate: false);
            else logits.Clear();
            for (int head = 0; head < h; head++)
            {
                long at = ((long)b * h + head) * length;
                Span<T> rates = FusedMemoryScan.At<T>(tp, at, length), etas = FusedMemoryScan.At<T>(ep, at, length), decays = FusedMemoryScan.At<T>(dp, at, length);
                for (int t = 0; t < length; t++)
                {
                    rates[t] = Sigmoid(logits[t * gates + head] + bias[head]) * maxRate;
                    etas[t] = config.Momentum ? LogSigmoid(logits[t * gates + h + head] + bias[h + head]) : T.NegativeInfinity;
                    decays[t] = config.Forgetting ? LogSigmoid(-(logits[t * gates + 2 * h + head] + bias[2 * h + head])) : T.Zero;
                }
            }
        }
        var inputs = new MemoryInputs(q, k, v, new MemoryGates(theta, logDecay, logEta), newCache);
        scope.MoveToOuter(new[] { q, k, v, theta, logDecay, logEta }.Concat(newCache is null ? [] : [newCache]));
        return inputs;
    }

    /// <summary>This thread's scratch rows, grown as calls need (the projection allocates nothing per call but its outputs).</summary>
    sealed class Buffers<T>
    {
        [ThreadStatic] static Buffers<T>? current;
        public T[] Raw = [], Mixed = [], Logits = [];

        public static Buffers<T> For(int rows, int width, int length, int gates)
        {
            var buffers = current ??= new Buffers<T>();
            if (buffers.Raw.Length < rows * width) buffers.Raw = new T[rows * width];
            if (buffers.Mixed.Length < length * width) buffers.Mixed = new T[length * width];
            if (buffers.Logits.Length < length * gates) buffers.Logits = new T[length * gates];
            return buffers;
        }
    }

    /// <summary>σ(x) = 1 / (1 + e^−x), in the element type's own precision (float32 by MathF, as libtorch computes it).</summary>
    static T Sigmoid<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.One / (T.One + T.Exp(-x));

    /// <summary>log σ(x) = min(x, 0) − log(1 + e^−|x|), exact and finite (libtorch's formula).</summary>
    static T LogSigmoid<T>(T x) where T : unmanaged, IFloatingPointIeee754<T> => T.Min(x, T.Zero) - T.LogP1(T.Exp(-T.Abs(x)));

    /// <summary>x ⊙ σ(x) in place: x / (1 + e^−x), float32 in Vector256 lanes (<see cref="Float32Lanes"/>), float64 by Math.Exp.</summary>
    static void Silu<T>(Span<T> values) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (typeof(T) == typeof(float))
        {
            var floats = MemoryMarshal.Cast<T, float>(values);
            Float32Lanes.Map<SiluPass>(floats, floats);
            return;
        }
        for (int i = 0; i < values.Length; i++)
        {
            double z = double.CreateTruncating(values[i]);
            values[i] = T.CreateTruncating(z / (1 + Math.Exp(-z)));
        }
    }

    readonly struct SiluPass : Float32Lanes.IPass
    {
        // e^−z above e^88 would leave float32's range: there z σ(z) is below 10⁻³⁶ in magnitude either way.
        public static Vector256<float> Apply(Vector256<float> z, Vector256<float> target) =>
            z / (Vector256<float>.One + Float32Lanes.Exp(Vector256.Min(-z, Vector256.Create(88f))));
    }
}
