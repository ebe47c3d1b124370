using Titans.Text;

namespace Titans.Tasks.LongContext;

/// <summary>The long-context tasks by name.</summary>
public static class LongContextTasks
{
    public static readonly IReadOnlyList<string> Names = new[] { "passkey", "number", "uuid", "qa1", "qa2", "qa3", "qa4", "qa5", "mqar" };

    /// <summary>Whether the task reads a real-text haystack (every one but the pass key, whose haystack is generated noise).</summary>
    public static bool ReadsText(string name) => !name.Equals("passkey", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// The task called <paramref name="name"/>; <paramref name="realText"/> gives the real-text haystack (only built for
    /// the tasks that use it: the pass key lives in RULER's noise).
    /// </summary>
    public static ILongContextTask Create(string name, ITokenizer tokenizer, Func<Haystack> realText) => name.ToLowerInvariant() switch
    {
        "passkey" => new NeedleTask(NeedleForm.PassKey, tokenizer, Haystack.Noise(tokenizer)),
        "number" => new NeedleTask(NeedleForm.Number, tokenizer, realText()),
        "uuid" => new NeedleTask(NeedleForm.Uuid, tokenizer, realText()),
        "qa1" or "qa2" or "qa3" or "qa4" or "qa5" => new BabiTask(name[^1] - '0', tokenizer, realText()),
        "mqar" => new MqarTask(tokenizer, realText()),
        _ => throw new ArgumentException($"Unknown task '{name}'; the tasks are {string.Join(", ", Names)}."),
    };
}
