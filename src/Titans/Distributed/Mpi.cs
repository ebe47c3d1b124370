using System.Reflection;
using System.Runtime.InteropServices;

namespace Titans.Distributed;

/// <summary>
/// The few Open MPI calls data-parallel training needs (init, rank, size, all-reduce, broadcast, abort,
/// finalize), bound by P/Invoke to the system's Open MPI 4 (<c>libmpi.so.40</c>; Debian: <c>openmpi-bin</c>). No MPI
/// binding for .NET is on the NuGet mirror. Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM) are the addresses
/// of its predefined global objects, so they are looked up by symbol. The library is opened with RTLD_GLOBAL, as Open
/// MPI's own plug-ins need its symbols (.NET's loader would open it locally). Every call that fails throws.
/// </summary>
internal static class Mpi
{
    const string Library = "libmpi.so.40";
    const int RtldNow = 2, RtldGlobal = 0x100;
    static IntPtr handle;

    /// <summary>Opens Open MPI once, globally, and routes this assembly's "mpi" imports to it.</summary>
    internal static void Load()
    {
        if (handle != IntPtr.Zero) return;
        handle = Runtime.Posix.OpenLibraryGlobally(Library, RtldNow | RtldGlobal);
        if (handle == IntPtr.Zero)
            throw new DllNotFoundException($"Open MPI ({Library}) is not installed; on Debian: apt-get install openmpi-bin libopenmpi-dev.");
        NativeLibrary.SetDllImportResolver(typeof(Mpi).Assembly, (name, _, _) => name == "mpi" ? handle : IntPtr.Zero);
    }

    internal static IntPtr Symbol(string name) => NativeLibrary.GetExport(handle, name);

    internal static IntPtr CommWorld => Symbol("ompi_mpi_comm_world");
    internal static IntPtr Float => Symbol("ompi_mpi_float");
    internal static IntPtr Double => Symbol("ompi_mpi_double");
    internal static IntPtr Int => Symbol("ompi_mpi_int");
    internal static IntPtr Byte => Symbol("ompi_mpi_byte");
    internal static IntPtr Sum => Symbol("ompi_mpi_op_sum");
    internal static IntPtr Min => Symbol("ompi_mpi_op_min");
    internal static readonly IntPtr InPlace = 1;

    [DllImport("mpi")] internal static extern int MPI_Initialized(out int flag);
    [DllImport("mpi")] internal static extern int MPI_Init(IntPtr argc, IntPtr argv);
    [DllImport("mpi")] internal static extern int MPI_Finalize();
    [DllImport("mpi")] internal static extern int MPI_Comm_rank(IntPtr comm, out int rank);
    [DllImport("mpi")] internal static extern int MPI_Comm_size(IntPtr comm, out int size);
    [DllImport("mpi")] internal static extern int MPI_Allreduce(IntPtr send, ref byte receive, int count, IntPtr type, IntPtr op, IntPtr comm);
    [DllImport("mpi")] internal static extern int MPI_Bcast(ref byte buffer, int count, IntPtr type, int root, IntPtr comm);
    [DllImport("mpi")] internal static extern int MPI_Abort(IntPtr comm, int code);

    internal static void Check(int code, string call)
    {
        if (code != 0) throw new InvalidOperationException($"{call} failed with MPI error {code}.");
    }
}
