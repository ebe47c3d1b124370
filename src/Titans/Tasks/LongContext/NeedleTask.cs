using Titans.Text;

namespace Titans.Tasks.LongContext;

/// <summary>RULER's three single-needle forms.</summary>
public enum NeedleForm
{
    /// <summary>A 5-digit pass key in repeated noise sentences.</summary>
    PassKey,
    /// <summary>A 7-digit number under a key word, hidden in real text.</summary>
    Number,
    /// <summary>A UUID under a key word, hidden in real text.</summary>
    Uuid,
}

/// <summary>
/// Single-needle retrieval (S-NIAH, after RULER): one needle sentence at the requested depth of the haystack, the
/// question at the end, then the value as the answer. The value occurs in the example exactly twice for the pass key's
/// "… is 12345. Remember it. 12345 is the pass key." needle, once for the others, and once more as the answer; values
/// (and key words) that occur in the haystack are drawn again. Templates are shorter than RULER's so a question fits a
/// 256-token context.
/// </summary>
public sealed class NeedleTask : ILongContextTask
{
    /// <summary>Key words for the number and UUID forms.</summary>
    static readonly string[] Words =
    {
        "apple", "river", "candle", "falcon", "garden", "harbor", "island", "jacket", "kettle", "lantern", "meadow", "needle",
        "orchid", "pepper", "quartz", "rocket", "saddle", "tulip", "violin", "walnut", "yogurt", "zebra", "anchor", "button",
        "cactus", "dragon", "engine", "feather", "glacier", "hammer", "igloo", "jungle", "koala", "ladder", "magnet", "nutmeg",
        "oyster", "parrot", "rabbit", "silver", "teapot", "umbrella", "velvet", "window", "yarrow", "zipper",
    };

    readonly NeedleForm form;
    readonly Haystack haystack;
    readonly ExampleAssembler assembler;

    public NeedleTask(NeedleForm form, ITokenizer tokenizer, Haystack haystack)
    {
        this.form = form;
        this.haystack = haystack;
        assembler = new ExampleAssembler(Name, tokenizer, haystack);
        var longest = Build(Words.MaxBy(w => w.Length)!, form switch { NeedleForm.PassKey => "00000", NeedleForm.Number => "0000000", _ => Guid.Empty.ToString() });
        MinimumLength = assembler.Count(longest.Needle) + assembler.Count(longest.Tail);
        assembler.MinimumLength = MinimumLength;
    }

    public string Name => form switch { NeedleForm.PassKey => "passkey", NeedleForm.Number => "number", _ => "uuid" };

    public string Description => form switch
    {
        NeedleForm.PassKey => "S-NIAH pass key: a 5-digit key in repeated noise sentences",
        NeedleForm.Number => $"S-NIAH number: a 7-digit number under a key word, hidden in {haystack.Name}",
        _ => $"S-NIAH UUID: a UUID under a key word, hidden in {haystack.Name}",
    };

    public bool HasDepth => true;
    public int MinimumLength { get; }

    public TaskExample Generate(int length, double depth, Random random, bool evaluation)
    {
        if (depth is < 0 or > 1 || double.IsNaN(depth)) throw new ArgumentException($"The needle depth must lie in [0, 1], got {depth}.");
        for (int attempt = 0; ; attempt++)
        {
            string word = Words[random.Next(Words.Length)];
            string value = form switch
            {
                NeedleForm.PassKey => random.Next(10_000, 100_000).ToString(),
                NeedleForm.Number => random.Next(1_000_000, 10_000_000).ToString(),
                _ => RandomUuid(random),
            };
            if (haystack.Contains(value) && attempt < 100) continue;
            var (needle, tail, question) = Build(word, value);
            string sentence = string.Concat(needle.Select(p => p.Text)).Trim();
            return assembler.Assemble(length, depth, new[] { (depth, (IReadOnlyList<Piece>)needle) }, tail, random, evaluation,
                new[] { sentence }, question);
        }
    }

    (Piece[] Needle, Piece[] Tail, string Question) Build(string word, string value)
    {
        switch (form)
        {
            case NeedleForm.PassKey:
                return (new Piece[] { new("The pass key is "), new(value), new(". Remember it. "), new(value), new(" is the pass key. ") },
                    new Piece[] { new("What is the pass key? The pass key is "), new(value, IsAnswer: true) },
                    "What is the pass key?");
            default:
                string kind = form == NeedleForm.Number ? "number" : "uuid";
                string question = $"What is the magic {kind} for {word}?";
                return (new Piece[] { new($"The magic {kind} for {word} is "), new(value), new(". ") },
                    new Piece[] { new($"{question} The magic {kind} for {word} is "), new(value, IsAnswer: true) },
                    question);
        }
    }

    /// <summary>A version-4 UUID from the seeded generator (Guid.NewGuid would not be reproducible).</summary>
    static string RandomUuid(Random random)
    {
        var bytes = new byte[16];
        random.NextBytes(bytes);
        bytes[7] = (byte)(bytes[7] & 0x0F | 0x40);      // version 4 (Guid's byte order puts it in byte 7)
        bytes[8] = (byte)(bytes[8] & 0x3F | 0x80);      // RFC 4122 variant
        return new Guid(bytes).ToString("D");
    }
}
