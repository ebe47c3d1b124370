using static TorchSharp.torch;

namespace Titans.Memory;

/// <summary>
/// Everything a <see cref="NeuralMemory"/> needs to continue a sequence where the last call stopped: the memory
/// weights and momentum at the last chunk boundary, the tokens since that boundary (fewer than b; their inner
/// gradients belong to a mini-batch that is not complete yet), the convolution cache, and the position.
/// Processing a document in pieces of any size with this state equals processing it at once.
/// </summary>
public sealed class NeuralMemoryState : IDisposable
{
    public MemoryWeights Memory { get; }
    /// <summary>Keys and values of the pending tokens, [B, H, p, d_h], and their gates, [B, H, p] (and [B, H, p, out_l]).</summary>
    public Tensor PendingKeys { get; }
    public Tensor PendingValues { get; }
    public MemoryGates PendingGates { get; }
    /// <summary>The last K−1 projected inputs before the convolution, [B, K−1, 3·H·d_h]; null without convolution.</summary>
    public Tensor? ConvCache { get; }
    /// <summary>Tokens processed so far.</summary>
    public long Position { get; }

    public NeuralMemoryState(MemoryWeights memory, Tensor pendingKeys, Tensor pendingValues, MemoryGates pendingGates,
        Tensor? convCache, long position)
    {
        Memory = memory;
        PendingKeys = pendingKeys;
        PendingValues = pendingValues;
        PendingGates = pendingGates;
        ConvCache = convCache;
        Position = position;
    }

    public long PendingTokens => PendingKeys.shape[2];

    /// <summary>Every tensor of the state (for disposal, moving between scopes, and comparisons in tests).</summary>
    public IEnumerable<Tensor> Tensors
    {
        get
        {
            foreach (var t in Memory.Tensors) yield return t;
            yield return PendingKeys;
            yield return PendingValues;
            foreach (var t in PendingGates.Tensors) yield return t;
            if (ConvCache is not null) yield return ConvCache;
        }
    }

    /// <summary>
    /// A state of this one's structure (depth, channel-wise gates, convolution, position) holding the next tensors of
    /// <paramref name="tensors"/>, in the order of <see cref="Tensors"/> (to rebuild a state passed through a flat list).
    /// </summary>
    public NeuralMemoryState WithTensors(Runtime.TensorReader tensors)
    {
        int depth = Memory.Depth;
        var memory = new MemoryWeights(tensors.Take(depth), tensors.Take(depth));
        Tensor keys = tensors.Next(), values = tensors.Next();
        var gates = new MemoryGates(tensors.Next(), tensors.Next(), tensors.Next())
            { ChannelLogDecay = tensors.TakeIf(PendingGates.ChannelLogDecay is not null, depth) };
        return new NeuralMemoryState(memory, keys, values, gates, tensors.NextIf(ConvCache is not null), Position);
    }

    /// <summary>Cuts the autograd history (truncated back-propagation through a long stream).</summary>
    public NeuralMemoryState Detach() => new(Memory.Detach(), PendingKeys.detach(), PendingValues.detach(),
        new MemoryGates(PendingGates.Theta.detach(), PendingGates.LogDecay.detach(), PendingGates.LogEta.detach())
        {
            ChannelLogDecay = PendingGates.ChannelLogDecay?.Select(c => c.detach()).ToArray(),
        },
        ConvCache?.detach(), Position);

    /// <summary>
    /// Takes the state's tensors out of every dispose scope, so it outlives the scope of the loop iteration that made
    /// it; the caller then owns it and disposes it when the next state replaces it.
    /// </summary>
    public NeuralMemoryState DetachFromDisposeScope()
    {
        foreach (var t in Tensors) t.DetachFromDisposeScope();
        return this;
    }

    public void Dispose()
    {
        foreach (var t in Tensors) t.Dispose();
    }
}
