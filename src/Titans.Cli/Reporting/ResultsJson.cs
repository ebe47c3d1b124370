using System.Text.Json;
using System.Text.Json.Serialization;

namespace Titans.Cli.Reporting;

/// <summary>
/// Result files (results.json, metrics.jsonl) as JSON. A number that is NaN or infinite (a model that diverged, an empty
/// part) is written as the string "NaN" / "Infinity" / "-Infinity" (JSON has no such numbers; .NET reads them back with
/// <see cref="JsonNumberHandling.AllowNamedFloatingPointLiterals"/>, Python as strings, <c>float(s)</c> converts), so a
/// report never fails after the training it reports on.
/// </summary>
public static class ResultsJson
{
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };
    static readonly JsonSerializerOptions Line = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>Indented, for a results file.</summary>
    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, Indented);

    /// <summary>One line, for a log of records (metrics.jsonl).</summary>
    public static string SerializeLine<T>(T value) => JsonSerializer.Serialize(value, Line);
}
