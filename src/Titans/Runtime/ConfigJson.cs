using System.Text.Json;
using System.Text.Json.Nodes;

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

    /// <summary>
    /// <paramref name="config"/> with the fields of a JSON object <paramref name="patch"/> set over it (e.g.
    /// <c>{"InitialInnerLearningRate": 0.01}</c>), validated. A field the type does not have is an error that names it.
    /// </summary>
    public static T Patch<T>(T config, string patch, Func<T, T> validate) where T : class
    {
        JsonObject target = JsonNode.Parse(Serialize(config))!.AsObject();
        JsonObject changes;
        try { changes = JsonNode.Parse(patch) as JsonObject ?? throw new ArgumentException($"A {typeof(T).Name} patch must be a JSON object, got: {patch}"); }
        catch (JsonException e) { throw new ArgumentException($"Malformed {typeof(T).Name} JSON patch: {e.Message}", nameof(patch), e); }
        foreach (var (key, value) in changes.ToList())
        {
            if (!target.ContainsKey(key))
                throw new ArgumentException($"{typeof(T).Name} has no field '{key}'; its fields are {string.Join(", ", target.Select(p => p.Key))}.", nameof(patch));
            target[key] = value?.DeepClone();
        }
        return Parse(target.ToJsonString(), validate);
    }

    /// <summary>Throws <see cref="ArgumentException"/> "Type.Field problem." unless <paramref name="ok"/>.</summary>
    public static void Require<T>(bool ok, string field, string problem)
    {
        if (!ok) throw new ArgumentException($"{typeof(T).Name}.{field} {problem}.", field);
    }
}
