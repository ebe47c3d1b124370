namespace Titans.Text;

/// <summary>Text ↔ token ids. <see cref="ByteCount"/> is what bits-per-byte divides by.</summary>
public interface ITokenizer
{
    /// <summary>Saved in checkpoints so a model is always read with the tokenizer it was trained with.</summary>
    string Name { get; }
    int VocabularySize { get; }
    long[] Encode(string text);
    string Decode(ReadOnlySpan<long> tokens);
    /// <summary>UTF-8 bytes the tokens stand for.</summary>
    long ByteCount(ReadOnlySpan<long> tokens);
    /// <summary>What <see cref="ByteCount"/> counts, for reports ("bits per byte"; nucleotides for DNA).</summary>
    string ByteUnit => "byte";
    /// <summary>The tokenizer's model file where it is not built in (SentencePiece), stored inside checkpoints.</summary>
    byte[]? ModelFile => null;
}
