using System.Runtime.InteropServices;

namespace Titans.Runtime;

/// <summary>
/// glibc's malloc hands large freed blocks (every tensor above its dynamic mmap threshold) back to the kernel and
/// takes fresh zeroed pages for the next one, so a tensor workload on CPU spends a large share of its time in page
/// faults (measured here: a quarter of the benchmark's CPU time in the kernel). Raising the mmap threshold to its
/// maximum and the trim threshold to 1 GiB keeps freed memory in the process for reuse. Process-wide and one-way, so
/// it is the program's choice to make (the titans CLI calls it at start-up); libraries never call it implicitly.
/// </summary>
public static class NativeAllocator
{
    const int M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3;

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int Mallopt(int parameter, int value);

    [DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    /// <summary>
    /// Hands the memory kept for reuse back to the kernel, so a measurement's peak RSS starts from what is live
    /// (benchmarks call it between cells). Returns false where the C library is not glibc.
    /// </summary>
    public static bool ReturnFreedMemory()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            MallocTrim(0);
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>Applies the settings where the C library is glibc; returns false (changing nothing) elsewhere.</summary>
    public static bool KeepFreedMemoryForReuse()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            bool mmap = Mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1; // glibc's largest allowed threshold on 64-bit
            bool trim = Mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024) == 1;
            return mmap && trim;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false; // not glibc (e.g. musl): nothing to tune
        }
    }
}
