using TorchSharp;
using TorchSharp.Modules;
using Titans.Layers;
using Titans.Memory.Scans;
using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>Projected, convolved and normalized inputs of the memory: q, k, v as [B, H, T, d_h] and the gates.</summary>
public sealed record MemoryInputs(Tensor Queries, Tensor Keys, Tensor Values, MemoryGates Gates, Tensor? ConvCache);

/// <summary>
/// The neural long-term memory (docs/method.md §2): a multi-head MLP whose weights are the recurrent state, trained online
/// (also at test time) to map keys to values with momentum ("past surprise") and forgetting. Everything except the
/// state is an outer-loop parameter: the projections, convolution, gates, initial memory weights W_0, the
/// LayerNorm of the wrapper, and the output norm, gate and projection.
/// </summary>
public sealed class NeuralMemory : StreamingModule<NeuralMemoryState>
{
    public NeuralMemoryConfig Config { get; }

    /// <summary>Sees the gates of every token this memory writes (not of reads); for diagnostics such as <see cref="Experiments.MemoryTrace"/>.</summary>
    internal Action<MemoryGates>? GateObserver { get; set; }

    // Field names are the checkpoint's tensor names.
    readonly Linear q_proj, k_proj, v_proj;
    readonly CausalDepthwiseConv1d? qkv_conv;
    readonly Linear? gate_proj;          // data-dependent gates: x -> [θ, η, α] logits per head
    readonly Parameter gate_bias;         // [(2 + α channels)·H]: the gates' biases (the whole gate when gates are fixed)
    readonly ParameterList initial_weights; // W_0^(l): [H, out, in]
    readonly Parameter? ln_weight, ln_bias; // [H, 1, d_h]
    readonly RmsNorm out_norm;
    readonly Linear? g_proj;
    readonly Linear o_proj;

    public NeuralMemory(string name, NeuralMemoryConfig config) : base(name)
    {
        Config = config.Validate();
        int d = config.ModelDim, h = config.Heads, dh = config.HeadDim, inner = h * dh;
        q_proj = nn.Linear(d, inner, hasBias: false);
        k_proj = nn.Linear(d, inner, hasBias: false);
        v_proj = nn.Linear(d, inner, hasBias: false);
        if (config.ConvKernel > 0) qkv_conv = new CausalDepthwiseConv1d("qkv_conv", 3 * inner, config.ConvKernel);
        int gates = (2 + config.ForgettingChannels) * h; // θ, η per head; α per head or per head and channel
        if (config.DataDependentGates)
        {
            gate_proj = nn.Linear(d, gates, hasBias: false);
            using (no_grad()) gate_proj.weight!.mul_(0.1); // gates start near their initial values
        }
        gate_bias = new Parameter(cat(new[]
        {
            HeadLogits(h, config.InitialInnerLearningRate / config.MaxInnerLearningRate, config.LastHeadInitialInnerLearningRate / config.MaxInnerLearningRate),
            full(h, Logit(config.InitialMomentum)),
            HeadLogits(h, config.InitialForgetting, config.LastHeadInitialForgetting).repeat_interleave(config.ForgettingChannels),
        }));
        initial_weights = new ParameterList();
        foreach (var (o, i) in config.LayerShapes)
            initial_weights.Add(new Parameter(randn(h, o, i) / Math.Sqrt(i)));
        if (config.ResidualLayerNorm)
        {
            ln_weight = new Parameter(ones(h, 1, dh));
            ln_bias = new Parameter(zeros(h, 1, dh));
        }
        out_norm = new RmsNorm("out_norm", dh);
        if (config.OutputGate != OutputGate.None) g_proj = nn.Linear(d, inner, hasBias: false);
        o_proj = nn.Linear(inner, d, hasBias: false);
        RegisterComponents();
    }

    /// <summary>Whether a parameter name (as <c>named_parameters</c> gives it) is one of a memory's initial weights W₀.</summary>
    public static bool IsInitialWeight(string parameterName) => parameterName.Split('.').Contains(nameof(initial_weights));

    static double Logit(double p) => Math.Log(p / (1 - p));

    /// <summary>σ⁻¹ of each head's initial gate: <paramref name="first"/> for all, or log-spaced from it to <paramref name="last"/>.</summary>
    static Tensor HeadLogits(int heads, double first, double? last) =>
        tensor(Enumerable.Range(0, heads).Select(i => (float)Logit(last is double l && heads > 1 ? first * Math.Pow(l / first, i / (double)(heads - 1)) : first)).ToArray());

    /// <summary>The memory as a function of explicit weights, with this module's wrapper parameters.</summary>
    public MemoryMlp Mlp => new(Config.Activation, Config.ResidualLayerNorm, ln_weight, ln_bias);

    /// <summary>
    /// Runs the memory over x ([B, T, d]) starting from <paramref name="state"/> (null: a fresh sequence) and returns
    /// the outputs ([B, T, d]) and the state to continue from. The given state is not modified or disposed.
    /// </summary>
    public override (Tensor Output, NeuralMemoryState State) Forward(Tensor x, NeuralMemoryState? state)
    {
        using var scope = NewDisposeScope();
        var (retrieved, next) = Write(x, state);
        Tensor output = ReadOut(retrieved, x);
        scope.MoveToOuter(next.Tensors.Append(output));
        return (output, next);
    }

    /// <summary>
    /// <see cref="Forward"/> without the read-out: the retrieved values M_t(q_t) of x's tokens, [B, H, T, d_h], and the
    /// state to continue from; <see cref="ReadOut"/> of them (any number of calls' worth at once) is Forward's output.
    /// </summary>
    public (Tensor Retrieved, NeuralMemoryState State) Write(Tensor x, NeuralMemoryState? state)
    {
        CheckShapes(x, state);
        using var scope = NewDisposeScope();
        long batch = x.shape[0], length = x.shape[1];
        NeuralMemoryState start = state ?? InitialState(batch, x.dtype, x.device);

        MemoryInputs inputs = Project(x, start.ConvCache);
        GateObserver?.Invoke(inputs.Gates);
        long pending = start.PendingTokens;
        long h = Config.Heads, dh = Config.HeadDim;
        // Tokens since the last chunk boundary join this call's mini-batch; their outputs were already returned. (A call
        // that starts on a boundary, as every MAC segment does, has none to join.)
        bool joins = pending > 0;
        Tensor keys = joins ? cat(new[] { start.PendingKeys, inputs.Keys }, 2) : inputs.Keys;
        Tensor values = joins ? cat(new[] { start.PendingValues, inputs.Values }, 2) : inputs.Values;
        Tensor queries = joins ? cat(new[] { zeros(batch, h, pending, dh, dtype: x.dtype, device: x.device), inputs.Queries }, 2) : inputs.Queries;
        MemoryGates gates = joins ? MemoryGates.Concat(start.PendingGates, inputs.Gates) : inputs.Gates;

        MemoryScanResult scan = Scan(queries, keys, values, gates, start.Memory);
        CheckFinite(x, scan, start.Position, length);
        Tensor retrieved = scan.Outputs.narrow(2, pending, length);

        long total = pending + length, rest = total - scan.BoundaryTokens;
        var own = OwnedApartFrom(state?.Tensors);
        var next = new NeuralMemoryState(
            new MemoryWeights(scan.Boundary.Weights.Select(own).ToArray(), scan.Boundary.Momentum.Select(own).ToArray()),
            keys.narrow(2, scan.BoundaryTokens, rest).clone(),
            values.narrow(2, scan.BoundaryTokens, rest).clone(),
            gates.Slice(scan.BoundaryTokens, rest).Copy(),
            inputs.ConvCache,
            start.Position + length);
        scope.MoveToOuter(next.Tensors.Append(retrieved));
        return (retrieved, next);
    }

    /// <summary>
    /// Retrieval without an update, M*(q) (docs/method.md §2, MAC's step 1): queries from x through this module's query path,
    /// read with the given weights ([B, H, out, in] per layer), then the read-out. Returns [B, T, d] and the convolution
    /// cache of x's stream, query channels only (null without convolution).
    /// </summary>
    public (Tensor Output, Tensor? ConvCache) Read(Tensor x, IReadOnlyList<Tensor> weights, Tensor? convCache)
    {
        var (queries, cache) = ProjectQueries(x, convCache);
        return (ReadOut(Mlp.Forward(weights, queries), x), cache);
    }

    /// <summary>
    /// The queries of <see cref="Project"/> alone ([B, H, T, d_h]), for a read: no keys, values or gates. The
    /// convolution cache holds the query channels only, so a read's stream keeps a cache of its own.
    /// </summary>
    public (Tensor Queries, Tensor? ConvCache) ProjectQueries(Tensor x, Tensor? convCache)
    {
        long batch = x.shape[0], length = x.shape[1];
        Tensor q = q_proj.forward(x);
        Tensor? newCache = null;
        if (qkv_conv is not null) (q, newCache) = qkv_conv.Forward(q, convCache, firstChannel: 0);
        q = nn.functional.silu(q).view(batch, length, Config.Heads, Config.HeadDim).transpose(1, 2);   // [B, H, T, d_h]
        return (nn.functional.normalize(q, dim: -1), newCache);
    }

    /// <summary>
    /// Runs one memory call with the scan <see cref="MemoryScan.Choose"/> picks for it (they all compute the same function:
    /// the hand-written backward or recomputed groups in training, the chunked scan in inference).
    /// </summary>
    public MemoryScanResult Scan(Tensor queries, Tensor keys, Tensor values, MemoryGates gates, MemoryWeights memory)
    {
        MemoryStabilizers stabilizers = Stabilizers(keys.dtype);
        return MemoryScan.Run(ScanFor(queries, keys, values, gates, memory, stabilizers), Mlp, queries, keys, values, gates, memory, Config.ChunkSize, stabilizers);
    }

    /// <summary>The scan a call of these tensors takes, and why.</summary>
    public ScanChoice ScanFor(Tensor queries, Tensor keys, Tensor values, MemoryGates gates, MemoryWeights memory, MemoryStabilizers? stabilizers = null) =>
        MemoryScan.Choose(Config, MemoryScan.NeedsGraph(Mlp, queries, keys, values, gates, memory, stabilizers ?? Stabilizers(keys.dtype)), keys.shape[2],
            keys.device_type, keys.dtype);

    /// <summary>The configured stabilizers, with W₀ (a parameter, so in the gradient path) as their retention and norm targets.</summary>
    public MemoryStabilizers Stabilizers(ScalarType dtype)
    {
        if (!Config.RetainTowardInitial && Config.FixedNorm == FastWeightNorm.None && Config.InnerGradientClip == 0)
            return MemoryStabilizers.None;
        Tensor[] initial = initial_weights.Select(w => w.to(dtype).unsqueeze(0)).ToArray();   // [1, H, out, in]
        var stabilizers = new MemoryStabilizers
        {
            RetentionTarget = Config.RetainTowardInitial ? initial : null,
            RowNorms = Config.FixedNorm == FastWeightNorm.Rows,
            GradientClip = Config.InnerGradientClip,
        };
        return Config.FixedNorm == FastWeightNorm.None ? stabilizers : stabilizers with { NormTarget = initial.Select(stabilizers.Norm).ToArray() };
    }

    /// <summary>The memory weights after every token seen so far: the pending mini-batch closed early.</summary>
    public MemoryWeights CurrentMemory(NeuralMemoryState state)
    {
        if (state.PendingTokens == 0) return state.Memory;
        var q = zeros_like(state.PendingKeys);
        return Scan(q, state.PendingKeys, state.PendingValues, state.PendingGates, state.Memory).Final;
    }

    /// <summary>
    /// Truncated backpropagation through a stream: <paramref name="state"/>, reached without gradient (a stream prefix),
    /// with its weights put back in the gradient path of <paramref name="start"/>, the state the stream began from (W₀, or
    /// MAG's and MAL's write of the persistent tokens). The values are unchanged (W + (W_s − W_s) is W bit for bit);
    /// the gradient treats the prefix's writes as a constant offset, ∂W/∂W_s = I, so W₀ learns from every sequence and
    /// not only from those that start a stream. Under retention toward W₀ that is the exact derivative of the
    /// recurrence's linear part; under plain forgetting the exact one would be Π(1 − α) over the prefix, which vanishes.
    /// Returns a new state with handles of its own; the given one is left as it is.
    /// </summary>
    public static NeuralMemoryState WithGradientToStart(NeuralMemoryState state, NeuralMemoryState start) =>
        new(new MemoryWeights(LinkToStart(state.Memory.Weights, start.Memory.Weights), state.Memory.Momentum.Select(m => m.alias()).ToArray()),
            state.PendingKeys.alias(), state.PendingValues.alias(),
            new MemoryGates(state.PendingGates.Theta.alias(), state.PendingGates.LogDecay.alias(), state.PendingGates.LogEta.alias())
            {
                ChannelLogDecay = state.PendingGates.ChannelLogDecay?.Select(c => c.alias()).ToArray(),
            },
            state.ConvCache?.alias(), state.Position);

    /// <summary>Weights W.detach() + (W_s − W_s.detach()): the values of <paramref name="weights"/>, the gradient path of <paramref name="start"/>.</summary>
    public static Tensor[] LinkToStart(IReadOnlyList<Tensor> weights, IReadOnlyList<Tensor> start) =>
        weights.Zip(start, (w, s) => w.detach() + (s - s.detach())).ToArray();

    /// <summary>A fresh sequence: W = W_0 (learned), S = 0, nothing pending, zero convolution history.</summary>
    public NeuralMemoryState InitialState(long batch, ScalarType? dtype = null, Device? device = null)
    {
        var first = initial_weights[0];
        dtype ??= first.dtype;
        device ??= first.device;
        long h = Config.Heads, dh = Config.HeadDim;
        // A copy, not a view of W_0: a state must not change when an optimizer step later updates the parameter
        // (clone is differentiable, so outer gradients still reach W_0).
        var weights = initial_weights.Select(w => w.to(dtype.Value).unsqueeze(0).expand(batch, -1, -1, -1).clone()).ToArray();
        var momentum = weights.Select(w => zeros(w.shape, dtype: dtype, device: device)).ToArray();
        var empty = zeros(batch, h, 0, dtype: dtype, device: device);
        var gates = new MemoryGates(empty, empty.clone(), empty.clone())
        {
            ChannelLogDecay = Config.ChannelwiseForgetting
                ? Config.LayerShapes.Select(s => zeros(batch, h, 0, s.Out, dtype: dtype, device: device)).ToArray()
                : null,
        };
        return new NeuralMemoryState(new MemoryWeights(weights, momentum),
            zeros(batch, h, 0, dh, dtype: dtype, device: device), zeros(batch, h, 0, dh, dtype: dtype, device: device),
            gates,
            qkv_conv is null ? null : zeros(batch, qkv_conv.Kernel - 1, qkv_conv.Channels, dtype: dtype, device: device), 0);
    }

    /// <summary>q, k, v = SiLU(conv(x W)) per head, q and k L2-normalized; θ, η, α per token and head.</summary>
    public MemoryInputs Project(Tensor x, Tensor? convCache)
    {
        // Without a gradient, the fused C# projection where it covers the call (FusedProjection; this path is its oracle).
        if (Config.FusedKernel && !is_grad_enabled() && !Config.ChannelwiseForgetting && x.device_type == DeviceType.CPU
            && x.dtype is ScalarType.Float32 or ScalarType.Float64)
            return FusedProjection.Project(Config, new FusedProjection.Weights(new[] { q_proj.weight!, k_proj.weight!, v_proj.weight! },
                qkv_conv?.Weight, gate_proj?.weight, gate_bias), x, convCache);
        return ProjectByLibtorch(x, convCache);
    }

    /// <summary><see cref="Project"/> through libtorch's calls: the path autograd differentiates, and the fused projection's oracle.</summary>
    internal MemoryInputs ProjectByLibtorch(Tensor x, Tensor? convCache)
    {
        long batch = x.shape[0], length = x.shape[1];
        int h = Config.Heads, dh = Config.HeadDim;
        Tensor qkv = cat(new[] { q_proj.forward(x), k_proj.forward(x), v_proj.forward(x) }, -1);
        Tensor? newCache = null;
        if (qkv_conv is not null) (qkv, newCache) = qkv_conv.Forward(qkv, convCache);
        qkv = nn.functional.silu(qkv).view(batch, length, 3, h, dh).permute(2, 0, 3, 1, 4); // [3, B, H, T, d_h]
        Tensor q = nn.functional.normalize(qkv[0], dim: -1);
        Tensor k = nn.functional.normalize(qkv[1], dim: -1);
        Tensor v = qkv[2];

        int channels = Config.ForgettingChannels;
        Tensor logits = gate_proj is null ? gate_bias.expand(batch, length, gate_bias.shape[0]) : gate_proj.forward(x) + gate_bias;
        Tensor[] parts = logits.split(new long[] { h, h, h * channels }, -1);
        Tensor theta = parts[0].transpose(1, 2).sigmoid() * Config.MaxInnerLearningRate;                    // [B, H, T]
        Tensor etaLogits = parts[1].transpose(1, 2);
        Tensor logEta = Config.Momentum ? nn.functional.logsigmoid(etaLogits) : full_like(etaLogits, double.NegativeInfinity);
        // log(1 − α) with α = σ(logit): logsigmoid(−logit), exact and finite.
        Tensor alphaLogits = parts[2].view(batch, length, h, channels).permute(0, 2, 1, 3);               // [B, H, T, C]
        if (!Config.ChannelwiseForgetting)
        {
            Tensor logDecay = Config.Forgetting ? nn.functional.logsigmoid(-alphaLogits.squeeze(-1)) : zeros_like(theta);
            return new MemoryInputs(q, k, v, new MemoryGates(theta, logDecay, logEta), newCache);
        }
        Tensor[] perLayer = nn.functional.logsigmoid(-alphaLogits).split(Config.LayerShapes.Select(s => (long)s.Out).ToArray(), -1);
        return new MemoryInputs(q, k, v, new MemoryGates(theta, zeros_like(theta), logEta) { ChannelLogDecay = perLayer }, newCache);
    }

    /// <summary>Per-head RMSNorm of the retrieved values ([B, H, T, d_h]), the output gate of x ([B, T, d]), and the output projection.</summary>
    public Tensor ReadOut(Tensor retrieved, Tensor x) => ReadOutGated(retrieved, OutputGateOf(x));

    /// <summary>The output gate's factors for x ([B, T, d] to [B, T, H·d_h]); null without an output gate.</summary>
    public Tensor? OutputGateOf(Tensor x) => Config.OutputGate switch
    {
        OutputGate.None => null,
        OutputGate.Sigmoid => g_proj!.forward(x).sigmoid(),
        OutputGate.Silu => nn.functional.silu(g_proj!.forward(x)),
        _ => throw new ArgumentOutOfRangeException(nameof(Config.OutputGate)),
    };

    /// <summary><see cref="ReadOut(Tensor, Tensor)"/> with the output gate's factors given (<see cref="OutputGateOf"/>; null: none).</summary>
    public Tensor ReadOutGated(Tensor retrieved, Tensor? gate)
    {
        long batch = retrieved.shape[0], length = retrieved.shape[2];
        Tensor y = out_norm.forward(retrieved).permute(0, 2, 1, 3).reshape(batch, length, Config.Heads * Config.HeadDim);
        return o_proj.forward(gate is null ? y : y * gate);
    }

    /// <summary>
    /// A diverging inner loop (θ too large for the memory's scale, no forgetting) turns the state into inf/NaN, and a
    /// stream would carry it on silently; stop at the call where it happens and say what to change.
    /// </summary>
    /// <summary>One host sync per call: the input, the outputs and the final state checked together; only a failure looks closer.</summary>
    void CheckFinite(Tensor x, MemoryScanResult scan, long position, long length)
    {
        // The fused kernel looked at every output and the final state as it wrote them; a non-finite input would have
        // reached both (every token's q, k, v and gates are linear in it), so nothing is left to check.
        if (scan.KnownFinite == true) return;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var all = new[] { x, scan.Outputs }.Concat(scan.Final.Tensors).Select(t => t.isfinite().all()).ToArray();
            if (stack(all).all().item<bool>()) return;
        }
        if (!AllFinite(x))
            throw new NonFiniteValueException("NeuralMemory input contains NaN or infinite values.");
        throw new NonFiniteValueException(
                $"The neural memory became non-finite while reading tokens {position}..{position + length - 1}: its inner " +
                $"gradient descent diverged. Lower MaxInnerLearningRate (now {Config.MaxInnerLearningRate}), keep " +
                "Forgetting on, or use the ResidualLayerNorm wrapper.");
    }

    static bool AllFinite(Tensor t)
    {
        using var noGrad = no_grad();
        using var all = t.isfinite().all();
        return all.item<bool>();
    }

    void CheckShapes(Tensor x, NeuralMemoryState? state)
    {
        if (x.dim() != 3 || x.shape[2] != Config.ModelDim)
            throw new ArgumentException(
                $"NeuralMemory expects input of shape [batch, time, {Config.ModelDim}], got [{string.Join(", ", x.shape)}].", nameof(x));
        if (!x.is_floating_point())
            throw new ArgumentException($"NeuralMemory expects floating-point input, got {x.dtype}.", nameof(x));
        if (state is not null && state.PendingKeys.shape[0] != x.shape[0])
            throw new ArgumentException(
                $"The state is for a batch of {state.PendingKeys.shape[0]} sequences, the input has {x.shape[0]}.", nameof(state));
    }
}
