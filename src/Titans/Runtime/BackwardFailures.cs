using System.Runtime.ExceptionServices;

namespace Titans.Runtime;

/// <summary>
/// An exception must not cross libtorch's native autograd engine (the process would die), so a backward written in C#
/// (the memory's hand-written scan, recomputation) that fails records its exception here and returns NaN gradients. The
/// trainer rethrows it right after backward, so the user sees what happened (out of memory, a bug) instead of a step
/// that "diverged". A loop of one's own that calls backward on such a model should call <see cref="ThrowIfAny"/> after it.
/// </summary>
public static class BackwardFailures
{
    static Exception? pending;

    /// <summary>Keeps the first failure until it is thrown.</summary>
    public static void Record(Exception failure) => Interlocked.CompareExchange(ref pending, failure, null);

    /// <summary>Throws the failure recorded since the last call, if any, with its original stack.</summary>
    public static void ThrowIfAny()
    {
        if (Interlocked.Exchange(ref pending, null) is Exception failure) ExceptionDispatchInfo.Capture(failure).Throw();
    }

    /// <summary>Forgets a failure recorded outside any step (so it is not blamed on the next one).</summary>
    public static void Clear() => Interlocked.Exchange(ref pending, null);
}
