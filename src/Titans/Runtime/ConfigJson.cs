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
        JsonNode? node = ParseText<T>(json, "JSON");
        if (node is not JsonObject given) throw new ArgumentException($"{typeof(T).Name} JSON must be an object, got {Describe(node)}.", nameof(json));
        CheckFields(given, JsonNode.Parse(Serialize(new T()))!.AsObject(), typeof(T).Name);
        checkJson?.Invoke(given);
        T? config;
        try { config = given.Deserialize<T>(Options); }
        catch (JsonException e) { throw new ArgumentException(WrongType<T>(e, given), nameof(json), e); }
        return validate(config ?? throw new ArgumentException($"{typeof(T).Name} JSON is null.", nameof(json)));
    }

    /// <summary>What people write in JSON by hand is read: comments and a trailing comma.</summary>
    static readonly JsonDocumentOptions Lenient = new() { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip };

    /// <summary>The document, or an error that says where it is malformed, in the user's terms (lines and characters from 1).</summary>
    static JsonNode? ParseText<T>(string json, string what)
    {
        try { return JsonNode.Parse(json, documentOptions: Lenient); }
        catch (JsonException e)
        {
            string where = e.LineNumber is long line && e.BytePositionInLine is long at ? $" (line {line + 1}, character {at + 1})" : "";
            throw new ArgumentException($"Malformed {typeof(T).Name} {what}: {Plain(e.Message)}{where}.", nameof(json), e);
        }
    }

    /// <summary>.NET's message without its coordinates (0-based, given separately) and its advice to programmers.</summary>
    static string Plain(string message) =>
        System.Text.RegularExpressions.Regex.Replace(message, @"\s*(Path: \S*\s*\|\s*)?LineNumber: \d+ \| BytePositionInLine: \d+\.?", "")
            .Replace(" Change the reader options.", "").Trim().TrimEnd('.');

    /// <summary>
    /// A value of the wrong kind for its field ("eight" for a whole number), named by the field's path and the kind it
    /// takes. The document may be one this library assembled (a patch over defaults), so no position in it is given.
    /// </summary>
    static string WrongType<T>(JsonException e, JsonObject document)
    {
        if (e.Path is not string path || !path.StartsWith("$.")) return $"Malformed {typeof(T).Name} JSON: {Plain(e.Message)}.";
        string field = path[2..];
        JsonNode? value = document;
        foreach (string name in field.Split('.')) value = value is JsonObject o && o.TryGetPropertyValue(name, out var next) ? next : null;
        var type = System.Text.RegularExpressions.Regex.Match(e.Message, @"converted to ([\w.`\[\],]+)") is { Success: true } m ? m.Groups[1].Value.TrimEnd('.') : "";
        string takes = type switch
        {
            _ when type.Contains("Int32") || type.Contains("Int64") => "a whole number",
            _ when type.Contains("Double") || type.Contains("Single") => "a number",
            _ when type.Contains("Boolean") => "true or false",
            _ when type.Contains("String") => "a string",
            _ when type.StartsWith("Titans.") => $"one of {string.Join(", ", EnumNames(type))}",
            _ => "another kind of value",
        };
        return $"{typeof(T).Name}.{field} takes {takes}, got {value?.ToJsonString() ?? "null"}.";
    }

    static IEnumerable<string> EnumNames(string typeName) =>
        typeof(ConfigJson).Assembly.GetType(typeName.TrimEnd(']').Replace("System.Nullable`1[", "")) is { IsEnum: true } enumType ? Enum.GetNames(enumType) : ["its named values"];

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
        JsonObject changes = ParseText<T>(patch, "JSON patch") as JsonObject
                             ?? throw new ArgumentException($"A {typeof(T).Name} patch must be a JSON object, got: {patch}", nameof(patch));
        foreach (var (key, value) in changes.ToList())
        {
            if (!target.ContainsKey(key))
                throw new ArgumentException($"{typeof(T).Name} has no field '{key}'; its fields are {string.Join(", ", target.Select(p => p.Key))}.", nameof(patch));
            // The one merge rule (as Set's): a section given as an object keeps the fields it does not name.
            if (value is JsonObject fields && target[key] is JsonObject section) Merge(section, fields, key, new HashSet<string>());
            else target[key] = value?.DeepClone();
        }
        return Parse(target.ToJsonString(), validate);
    }

    /// <summary>Whether <paramref name="config"/>'s JSON has a top-level field named <paramref name="path"/>'s first segment.</summary>
    public static bool HasField<T>(T config, string path) => JsonNode.Parse(Serialize(config))!.AsObject().ContainsKey(path.Split('.')[0]);

    /// <summary>
    /// <paramref name="config"/> with each assignment <c>Field.Path=value</c> made (the value a JSON literal, or else a
    /// string: <c>Architecture=Mac</c>), then parsed and validated by <paramref name="parse"/>, whose field check names a
    /// path the type does not have and the fields there. The one merge rule of every configuration option: a JSON object
    /// given for a section sets the fields it names and keeps the others (<c>Memory={"ChunkSize": 8}</c> changes the
    /// chunk size alone), as a value set by path does. <paramref name="adjust"/> is told every path set, an object's
    /// fields included.
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
            JsonNode? value = Literal(text);
            if (value is JsonObject fields && at[names[^1]] is JsonObject section) Merge(section, fields, path, paths);
            else
            {
                at[names[^1]] = value;
                paths.Add(path);
            }
        }
        adjust?.Invoke(root, paths);
        return parse(root.ToJsonString());
    }

    /// <summary>Sets each field of <paramref name="fields"/> over <paramref name="section"/>, recursively into sections.</summary>
    static void Merge(JsonObject section, JsonObject fields, string path, ISet<string> paths)
    {
        foreach (var (key, value) in fields.ToList())
        {
            if (value is JsonObject inner && section[key] is JsonObject existing) Merge(existing, inner, $"{path}.{key}", paths);
            else
            {
                section[key] = value?.DeepClone();
                paths.Add($"{path}.{key}");
            }
        }
    }

    /// <summary>The text as a JSON object, or an error that says where it is malformed (for options that take one).</summary>
    public static JsonObject ParseObject<T>(string json, string what)
    {
        var node = ParseText<T>(json, what);
        return node as JsonObject ?? throw new ArgumentException($"A {typeof(T).Name} {what} must be a JSON object, got: {json}", nameof(json));
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
