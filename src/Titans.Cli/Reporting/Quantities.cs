namespace Titans.Cli.Reporting;

/// <summary>How counts are written in tables and messages.</summary>
public static class Quantities
{
    /// <summary>A parameter or token count in thousands or millions: 133.4K, 14.4M.</summary>
    public static string Count(long n) => n >= 1_000_000 ? $"{n / 1e6:F1}M" : $"{n / 1e3:F1}K";
}
