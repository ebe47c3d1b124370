// Tests build modules after torch.manual_seed, and libtorch's default generator is process-wide: two test classes
// running at once would draw from it in interleaved order and get other weights than their seed says. libtorch already
// uses every core within a test, so running them one at a time costs little.
[assembly: Xunit.CollectionBehavior(DisableTestParallelization = true)]

namespace Titans.Tests
{
    static class TestProcess
    {
        /// <summary>As the CLI does: beside a titans process that trains, the suite and it share the cores instead of starving each other.</summary>
        [System.Runtime.CompilerServices.ModuleInitializer]
        internal static void ShareCores() => Titans.Runtime.CoreShare.Join();
    }
}
