using System.Text.Json;

namespace Titans.Runtime;

/// <summary>Shared by the configuration records: JSON round trips and validation errors that name the field.</summary>
public static class ConfigJson
{
    static readonly JsonSerializerOptions Options = new() { WriteIndented = true };

    public static string Serialize<T>(T config) => JsonSerializer.Serialize(config, Options);

    /// <summary>Parses and validates; a malformed document or an impossible value throws with the reason.</summary>
    public static T Parse<T>(string json, Func<T, T> validate) where T : class
    {
        T? config;
        try { config = JsonSerializer.Deserialize<T>(json, Options); }
        catch (JsonException e) { throw new ArgumentException($"Malformed {typeof(T).Name} JSON: {e.Message}", nameof(json), e); }
        return validate(config ?? throw new ArgumentException($"{typeof(T).Name} JSON is null.", nameof(json)));
    }

    /// <summary>Throws <see cref="ArgumentException"/> "Type.Field problem." unless <paramref name="ok"/>.</summary>
    public static void Require<T>(bool ok, string field, string problem)
    {
        if (!ok) throw new ArgumentException($"{typeof(T).Name}.{field} {problem}.", field);
    }
}
