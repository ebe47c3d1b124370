using Titans.Text;

namespace Titans.Tasks.LongContext;

/// <summary>A piece of an example's text; answer pieces are what the model is scored on.</summary>
public sealed record Piece(string Text, bool IsAnswer = false);

/// <summary>
/// Builds an example: haystack filler with groups of pieces (needles, facts) inserted at sentence starts near their
/// relative positions (sentence starts, else word starts, within <see cref="MaxShift"/> tokens), then the tail (question and answers). Every piece is tokenized on its own, so an answer has the
/// same tokens wherever it occurs, and the filler is cut so the whole is exactly the requested length.
/// </summary>
public sealed class ExampleAssembler(string task, ITokenizer tokenizer, Haystack haystack)
{
    readonly Dictionary<string, long[]> cache = new();

    long[] Encode(string text)
    {
        if (!cache.TryGetValue(text, out var tokens))
        {
            tokens = tokenizer.Encode(text);
            if (cache.Count < 10_000) cache[text] = tokens;
        }
        return tokens;
    }

    /// <summary>The task's shortest length for any example (its <see cref="ILongContextTask.MinimumLength"/>); 0 until the task sets it.</summary>
    public int MinimumLength { get; set; }

    /// <summary>Tokens the pieces take.</summary>
    public int Count(IEnumerable<Piece> pieces) => pieces.Sum(p => Encode(p.Text).Length);

    public TaskExample Assemble(int length, double depth, IReadOnlyList<(double Position, IReadOnlyList<Piece> Pieces)> insertions,
        IReadOnlyList<Piece> tail, Random random, bool evaluation, IReadOnlyList<string> facts, string question)
    {
        int fixedTokens = insertions.Sum(i => Count(i.Pieces)) + Count(tail);
        int filler = length - fixedTokens;
        // Below the task's minimum every example is refused, not only those whose words happen to be long, so the
        // bound `task list` prints is the one every command enforces.
        if (filler < 0 || length < MinimumLength)
            throw new ArgumentException($"A {task} example needs at least {Math.Max(fixedTokens, MinimumLength)} tokens for its needles, question and answers; {length} is too short.");
        var (fill, starts, words) = haystack.Take(filler, random, evaluation);
        // The filler's end is a sentence start for a needle; its very start (often mid-sentence) only a word start.
        starts.Add(filler);
        if (words.Count == 0 || words[0] != 0) words.Insert(0, 0);
        words.Add(filler);
        var tokens = new List<long>(length);
        var answers = new List<AnswerSpan>();
        void Append(IEnumerable<Piece> pieces)
        {
            foreach (var piece in pieces)
            {
                var encoded = Encode(piece.Text);
                if (piece.IsAnswer) answers.Add(new AnswerSpan(tokens.Count, encoded.Length, piece.Text));
                tokens.AddRange(encoded);
            }
        }
        int used = 0;
        int? evidence = null;
        foreach (var (position, pieces) in insertions.OrderBy(i => i.Position))
        {
            int at = Place(starts, words, position * filler, used);
            tokens.AddRange(fill.AsSpan(used, at - used).ToArray());
            used = at;
            evidence ??= tokens.Count;
            Append(pieces);
        }
        tokens.AddRange(fill.AsSpan(used).ToArray());
        evidence ??= tokens.Count;
        Append(tail);
        if (tokens.Count != length) throw new InvalidOperationException($"Assembled {tokens.Count} tokens for a {length}-token {task} example.");
        return new TaskExample(tokens.ToArray(), answers, depth, facts, question, evidence.Value);
    }

    /// <summary>
    /// A needle lands at most this many tokens from the depth asked for: at a sentence start if one is that close, else
    /// at a word start, else (a very long word) exactly there.
    /// </summary>
    public const int MaxShift = 24;

    static int Place(List<int> sentences, List<int> words, double target, int notBefore) =>
        Nearest(sentences, target, notBefore) ?? Nearest(words, target, notBefore) ?? Math.Max(notBefore, (int)Math.Round(target));

    /// <summary>The place nearest to <paramref name="target"/>, not before <paramref name="notBefore"/>, if within <see cref="MaxShift"/>.</summary>
    static int? Nearest(List<int> places, double target, int notBefore)
    {
        int best = places[^1];
        foreach (int s in places)
            if (s >= notBefore && Math.Abs(s - target) < Math.Abs(best - target)) best = s;
        return Math.Abs(best - target) <= MaxShift ? best : null;
    }
}
