using System.Reflection;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Titans.Tests.Runtime;

/// <summary>
/// TorchSharp 0.107 hands temporary <see cref="TorchSharp.Scalar"/>s (implicit conversions, default arguments) to
/// libtorch; in optimized code the GC may free one during the native call when another thread starts a collection.
/// AdamW's step makes several per parameter. With a thread allocating hard beside it, 300 steps over 200 parameters
/// failed about 11 times on average with the JIT optimizing everything (82 in 3,000 measured). The build marks every
/// method of the output copy of TorchSharp.dll NoOptimization | NoInlining (build/TorchSharpJitFix.targets), which keeps
/// what each hands to libtorch alive until it returns; the rest of the process, the test host included, is optimized.
/// </summary>
public class GarbageCollectionRaceTests
{
    [Fact]
    public void TorchSharpAloneRunsUnoptimized()
    {
        Assert.Null(Environment.GetEnvironmentVariable("DOTNET_JITMinOpts"));       // the JIT optimizes this process
        const MethodImplAttributes kept = MethodImplAttributes.NoOptimization | MethodImplAttributes.NoInlining;
        var add = typeof(Tensor).GetMethod(nameof(Tensor.add), [typeof(Tensor)])!;
        var step = typeof(TorchSharp.Modules.AdamW).GetMethod(nameof(TorchSharp.Modules.AdamW.step), [typeof(Func<Tensor>)])!;
        Assert.Equal(kept, add.MethodImplementationFlags & kept);
        Assert.Equal(kept, step.MethodImplementationFlags & kept);
        Assert.True(Titans.Runtime.TorchSharpJit.KeepsArgumentsAlive);
        var ours = typeof(Titans.Memory.NeuralMemory).GetMethods().Where(m => m.DeclaringType == typeof(Titans.Memory.NeuralMemory)).ToList();
        Assert.NotEmpty(ours);
        Assert.All(ours, m => Assert.Equal((MethodImplAttributes)0, m.MethodImplementationFlags & MethodImplAttributes.NoOptimization));
    }

    /// <summary>Allocates hard on another thread while <paramref name="body"/> runs; the messages of what failed.</summary>
    static List<string> BesideAnAllocatingThread(int iterations, Action<int> body)
    {
        using var stop = new CancellationTokenSource();
        var allocator = new Thread(() =>
        {
            var garbage = new List<byte[]>();
            while (!stop.IsCancellationRequested)
            {
                garbage.Add(new byte[1000]);
                if (garbage.Count > 1000) garbage.Clear();
            }
        }) { IsBackground = true };
        allocator.Start();
        var failures = new List<string>();
        try
        {
            for (int i = 0; i < iterations; i++)
            {
                try { body(i); }
                catch (Exception e) { failures.Add($"iteration {i}: {e.Message.Split('\n')[0]}"); }
            }
        }
        finally
        {
            stop.Cancel();
            allocator.Join();
        }
        return failures;
    }

    /// <summary>Our own (optimized) code makes temporaries too: scalars converted on the way into TorchSharp, scalars read back.</summary>
    [Fact]
    public void ScalarsOurOptimizedCodeMakesSurviveCollectionsStartedByAnotherThread()
    {
        using var x = ones(1 << 16, dtype: ScalarType.Float64);         // calls long enough for a collection to land in one
        double expected = (1 << 16) * (1 * 0.5 + 1.5) * 2;
        var failures = BesideAnAllocatingThread(3_000, i =>
        {
            using var scope = NewDisposeScope();
            double total = x.mul(0.5).add(1.5).mul(2).sum().item<double>();
            if (total != expected) throw new InvalidOperationException($"{total} instead of {expected}");
        });
        Assert.True(failures.Count == 0, $"{failures.Count} failed: " + string.Join("\n", failures.Take(5)));
    }

    [Fact]
    public void OptimizerStepsSurviveCollectionsStartedByAnotherThread()
    {
        manual_seed(1);
        var parameters = Enumerable.Range(0, 200).Select(_ => new Parameter(randn(16))).ToList();
        using var optimizer = optim.AdamW(parameters, lr: 1e-3, weight_decay: 0.01);
        try
        {
            var failures = BesideAnAllocatingThread(1000, step =>
            {
                using var scope = NewDisposeScope();
                foreach (var p in parameters) p.grad = ones(16);
                optimizer.step();
            });
            Assert.True(failures.Count == 0, $"{failures.Count} failed: " + string.Join("\n", failures.Take(5)));
        }
        finally
        {
            foreach (var p in parameters) p.Dispose();
        }
    }
}
