using System.Globalization;
using Titans.Models;

namespace Titans.Cli.Commands;

/// <summary>
/// Every comma-separated option (--lengths, --horizons, --architectures, --models, --seeds, …) is read here, one way:
/// items trimmed, empty items skipped, each parsed by the option's rule for an item; a bad item is an error that names
/// the option and the item, and a list the option needs that names nothing is an error too.
/// </summary>
public static class Lists
{
    /// <summary>The items as text (none for null or blank text).</summary>
    public static IReadOnlyList<string> Items(string? text) =>
        string.IsNullOrWhiteSpace(text) ? [] : text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Each item parsed by <paramref name="item"/> (null for a bad one); <paramref name="takes"/> says what the option takes.</summary>
    public static IReadOnlyList<T> Parse<T>(string? text, string option, string takes, Func<string, T?> item) where T : struct =>
        Items(text).Select(s => item(s) ?? throw new ArgumentException($"{option} must be a comma-separated list of {takes}, got '{s}'.")).ToList();

    /// <summary>At least one item: an option whose list names nothing is an error.</summary>
    public static IReadOnlyList<T> NonEmpty<T>(IReadOnlyList<T> items, string option) =>
        items.Count > 0 ? items : throw new ArgumentException($"{option} names nothing; give at least one item.");

    public static IReadOnlyList<int> PositiveIntegers(string? text, string option) =>
        Parse<int>(text, option, "positive integers", s => int.TryParse(s.Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : null);

    public static IReadOnlyList<double> Numbers(string? text, string option) =>
        Parse<double>(text, option, "numbers", s => double.TryParse(s.Replace("_", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : null);

    /// <summary>The architectures named, each once (an unknown name is an error listing the architectures).</summary>
    public static IReadOnlyList<Architecture> Architectures(string? text, string option) =>
        NonEmpty(Items(text).Select(ArchitectureNames.Parse).Distinct().ToList(), option);
}
