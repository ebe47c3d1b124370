using Titans.Checkpoints;
using Titans.Models;
using Titans.Text;
using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tests.Text;

/// <summary>
/// The BPE tokenizers: exact round trips, byte counts, and checkpoints that carry their tokenizer. The SentencePiece
/// model was trained on Moby Dick with Debian's sentencepiece 0.1.97:
/// <c>spm_train --input=data/moby-dick.txt --model_prefix=moby-bpe-1000 --vocab_size=1000 --model_type=bpe
/// --byte_fallback=true --normalization_rule_name=identity --remove_extra_whitespaces=false --character_coverage=1.0</c>
/// </summary>
public class TokenizerTests : IDisposable
{
    public static string SentencePieceModel => Path.Combine(AppContext.BaseDirectory, "Text", "moby-bpe-1000.model");

    const string Sample = "Call me Ishmael.  Some years ago—never mind how long precisely—\n\tÆgir's “whale” 🐋 costs 5 €.\n";

    readonly string folder = Directory.CreateTempSubdirectory("titans-tokenizers-").FullName;
    public void Dispose() => Directory.Delete(folder, recursive: true);

    public static TheoryData<string> Specifications => new() { "bytes", "o200k_base", "cl100k_base", "sentencepiece" };

    static ITokenizer Create(string specification) =>
        Tokenizers.FromSpecification(specification == "sentencepiece" ? SentencePieceModel : specification);

    [Theory]
    [MemberData(nameof(Specifications))]
    public void TextRoundTripsExactlyAndBytesAreCounted(string specification)
    {
        var tokenizer = Create(specification);
        long[] tokens = tokenizer.Encode(Sample);
        Assert.All(tokens, t => Assert.InRange(t, 0, tokenizer.VocabularySize - 1));
        Assert.Equal(Sample, tokenizer.Decode(tokens));
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(Sample), tokenizer.ByteCount(tokens));
        const string english = "It is not down on any map; true places never are.";
        if (specification != "bytes")
            Assert.True(tokenizer.Encode(english).Length < english.Length / 2, $"{specification}: {tokenizer.Encode(english).Length} tokens for {english.Length} characters");
    }

    [Fact]
    public void VocabularySizesAreThoseOfTheEncodings()
    {
        Assert.Equal(200019, new TiktokenBpeTokenizer("o200k_base").VocabularySize);
        Assert.Equal(100277, new TiktokenBpeTokenizer("cl100k_base").VocabularySize);
        Assert.Equal(1000, SentencePieceBpeTokenizer.Load(SentencePieceModel).VocabularySize);
    }

    [Fact]
    public void UnknownTokenizersAndBadModelFilesAreRefused()
    {
        var unknown = Assert.Throws<ArgumentException>(() => Tokenizers.FromSpecification("gpt2"));
        Assert.Contains("o200k_base", unknown.Message);
        string junk = Path.Combine(folder, "junk.model");
        File.WriteAllBytes(junk, new byte[] { 1, 2, 3, 4, 5 });
        var bad = Assert.Throws<InvalidDataException>(() => Tokenizers.FromSpecification(junk));
        Assert.Contains("junk.model", bad.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Create("sentencepiece").Decode(new long[] { 1000 }));
    }

    [Theory]
    [MemberData(nameof(Specifications))]
    public void CheckpointNamesGiveBackTheTokenizer(string specification)
    {
        var tokenizer = Create(specification);
        var again = Tokenizers.FromCheckpoint("test", tokenizer.Name, tokenizer.ModelFile);
        Assert.Equal(tokenizer.Name, again.Name);
        Assert.Equal(tokenizer.Encode(Sample), again.Encode(Sample));
        Assert.Contains("does not know", Assert.Throws<InvalidDataException>(() => Tokenizers.FromCheckpoint("test", "tiktoken/p50k_base", null)).Message);
    }

    [Fact]
    public void CheckpointsCarryTheirSentencePieceModel()
    {
        var tokenizer = Create("sentencepiece");
        var config = Presets.Get("tiny", Architecture.Mac, vocabulary: tokenizer.VocabularySize);
        var training = new TrainingConfig { Steps = 1, BatchSize = 2, SequenceLength = 16, WarmupSteps = 1 };
        var data = new TokenData(tokenizer.Encode(string.Concat(Enumerable.Repeat(Sample, 20))), training.ValidationFraction, training.SequenceLength);
        manual_seed(1);
        using var model = new TitansLanguageModel("model", config);
        using var trainer = new Trainer(model, training, data);
        trainer.TrainStep();
        string path = Path.Combine(folder, "checkpoint.safetensors");
        Checkpoint.Save(path, trainer, tokenizer);

        var (loaded, header) = Checkpoint.LoadModel(path);
        using (loaded)
        {
            Assert.Equal(tokenizer.Name, header.Tokenizer.Name);
            Assert.Equal(tokenizer.Encode(Sample), header.Tokenizer.Encode(Sample));
        }

        // A checkpoint whose embedded model does not match its metadata is refused, as is one without the model.
        using var content = SafeTensors.Load(path);
        var tensors = content.Tensors.ToDictionary(p => p.Key, p => p.Value);
        var metadata = content.Metadata.ToDictionary(p => p.Key, p => p.Value);
        metadata["tokenizer"] = "sentencepiece/0123456789abcdef";
        SafeTensors.Save(path, tensors, metadata);
        Assert.Contains("hashes to", Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(path)).Message);
        tensors.Remove("tokenizer.model");
        SafeTensors.Save(path, tensors, content.Metadata);
        Assert.Contains("does not hold its model file", Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(path)).Message);
    }
}
