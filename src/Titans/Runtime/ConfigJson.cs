using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Titans.Runtime;

/// <summary>Shared by the configuration records: JSON round trips and validation errors that name the field.</summary>
public static class ConfigJson
{
    /// <summary>A field the type does not have is an error (a misspelt field must not silently keep its default).</summary>
    static readonly JsonSerializerOptions Options = new() { WriteIndented = true, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow };

    public static string Serialize<T>(T config) => JsonSerializer.Serialize(config, Options);

    /// <summary>
    /// Parses and validates; a malformed document, a field <typeparamref name="T"/> does not have (at any depth), a null
    /// where a section belongs, or an impossible value throws with the reason, naming the field.
    /// </summary>
    /// <param name="checkJson">More checks of the document itself (fields that must be given, fields that must agree).</param>
    public static T Parse<T>(string json, Func<T, T> validate, Action<JsonObject>? checkJson = null) where T : class, new()
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException e) { throw new ArgumentException($"Malformed {typeof(T).Name} JSON: {e.Message}", nameof(json), e); }
        if (node is not JsonObject given) throw new ArgumentException($"{typeof(T).Name} JSON must be an object, got {Describe(node)}.", nameof(json));
        CheckFields(given, JsonNode.Parse(Serialize(new T()))!.AsObject(), typeof(T).Name);
        checkJson?.Invoke(given);
        T? config;
        try { config = given.Deserialize<T>(Options); }
        catch (JsonException e) { throw new ArgumentException($"Malformed {typeof(T).Name} JSON: {e.Message}", nameof(json), e); }
        return validate(config ?? throw new ArgumentException($"{typeof(T).Name} JSON is null.", nameof(json)));
    }

    /// <summary>Every field of <paramref name="given"/> is one the defaults <paramref name="known"/> have; sections are objects.</summary>
    static void CheckFields(JsonObject given, JsonObject known, string path)
    {
        foreach (var (key, value) in given)
        {
            if (!known.TryGetPropertyValue(key, out var expected))
                throw new ArgumentException($"{path} has no field '{key}'; its fields are {string.Join(", ", known.Select(p => p.Key))}.");
            if (expected is JsonObject section)
            {
                if (value is not JsonObject inner) throw new ArgumentException($"{path}.{key} must be a JSON object, got {Describe(value)}.");
                CheckFields(inner, section, $"{path}.{key}");
            }
        }
    }

    static string Describe(JsonNode? node) => node is null ? "null" : node.GetValueKind().ToString().ToLowerInvariant();

    /// <summary>
    /// <paramref name="config"/> with the fields of a JSON object <paramref name="patch"/> set over it (e.g.
    /// <c>{"InitialInnerLearningRate": 0.01}</c>), validated. A field the type does not have is an error that names it.
    /// </summary>
    public static T Patch<T>(T config, string patch, Func<T, T> validate) where T : class, new()
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

    /// <summary>Whether <paramref name="config"/>'s JSON has a top-level field named <paramref name="path"/>'s first segment.</summary>
    public static bool HasField<T>(T config, string path) => JsonNode.Parse(Serialize(config))!.AsObject().ContainsKey(path.Split('.')[0]);

    /// <summary>
    /// <paramref name="config"/> with each assignment <c>Field.Path=value</c> made (the value a JSON literal, or else a
    /// string: <c>Architecture=Mac</c>), then parsed and validated by <paramref name="parse"/>, whose field check names a
    /// path the type does not have and the fields there.
    /// </summary>
    public static T Set<T>(T config, IEnumerable<string> assignments, Func<string, T> parse, Action<JsonObject, IReadOnlySet<string>>? adjust = null)
    {
        if (!assignments.Any()) return config;
        JsonObject root = JsonNode.Parse(Serialize(config))!.AsObject();
        var paths = new HashSet<string>();
        foreach (string assignment in assignments)
        {
            int equals = assignment.IndexOf('=');
            if (equals <= 0) throw new ArgumentException($"--set takes Field.Path=value, got '{assignment}'.");
            string path = assignment[..equals].Trim(), text = assignment[(equals + 1)..].Trim();
            string[] names = path.Split('.');
            JsonObject at = root;
            for (int i = 0; i < names.Length - 1; i++)
            {
                // A section the type does not have is made here and refused, named, by the parse's field check.
                if (!at.ContainsKey(names[i])) at[names[i]] = new JsonObject();
                at = at[names[i]] as JsonObject
                     ?? throw new ArgumentException($"{string.Join('.', [typeof(T).Name, .. names[..(i + 1)]])} is a value, not a section with fields.");
            }
            at[names[^1]] = Literal(text);
            paths.Add(path);
        }
        adjust?.Invoke(root, paths);
        return parse(root.ToJsonString());
    }

    static JsonNode? Literal(string text)
    {
        try { return JsonNode.Parse(text); }
        catch (JsonException) { return JsonValue.Create(text); }   // a bare word: a string (an enum's name)
    }

    /// <summary>Throws <see cref="ArgumentException"/> "Type.Field problem." unless <paramref name="ok"/>.</summary>
    public static void Require<T>(bool ok, string field, string problem)
    {
        if (!ok) throw new ArgumentException($"{typeof(T).Name}.{field} {problem}.", field);
    }
}
