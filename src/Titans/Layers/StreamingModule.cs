using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Layers;

/// <summary>
/// A module that runs over a sequence carrying a state between calls (attention cache, memory state, ...).
/// <see cref="Forward"/> continues a stream; <c>forward(x)</c> runs a fresh sequence and drops the state.
/// </summary>
public abstract class StreamingModule<TState> : nn.Module<Tensor, Tensor> where TState : class, IDisposable
{
    protected StreamingModule(string name) : base(name) { }

    /// <summary>Runs x from <paramref name="state"/> (null: a sequence start); the given state is not modified.</summary>
    public abstract (Tensor Output, TState State) Forward(Tensor x, TState? state);

    /// <summary>
    /// A new state must not share tensor handles with the caller's state, since each is disposed on its own. The
    /// returned function gives a tensor carried over unchanged from <paramref name="given"/> a handle of its own (an
    /// alias of the same storage) and passes every other tensor through.
    /// </summary>
    protected static Func<Tensor, Tensor> OwnedApartFrom(IEnumerable<Tensor>? given)
    {
        var carried = new HashSet<Tensor>(given ?? Enumerable.Empty<Tensor>(), ReferenceEqualityComparer.Instance);
        return t => carried.Contains(t) ? t.alias() : t;
    }

    public sealed override Tensor forward(Tensor x)
    {
        var (output, state) = Forward(x, null);
        state.Dispose();
        return output;
    }
}
