using Microsoft.ML.Tokenizers;

namespace Titans.Text;

/// <summary>
/// OpenAI's byte-level BPE encodings <c>o200k_base</c> and <c>cl100k_base</c> through Microsoft.ML.Tokenizers; their
/// vocabularies ship in NuGet data packages, so nothing is downloaded. Every text round-trips exactly.
/// </summary>
public sealed class TiktokenBpeTokenizer : LibraryBpeTokenizer
{
    public static IReadOnlyList<string> Encodings { get; } = new[] { "o200k_base", "cl100k_base" };

    public TiktokenBpeTokenizer(string encoding) : this(encoding, Create(encoding)) { }

    TiktokenBpeTokenizer(string encoding, TiktokenTokenizer tokenizer) : base(tokenizer)
    {
        Encoding = encoding;
        // Special tokens are numbered after the merges, so the largest one bounds the ids.
        VocabularySize = tokenizer.SpecialTokens!.Values.Max() + 1;
    }

    static TiktokenTokenizer Create(string encoding) => Encodings.Contains(encoding)
        ? TiktokenTokenizer.CreateForEncoding(encoding)
        : throw new ArgumentException($"Unknown tiktoken encoding '{encoding}'; this build has {string.Join(", ", Encodings)}.", nameof(encoding));

    public string Encoding { get; }
    public override string Name => $"tiktoken/{Encoding}";
    public override int VocabularySize { get; }
}
