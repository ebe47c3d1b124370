using System.Text;

namespace Titans.Text;

/// <summary>
/// One token per nucleotide: <c>A C G T</c> and <c>N</c> (unknown base), in either case, plus a padding token and a
/// separator between records (decoded as a newline). Vocabulary 7. Bits per token are bits per nucleotide (separators
/// are not nucleotides, so <see cref="ByteCount"/> leaves them out).
/// </summary>
public sealed class NucleotideTokenizer : ITokenizer
{
    public static readonly NucleotideTokenizer Instance = new();
    public const long Padding = 0, Separator = 1;
    const string Bases = "ACGTN";

    public string Name => "nucleotides";
    public int VocabularySize => 2 + Bases.Length;

    /// <summary>The id of a base (any case); anything else is an error naming the character and its (0-based) position, printed 1-based.</summary>
    public static long Id(char c, int position = -1) => char.ToUpperInvariant(c) switch
    {
        'A' => 2, 'C' => 3, 'G' => 4, 'T' => 5, 'N' => 6,
        _ => throw new InvalidDataException($"'{Printable(c)}'{(position >= 0 ? $" (base {position + 1})" : "")} is not a nucleotide (A, C, G, T or N)."),
    };

    static string Printable(char c) => char.IsControl(c) || char.IsWhiteSpace(c) ? $"U+{(int)c:X4}" : c.ToString();

    /// <summary>A sequence of bases; a newline separates records (as <see cref="Decode"/> writes them).</summary>
    public long[] Encode(string text)
    {
        var tokens = new long[text.Length];
        for (int i = 0; i < text.Length; i++) tokens[i] = text[i] == '\n' ? Separator : Id(text[i], i);
        return tokens;
    }

    public string Decode(ReadOnlySpan<long> tokens)
    {
        var text = new StringBuilder(tokens.Length);
        foreach (long t in tokens)
            text.Append(t switch
            {
                Padding => "",
                Separator => "\n",
                >= 2 and < 7 => Bases[(int)t - 2].ToString(),
                _ => throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {t} is not a nucleotide token."),
            });
        return text.ToString();
    }

    public string ByteUnit => "nucleotide";

    public long ByteCount(ReadOnlySpan<long> tokens)
    {
        long count = 0;
        foreach (long t in tokens) if (t >= 2) count++;
        return count;
    }
}
