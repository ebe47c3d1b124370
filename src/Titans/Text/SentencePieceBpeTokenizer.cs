using System.Security.Cryptography;
using Microsoft.ML.Tokenizers;

namespace Titans.Text;

/// <summary>
/// A SentencePiece BPE model (a <c>.model</c> file, as Debian's <c>spm_train</c> writes) through Microsoft.ML.Tokenizers.
/// The file travels inside every checkpoint, so a model is always read back with its own tokenizer. For text to
/// round-trip exactly, train it with <c>--byte_fallback=true --normalization_rule_name=identity
/// --remove_extra_whitespaces=false</c> (docs/tokenizers.md).
/// </summary>
public sealed class SentencePieceBpeTokenizer : LibraryBpeTokenizer
{
    readonly byte[] model;

    public SentencePieceBpeTokenizer(byte[] modelFile, string source) : this(modelFile, Create(modelFile, source)) { }

    SentencePieceBpeTokenizer(byte[] modelFile, SentencePieceTokenizer tokenizer) : base(tokenizer)
    {
        model = modelFile;
        VocabularySize = tokenizer.Vocabulary.Count;
        Hash = Convert.ToHexStringLower(SHA256.HashData(modelFile))[..16];
    }

    static SentencePieceTokenizer Create(byte[] modelFile, string source)
    {
        try
        {
            using var stream = new MemoryStream(modelFile, writable: false);
            return SentencePieceTokenizer.Create(stream, false, false);   // no BOS, no EOS
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"'{source}' is not a SentencePiece model this build can read: {e.Message}", e);
        }
    }

    public static SentencePieceBpeTokenizer Load(string path) => new(TextCorpus.ReadBounded(path), path);

    /// <summary>The first 16 hex digits of the model file's SHA-256: two models with one name are still told apart.</summary>
    public string Hash { get; }
    public override string Name => $"sentencepiece/{Hash}";
    public override int VocabularySize { get; }
    public override byte[]? ModelFile => model;
}
