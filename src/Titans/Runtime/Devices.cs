using static TorchSharp.torch;

namespace Titans.Runtime;

/// <summary>Device selection shared by the CLI and the library: code is device-agnostic, the choice is made once.</summary>
public static class Devices
{
    /// <summary>Parses "cpu", "cuda" or "cuda:N"; a CUDA device on a machine without CUDA gives a clear error.</summary>
    public static Device Parse(string name)
    {
        string n = name.Trim().ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new ArgumentException(
                    $"Device '{name}' was requested, but CUDA is not available to this build of TorchSharp " +
                    "(the project references the CPU libtorch; reference a libtorch-cuda package to run on a GPU).");
            return device(n);
        }
        throw new ArgumentException($"Unknown device '{name}': use cpu, cuda or cuda:N.");
    }
}
