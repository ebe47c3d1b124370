using Microsoft.ML.Tokenizers;

namespace Titans.Text;

/// <summary>
/// What the BPE tokenizers of Microsoft.ML.Tokenizers share: encoding, decoding with a vocabulary check, and a byte
/// count from the decoded text. Subclasses name the tokenizer and its vocabulary.
/// </summary>
public abstract class LibraryBpeTokenizer(Tokenizer tokenizer) : ITokenizer
{
    public abstract string Name { get; }
    public abstract int VocabularySize { get; }
    public virtual byte[]? ModelFile => null;

    public long[] Encode(string text) => tokenizer.EncodeToIds(text).Select(id => (long)id).ToArray();

    public string Decode(ReadOnlySpan<long> tokens)
    {
        var ids = new int[tokens.Length];
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((ulong)tokens[i] >= (ulong)VocabularySize)
                throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {tokens[i]} at {i} is outside the vocabulary of {VocabularySize}.");
            ids[i] = (int)tokens[i];
        }
        return tokenizer.Decode(ids);
    }

    /// <summary>The UTF-8 length of the decoded text: exact except where a cut splits a character (or, for
    /// SentencePiece, a leading space).</summary>
    public long ByteCount(ReadOnlySpan<long> tokens) => System.Text.Encoding.UTF8.GetByteCount(Decode(tokens));
}
