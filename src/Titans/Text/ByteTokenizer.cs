using System.Text;

namespace Titans.Text;

/// <summary>
/// One token per UTF-8 byte (vocabulary 256): needs no training data or files, and loss per token is loss per byte.
/// Decoding a cut that splits a multi-byte character shows U+FFFD for the partial character.
/// </summary>
public sealed class ByteTokenizer : ITokenizer
{
    public static readonly ByteTokenizer Instance = new();
    public string Name => "bytes";
    public int VocabularySize => 256;

    public long[] Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var tokens = new long[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) tokens[i] = bytes[i];
        return tokens;
    }

    public string Decode(ReadOnlySpan<long> tokens)
    {
        var bytes = new byte[tokens.Length];
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((ulong)tokens[i] > 255) throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {tokens[i]} at {i} is not a byte.");
            bytes[i] = (byte)tokens[i];
        }
        return Encoding.UTF8.GetString(bytes);
    }

    public long ByteCount(ReadOnlySpan<long> tokens) => tokens.Length;
}
