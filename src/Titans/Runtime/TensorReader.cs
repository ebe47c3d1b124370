using static TorchSharp.torch;

namespace Titans.Runtime;

/// <summary>
/// Reads a flat list of tensors back into the named parts it was written from, in the order they were written: what
/// travels through an autograd node, a recomputed group or a streaming state as a list. Each structure writes its parts
/// in one place (a <c>Flat</c> or <c>Tensors</c> property) and reads them back in one place with this; an optional part
/// that is absent reads nothing. Reading past the end, or leaving tensors unread (<see cref="End"/>), is an error.
/// </summary>
public sealed class TensorReader(IEnumerable<Tensor> tensors)
{
    readonly IEnumerator<Tensor> items = tensors.GetEnumerator();

    public Tensor Next() => items.MoveNext() ? items.Current : throw new ArgumentException("Too few tensors for the structure they are read into.");

    public Tensor[] Take(int count)
    {
        var taken = new Tensor[count];
        for (int i = 0; i < count; i++) taken[i] = Next();
        return taken;
    }

    /// <summary>The next tensor where the part is present; nothing is read where it is not.</summary>
    public Tensor? NextIf(bool present) => present ? Next() : null;

    /// <summary>The next <paramref name="count"/> tensors where the part is present; nothing is read where it is not.</summary>
    public Tensor[]? TakeIf(bool present, int count) => present ? Take(count) : null;

    /// <summary>The next tensor, or null where it is an undefined handle or the list ended (gradients autograd did not compute).</summary>
    public Tensor? NextDefined() => items.MoveNext() && items.Current is { IsInvalid: false } t ? t : null;

    /// <summary>Every tensor was read.</summary>
    public void End()
    {
        if (items.MoveNext()) throw new ArgumentException("Too many tensors for the structure they are read into.");
    }
}
