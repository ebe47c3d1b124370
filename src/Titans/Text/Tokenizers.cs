namespace Titans.Text;

/// <summary>Tokenizers by name: on the command line, and as checkpoints record them.</summary>
public static class Tokenizers
{
    /// <summary>
    /// <c>bytes</c> (the default), <c>nucleotides</c> (DNA), <c>o200k_base</c> or <c>cl100k_base</c> (tiktoken), or the path of a SentencePiece
    /// <c>.model</c> file.
    /// </summary>
    public static ITokenizer FromSpecification(string specification)
    {
        if (specification == "bytes") return ByteTokenizer.Instance;
        if (specification == NucleotideTokenizer.Instance.Name) return NucleotideTokenizer.Instance;
        if (TiktokenBpeTokenizer.Encodings.Contains(specification)) return new TiktokenBpeTokenizer(specification);
        if (File.Exists(specification)) return SentencePieceBpeTokenizer.Load(specification);
        throw new ArgumentException($"Unknown tokenizer '{specification}': use bytes, nucleotides, {string.Join(", ", TiktokenBpeTokenizer.Encodings)} " +
                                    "or the path of a SentencePiece .model file.");
    }

    /// <summary>The tokenizer a checkpoint names; a SentencePiece one comes with its model file.</summary>
    public static ITokenizer FromCheckpoint(string source, string name, byte[]? modelFile)
    {
        if (name == ByteTokenizer.Instance.Name) return ByteTokenizer.Instance;
        if (name == NucleotideTokenizer.Instance.Name) return NucleotideTokenizer.Instance;
        if (name.StartsWith("tiktoken/") && TiktokenBpeTokenizer.Encodings.Contains(name["tiktoken/".Length..]))
            return new TiktokenBpeTokenizer(name["tiktoken/".Length..]);
        if (name.StartsWith("sentencepiece/"))
        {
            if (modelFile is null) throw new InvalidDataException($"'{source}' names the tokenizer '{name}' but does not hold its model file.");
            var tokenizer = new SentencePieceBpeTokenizer(modelFile, source);
            if (tokenizer.Name != name)
                throw new InvalidDataException($"'{source}': its tokenizer model hashes to {tokenizer.Name}, the metadata says {name}.");
            return tokenizer;
        }
        throw new InvalidDataException($"'{source}' was trained with the tokenizer '{name}', which this build does not know.");
    }
}
