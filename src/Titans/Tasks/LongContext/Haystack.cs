using System.Text;
using System.Text.RegularExpressions;
using Titans.Text;

namespace Titans.Tasks.LongContext;

/// <summary>
/// Filler text for long-context examples, kept as tokens cut at sentence starts so a needle goes in between sentences.
/// A text haystack keeps its last <see cref="EvaluationFraction"/> apart: training examples draw from the head and
/// evaluation examples from the tail, so a model is never scored on filler it was trained on. Whitespace runs are
/// collapsed to one space (hard-wrapped books become flowing text). Slices longer than a part wrap around within it.
/// </summary>
public sealed partial class Haystack
{
    public const double EvaluationFraction = 0.1;

    /// <summary>RULER's pass-key noise: five sentences repeated for as long as needed.</summary>
    public const string NoiseText = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

    public string Name { get; }
    readonly long[] tokens;
    readonly int[] starts;            // token index of every sentence start, ascending; starts[0] = 0
    readonly int[] words;             // token index of every word start, ascending
    readonly int evaluationStart;     // the first sentence of the evaluation part (0 when both parts are the whole)
    readonly string text;             // the sentences joined by spaces, for checks that needles do not occur in the filler
    // MQAR checks 8 three-letter keys per example: each is scanned for once. Bounded, since numbers and UUIDs never repeat.
    readonly Dictionary<string, bool> contains = new();
    const int ContainsCacheSize = 20_000;

    Haystack(string name, IReadOnlyList<string> sentenceTexts, ITokenizer tokenizer, bool split)
    {
        Name = name;
        var all = new List<long>();
        var startList = new List<int>();
        var wordList = new List<int>();
        var encoded = new Dictionary<string, long[]>();
        // Word by word (each with its trailing space), so a needle can go between words where no sentence ends nearby.
        foreach (string sentence in sentenceTexts)
        {
            startList.Add(all.Count);
            foreach (string word in sentence.Split(' '))
            {
                wordList.Add(all.Count);
                if (!encoded.TryGetValue(word, out var wordTokens)) encoded[word] = wordTokens = tokenizer.Encode(word + " ");
                all.AddRange(wordTokens);
            }
        }
        tokens = all.ToArray();
        starts = startList.ToArray();
        words = wordList.ToArray();
        text = string.Join(' ', sentenceTexts);
        evaluationStart = split ? (int)Math.Floor(starts.Length * (1 - EvaluationFraction)) : 0;
        if (split && (evaluationStart < 2 || starts.Length - evaluationStart < 2))
            throw new ArgumentException($"The haystack '{name}' has {starts.Length} sentences; it needs at least 20 to keep a training and an evaluation part.");
    }

    /// <summary>A haystack of real text: split into sentences after '.', '!' or '?'.</summary>
    public static Haystack FromText(string name, string text, ITokenizer tokenizer)
    {
        string flowing = Whitespace().Replace(text, " ").Trim();
        var pieces = SentenceEnd().Split(flowing).Where(s => s.Length > 0).ToList();
        if (pieces.Count == 0) throw new InvalidDataException($"The haystack '{name}' holds no text.");
        return new Haystack(name, pieces, tokenizer, split: true);
    }

    /// <summary>RULER's repeated noise sentences (<see cref="NoiseText"/>).</summary>
    public static Haystack Noise(ITokenizer tokenizer) =>
        new("noise", SentenceEnd().Split(NoiseText), tokenizer, split: false);

    /// <summary>Whether a string occurs in any sentence of the haystack (needles and keys must not).</summary>
    public bool Contains(string value)
    {
        if (contains.TryGetValue(value, out bool found)) return found;
        found = text.Contains(value, StringComparison.Ordinal);
        if (contains.Count < ContainsCacheSize) contains[value] = found;
        return found;
    }

    /// <summary>
    /// <paramref name="count"/> tokens of filler from the training or evaluation part that end where a sentence ends (so
    /// what follows starts cleanly; like any window of a book, the filler may begin mid-sentence), and the offsets
    /// within them where sentences and words start.
    /// </summary>
    public (long[] Tokens, List<int> SentenceStarts, List<int> WordStarts) Take(int count, Random random, bool evaluation)
    {
        int firstSentence = evaluation ? evaluationStart : 0;
        int endSentence = evaluation || evaluationStart == 0 ? starts.Length : evaluationStart;
        // Whole sentences from a random one until there are enough, then the surplus is dropped from the front.
        var pieces = new List<(int From, int To)>();
        long total = 0;
        for (int sentence = random.Next(firstSentence, endSentence); total < count;)
        {
            int from = starts[sentence], to = sentence + 1 < starts.Length ? starts[sentence + 1] : tokens.Length;
            pieces.Add((from, to));
            total += to - from;
            if (++sentence == endSentence) sentence = firstSentence;
        }
        int skip = (int)(total - count);
        var result = new long[count];
        var boundaries = new List<int>();
        var wordStarts = new List<int>();
        int written = 0, offset = -skip;
        foreach (var (from, to) in pieces)
        {
            if (offset >= 0) boundaries.Add(offset);
            int w = Array.BinarySearch(words, from);
            for (w = w < 0 ? ~w : w; w < words.Length && words[w] < to; w++)
                if (offset + words[w] - from >= 0) wordStarts.Add(offset + words[w] - from);
            int begin = from + Math.Max(0, -offset);              // the part of this sentence that is kept
            if (begin < to)
            {
                Array.Copy(tokens, begin, result, written, to - begin);
                written += to - begin;
            }
            offset += to - from;
        }
        return (result, boundaries, wordStarts);
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    [GeneratedRegex(@"(?<=[.!?][""'’”)]?)\s+")]
    private static partial Regex SentenceEnd();
}
