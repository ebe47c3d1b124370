namespace Titans.Tests;

/// <summary>A theory that runs only with <c>TITANS_SLOW_TESTS=1</c> (it takes minutes); otherwise reported as skipped, with the reason.</summary>
public sealed class SlowTheoryAttribute : TheoryAttribute
{
    public SlowTheoryAttribute()
    {
        if (Environment.GetEnvironmentVariable("TITANS_SLOW_TESTS") != "1") Skip = "slow: set TITANS_SLOW_TESTS=1 to run it";
    }
}
