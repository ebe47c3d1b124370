using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>
/// The replicas of a data-parallel job, as a trainer sees them: which micro-batches are this process's, the sums that
/// make every replica take the same step, and rank 0's decisions. <see cref="Distributed.DataParallel"/> implements it
/// over MPI; tests implement it over threads. Every member is collective: every replica calls it at the same point.
/// </summary>
public interface IGradientReducer
{
    int Rank { get; }
    int Size { get; }

    /// <summary>Whether micro-batch <paramref name="micro"/> of a step is this replica's.</summary>
    bool Owns(int micro);

    /// <summary>The lowest failing replica and its message, or null when none failed (each says whether it failed).</summary>
    (int Rank, string Message)? FirstFailure(string? message);

    /// <summary>The sum of <paramref name="value"/> over replicas.</summary>
    double Sum(double value);

    /// <summary>Sums a contiguous CPU float tensor over replicas, in place.</summary>
    void SumInPlace(Tensor values);

    /// <summary>Rank 0's values, in place (decisions taken from floating-point results are rank 0's).</summary>
    void FromRoot(Span<double> values);

    /// <summary>Null when every replica holds rank 0's weights; else a sentence naming the first that does not.</summary>
    string? DivergedReplicas(IEnumerable<Tensor> parameters, int step);
}

/// <summary>
/// What a training runs in besides its model, data and settings, given to the library rather than found by it: the
/// replicas it trains with (null: this process alone), and a call made before each step and each evaluation chunk to
/// share the cores with other processes (null: libtorch's thread setting as it is). The titans CLI passes MPI's
/// replicas under mpirun and its core sharing.
/// </summary>
public sealed record TrainingEnvironment(IGradientReducer? Replicas = null, Action? ShareCores = null)
{
    /// <summary>One process, libtorch's threads as they are.</summary>
    public static TrainingEnvironment Alone { get; } = new();
}
