using System.Runtime.InteropServices;
using System.Text;
using static TorchSharp.torch;

namespace Titans.Distributed;

/// <summary>The ranks' weights differ: they no longer train one model. Every rank learns of it at the same check.</summary>
public sealed class ReplicasDivergedException(string message) : Exception(message);

/// <summary>
/// Data-parallel training over MPI (`mpirun -np N titans train …`): every rank holds the whole model, takes its share
/// of each step's micro-batches (micro-batch m belongs to rank m mod N; the batches are a function of seed, step and
/// micro-batch, so the global batch is the same whatever N), and the gradients are summed across ranks with one
/// all-reduce over a flat buffer, so every rank applies the same AdamW step to the same weights. With N = 2 and two
/// micro-batches the sum is the one a single process accumulates (a + b = b + a), so the weights are bit for bit those
/// of one process. Failure is collective: a rank that fails mid-step tells the others, which stop with its message.
/// Process-wide (MPI_COMM_WORLD): <see cref="World"/> is set by <see cref="StartIfLaunched"/>, which the CLI calls.
/// </summary>
public sealed class DataParallel : Training.IGradientReducer
{
    DataParallel(int rank, int size) => (Rank, Size) = (rank, size);

    /// <summary>The world this process trains in, when it was started by mpirun; null otherwise.</summary>
    public static DataParallel? World { get; private set; }

    public int Rank { get; }
    public int Size { get; }
    /// <summary>Rank 0 alone writes checkpoints, metrics and plots, and prints progress.</summary>
    public bool IsRoot => Rank == 0;

    /// <summary>
    /// Under mpirun (Open MPI sets OMPI_COMM_WORLD_SIZE), initializes MPI and sets <see cref="World"/>; otherwise does
    /// nothing and MPI is never loaded. A world of one process is no world (null).
    /// </summary>
    public static DataParallel? StartIfLaunched()
    {
        if (World is not null || !int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE"), out int size) || size < 2) return World;
        Mpi.Load();
        Mpi.Check(Mpi.MPI_Initialized(out int initialized), "MPI_Initialized");
        if (initialized == 0) Mpi.Check(Mpi.MPI_Init(IntPtr.Zero, IntPtr.Zero), "MPI_Init");
        Mpi.Check(Mpi.MPI_Comm_rank(Mpi.CommWorld, out int rank), "MPI_Comm_rank");
        Mpi.Check(Mpi.MPI_Comm_size(Mpi.CommWorld, out int worldSize), "MPI_Comm_size");
        return World = new DataParallel(rank, worldSize);
    }

    /// <summary>Whether micro-batch <paramref name="micro"/> of a step is this rank's.</summary>
    public bool Owns(int micro) => micro % Size == Rank;

    /// <summary>Time spent in <see cref="SumInPlace"/> and the bytes it reduced, since the start (for the benchmark numbers).</summary>
    public TimeSpan ReduceTime => reduceWatch.Elapsed;
    public long ReducedBytes { get; private set; }
    public int Reductions { get; private set; }
    readonly System.Diagnostics.Stopwatch reduceWatch = new();

    /// <summary>Sums a contiguous CPU float32 or float64 tensor across ranks, in place (every rank gets the sum).</summary>
    public void SumInPlace(Tensor values)
    {
        reduceWatch.Start();
        try { Reduce(values); }
        finally { reduceWatch.Stop(); }
        ReducedBytes += values.numel() * values.element_size();
        Reductions++;
    }

    void Reduce(Tensor values)
    {
        if (values.device_type != TorchSharp.DeviceType.CPU || !values.is_contiguous())
            throw new ArgumentException("The all-reduce works on contiguous CPU tensors.", nameof(values));
        IntPtr type = values.dtype switch
        {
            ScalarType.Float32 => Mpi.Float,
            ScalarType.Float64 => Mpi.Double,
            _ => throw new ArgumentException($"The all-reduce sums float32 or float64, got {values.dtype}.", nameof(values)),
        };
        Span<byte> bytes = values.bytes;
        Mpi.Check(Mpi.MPI_Allreduce(Mpi.InPlace, ref MemoryMarshal.GetReference(bytes), checked((int)values.numel()), type, Mpi.Sum, Mpi.CommWorld),
            "MPI_Allreduce");
    }

    /// <summary>The sum of <paramref name="value"/> over ranks.</summary>
    public double Sum(double value)
    {
        Span<double> buffer = [value];
        Mpi.Check(Mpi.MPI_Allreduce(Mpi.InPlace, ref MemoryMarshal.GetReference(MemoryMarshal.AsBytes(buffer)), 1, Mpi.Double, Mpi.Sum, Mpi.CommWorld),
            "MPI_Allreduce");
        return buffer[0];
    }

    /// <summary>
    /// Every rank says whether it failed (its message) or not (null); all get the lowest failing rank and its message,
    /// or null when none failed. Collective: every rank must call it at the same point.
    /// </summary>
    public (int Rank, string Message)? FirstFailure(string? message)
    {
        Span<int> first = [message is null ? Size : Rank];
        Mpi.Check(Mpi.MPI_Allreduce(Mpi.InPlace, ref MemoryMarshal.GetReference(MemoryMarshal.AsBytes(first)), 1, Mpi.Int, Mpi.Min, Mpi.CommWorld),
            "MPI_Allreduce");
        int root = first[0];
        if (root == Size) return null;
        byte[] text = root == Rank ? Encoding.UTF8.GetBytes(message!) : [];
        Span<int> length = [text.Length];
        Mpi.Check(Mpi.MPI_Bcast(ref MemoryMarshal.GetReference(MemoryMarshal.AsBytes(length)), 1, Mpi.Int, root, Mpi.CommWorld), "MPI_Bcast");
        if (root != Rank) text = new byte[length[0]];
        if (text.Length > 0) Mpi.Check(Mpi.MPI_Bcast(ref text[0], text.Length, Mpi.Byte, root, Mpi.CommWorld), "MPI_Bcast");
        return (root, Encoding.UTF8.GetString(text));
    }

    /// <summary>
    /// Rank 0's values on every rank, in place (collective). A decision taken from a rank's own floating-point result (the
    /// gradient norm that sets the clip factor, a validation score that stops training) can differ in its last bits from
    /// rank to rank, as thread counts change the order of a sum; taken from rank 0's values, it is the same everywhere.
    /// </summary>
    public void FromRoot(Span<double> values) =>
        Mpi.Check(Mpi.MPI_Bcast(ref MemoryMarshal.GetReference(MemoryMarshal.AsBytes(values)), values.Length, Mpi.Double, 0, Mpi.CommWorld), "MPI_Bcast");

    /// <summary>
    /// Whether every rank holds rank 0's weights (collective): each hashes its own, rank 0's hash is broadcast, and the
    /// first rank whose weights differ is reported to all. Returns that report, or null when the replicas agree.
    /// </summary>
    public string? DivergedReplicas(IEnumerable<Tensor> parameters, int step)
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var p in parameters)
        {
            using var scope = NewDisposeScope();
            hash.AppendData(p.detach().cpu().contiguous().bytes);
        }
        byte[] own = hash.GetHashAndReset(), root = (byte[])own.Clone();
        Mpi.Check(Mpi.MPI_Bcast(ref root[0], root.Length, Mpi.Byte, 0, Mpi.CommWorld), "MPI_Bcast");
        string? problem = own.AsSpan().SequenceEqual(root)
            ? null
            : $"after step {step} the weights of rank {Rank} differ from rank 0's: the ranks diverged (were they given different settings? " +
              "if not, a decision was taken from one rank's own arithmetic: please report it)";
        return FirstFailure(problem) is (_, string message) ? message : null;
    }

    /// <summary>Stops every rank of the job (mpirun ends them all) with <paramref name="code"/>.</summary>
    public void Abort(int code) => Mpi.MPI_Abort(Mpi.CommWorld, code);

    /// <summary>Ends MPI at a clean exit (every rank must call it).</summary>
    public static void Finish()
    {
        if (World is null) return;
        World = null;
        Mpi.MPI_Finalize();
    }
}
