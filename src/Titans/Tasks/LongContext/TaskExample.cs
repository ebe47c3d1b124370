namespace Titans.Tasks.LongContext;

/// <summary>An answer inside an example: tokens [<see cref="Start"/>, Start + <see cref="Length"/>) spell <see cref="Text"/>.</summary>
public sealed record AnswerSpan(int Start, int Length, string Text);

/// <summary>
/// One long-context example: exactly the requested number of tokens (haystack, needles, question, answers), which
/// answer spans a model must predict (each token from the ones before it), and for checking it: the needle depth asked
/// for, the facts or needles inserted, the question, and where the earliest needle or fact begins
/// (<paramref name="EvidenceStart"/>, a token index: how far back a model must read to answer).
/// </summary>
public sealed record TaskExample(long[] Tokens, IReadOnlyList<AnswerSpan> Answers, double Depth, IReadOnlyList<string> Facts, string Question,
    int EvidenceStart)
{
    public int Length => Tokens.Length;

    /// <summary>The input positions that predict an answer token (each the one before it), the answers one after another.</summary>
    public IEnumerable<int> AnswerInputs => Answers.SelectMany(a => Enumerable.Range(a.Start - 1, a.Length));
}
