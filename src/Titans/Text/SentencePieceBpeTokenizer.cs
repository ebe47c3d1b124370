using System.Security.Cryptography;
using Microsoft.ML.Tokenizers;

namespace Titans.Text;

/// <summary>
/// A SentencePiece BPE model (a <c>.model</c> file, as Debian's <c>spm_train</c> writes) through Microsoft.ML.Tokenizers.
/// The file travels inside every checkpoint, so a model is always read back with its own tokenizer. For text to
/// round-trip exactly, train it with <c>--byte_fallback=true --normalization_rule_name=identity
/// --remove_extra_whitespaces=false</c> (docs/tokenizers.md).
/// </summary>
public sealed class SentencePieceBpeTokenizer : ITokenizer
{
    readonly SentencePieceTokenizer tokenizer;
    readonly byte[] model;

    public SentencePieceBpeTokenizer(byte[] modelFile, string source)
    {
        model = modelFile;
        try
        {
            using var stream = new MemoryStream(modelFile, writable: false);
            tokenizer = SentencePieceTokenizer.Create(stream, false, false);   // no BOS, no EOS
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"'{source}' is not a SentencePiece model this build can read: {e.Message}", e);
        }
        VocabularySize = tokenizer.Vocabulary.Count;
        Hash = Convert.ToHexStringLower(SHA256.HashData(modelFile))[..16];
    }

    public static SentencePieceBpeTokenizer Load(string path) => new(File.ReadAllBytes(path), path);

    /// <summary>The first 16 hex digits of the model file's SHA-256: two models with one name are still told apart.</summary>
    public string Hash { get; }
    public string Name => $"sentencepiece/{Hash}";
    public int VocabularySize { get; }
    public byte[]? ModelFile => model;

    public long[] Encode(string text) =>
        tokenizer.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false).Select(id => (long)id).ToArray();

    public string Decode(ReadOnlySpan<long> tokens) => tokenizer.Decode(TiktokenBpeTokenizer.Ids(tokens, VocabularySize));

    /// <summary>The UTF-8 length of the decoded text: exact except where a cut splits a character or a leading space.</summary>
    public long ByteCount(ReadOnlySpan<long> tokens) => System.Text.Encoding.UTF8.GetByteCount(Decode(tokens));
}
