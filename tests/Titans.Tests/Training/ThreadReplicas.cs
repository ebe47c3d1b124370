using System.Security.Cryptography;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tests.Training;

/// <summary>
/// Replicas of a data-parallel job as threads of one process, for testing the trainer's collective logic without MPI:
/// each collective is an exchange through shared slots between two barriers. Sums run in rank order on every replica,
/// so all get the same bits, as MPI's all-reduce does for two ranks.
/// </summary>
sealed class ThreadReplicas(int size)
{
    readonly Barrier barrier = new(size);
    readonly object?[] slots = new object?[size];

    public IGradientReducer Rank(int rank) => new Replica(this, rank);

    T[] Exchange<T>(int rank, T value)
    {
        slots[rank] = value;
        barrier.SignalAndWait();
        var all = slots.Select(s => (T)s!).ToArray();
        barrier.SignalAndWait();   // nobody writes the next exchange before everyone read this one
        return all;
    }

    sealed class Replica(ThreadReplicas group, int rank) : IGradientReducer
    {
        public int Rank => rank;
        public int Size => size;
        int size => group.slots.Length;

        public bool Owns(int micro) => micro % Size == rank;

        public (int Rank, string Message)? FirstFailure(string? message)
        {
            var all = group.Exchange(rank, message);
            int first = Array.FindIndex(all, m => m is not null);
            return first < 0 ? null : (first, all[first]!);
        }

        public double Sum(double value) => group.Exchange(rank, value).Aggregate(0.0, (total, v) => total + v);

        public void SumInPlace(Tensor values)
        {
            var all = group.Exchange(rank, values.data<float>().ToArray());
            var sum = new float[all[0].Length];
            foreach (var part in all)
                for (int i = 0; i < sum.Length; i++) sum[i] += part[i];
            using var summed = tensor(sum);
            values.copy_(summed);
        }

        public void FromRoot(Span<double> values) => group.Exchange(rank, values.ToArray())[0].CopyTo(values);

        public string? DivergedReplicas(IEnumerable<Tensor> parameters, int step)
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            foreach (var p in parameters) hash.AppendData(p.detach().contiguous().bytes);
            string own = Convert.ToHexString(hash.GetHashAndReset()), root = group.Exchange(rank, own)[0];
            return FirstFailure(own == root ? null : $"after step {step} the weights of rank {rank} differ from rank 0's") is (_, string m) ? m : null;
        }
    }
}

/// <summary>A replica whose gradient turns NaN at one optimizer step (1-based), as a diverging micro-batch would make it.</summary>
sealed class NonFiniteGradientAt(IGradientReducer inner, int step) : IGradientReducer
{
    int sums;

    public int Rank => inner.Rank;
    public int Size => inner.Size;
    public bool Owns(int micro) => inner.Owns(micro);
    public (int Rank, string Message)? FirstFailure(string? message) => inner.FirstFailure(message);
    public double Sum(double value) => inner.Sum(value);
    public void FromRoot(Span<double> values) => inner.FromRoot(values);
    public string? DivergedReplicas(IEnumerable<Tensor> parameters, int at) => inner.DivergedReplicas(parameters, at);

    public void SumInPlace(Tensor values)
    {
        if (++sums == step) values[0] = tensor(float.NaN);   // one gradient sum per step
        inner.SumInPlace(values);
    }
}
