using System.Text;
using Microsoft.ML.Tokenizers;

namespace Titans.Text;

/// <summary>
/// OpenAI's byte-level BPE encodings <c>o200k_base</c> and <c>cl100k_base</c> through Microsoft.ML.Tokenizers; their
/// vocabularies ship in NuGet data packages, so nothing is downloaded. Every text round-trips exactly.
/// </summary>
public sealed class TiktokenBpeTokenizer : ITokenizer
{
    public static IReadOnlyList<string> Encodings { get; } = new[] { "o200k_base", "cl100k_base" };

    readonly TiktokenTokenizer tokenizer;

    public TiktokenBpeTokenizer(string encoding)
    {
        if (!Encodings.Contains(encoding))
            throw new ArgumentException($"Unknown tiktoken encoding '{encoding}'; this build has {string.Join(", ", Encodings)}.", nameof(encoding));
        Encoding = encoding;
        tokenizer = TiktokenTokenizer.CreateForEncoding(encoding);
        // Special tokens are numbered after the merges, so the largest one bounds the ids.
        VocabularySize = tokenizer.SpecialTokens!.Values.Max() + 1;
    }

    public string Encoding { get; }
    public string Name => $"tiktoken/{Encoding}";
    public int VocabularySize { get; }

    public long[] Encode(string text) => tokenizer.EncodeToIds(text).Select(id => (long)id).ToArray();

    public string Decode(ReadOnlySpan<long> tokens) => tokenizer.Decode(Ids(tokens, VocabularySize));

    /// <summary>The UTF-8 length of the decoded text: exact except where a cut splits a character.</summary>
    public long ByteCount(ReadOnlySpan<long> tokens) => System.Text.Encoding.UTF8.GetByteCount(Decode(tokens));

    internal static int[] Ids(ReadOnlySpan<long> tokens, int vocabulary)
    {
        var ids = new int[tokens.Length];
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((ulong)tokens[i] >= (ulong)vocabulary)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {tokens[i]} at {i} is outside the vocabulary of {vocabulary}.");
            ids[i] = (int)tokens[i];
        }
        return ids;
    }
}
