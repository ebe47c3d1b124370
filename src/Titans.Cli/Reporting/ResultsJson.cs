using System.Text.Json;
using System.Text.Json.Serialization;

namespace Titans.Cli.Reporting;

/// <summary>
/// Result files (results.json) as indented JSON. A score that is NaN or infinite (a model that diverged, an empty part)
/// is written as the string "NaN" / "Infinity", which Python's and .NET's readers accept, so a report never fails after the
/// training it reports on.
/// </summary>
public static class ResultsJson
{
    static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, Options);
}
