using System.Reflection;
using static TorchSharp.torch;

namespace Titans.Runtime;

/// <summary>
/// Whether TorchSharp's temporaries are safe from the garbage collector here (docs/design.md): TorchSharp 0.107 hands
/// Scalars to libtorch by handle without keeping them alive, which optimized code lets a collection free mid-call. The
/// build keeps every method of the output copy of TorchSharp.dll unoptimized (build/TorchSharpJitFix.targets; the
/// Titans.NET package brings it to its users' builds), or a process may run with DOTNET_JITMinOpts=1.
/// </summary>
public static class TorchSharpJit
{
    /// <summary>True where the loaded TorchSharp.dll carries the build's NoOptimization marks, or the JIT optimizes nothing.</summary>
    public static bool KeepsArgumentsAlive =>
        (typeof(Tensor).GetMethod(nameof(Tensor.add), [typeof(Tensor)])!.MethodImplementationFlags & MethodImplAttributes.NoOptimization) != 0
        || Environment.GetEnvironmentVariable("DOTNET_JITMinOpts") == "1";

    /// <summary>What to tell a user whose TorchSharp.dll lacks the marks (a build that did not run the step).</summary>
    public const string Warning =
        "warning: this TorchSharp.dll was not built with its methods kept unoptimized (build/TorchSharpJitFix.targets), so " +
        "a garbage collection can free a value libtorch is reading; rebuild, or set DOTNET_JITMinOpts=1.";
}
