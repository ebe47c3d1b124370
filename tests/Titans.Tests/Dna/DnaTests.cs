using System.IO.Compression;
using System.Text;
using TorchSharp;
using Titans.Dna;
using Titans.Text;
using Titans.Memory;
using Titans.Models;
using Titans.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Titans.Tests.Dna;

/// <summary>The nucleotide tokenizer, FASTA and labelled-sequence input, the stratified re-split, and classifiers that learn.</summary>
public class DnaTests(ITestOutputHelper output)
{
    [Fact]
    public void TokenizerRoundTripsBasesIncludingNAndLowerCase()
    {
        var tokenizer = NucleotideTokenizer.Instance;
        long[] tokens = tokenizer.Encode("ACGTN\nacgtn");
        Assert.Equal(new long[] { 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6 }, tokens);
        Assert.Equal("ACGTN\nACGTN", tokenizer.Decode(tokens));
        Assert.Equal(10, tokenizer.ByteCount(tokens));   // the separator is not a nucleotide
        Assert.Equal(7, tokenizer.VocabularySize);
        Assert.Contains("'R' (base 3) is not a nucleotide", Assert.Throws<InvalidDataException>(() => tokenizer.Encode("ACRT")).Message);
        Assert.Same(tokenizer, Titans.Text.Tokenizers.FromCheckpoint("c", tokenizer.Name, null));
    }

    [Fact]
    public void MarkovReferencesScoreCompositionAndContext()
    {
        var tokenizer = NucleotideTokenizer.Instance;
        // A period-4 genome is certain given one base of context, and 2 bits a base without any.
        var periodic = tokenizer.Encode(string.Concat(Enumerable.Repeat("ACGT", 5000)));
        Assert.Equal(2.0, MarkovModel.Fit(periodic, 0).BitsPerNucleotide(periodic), 3);
        Assert.True(MarkovModel.Fit(periodic, 1).BitsPerNucleotide(periodic) < 0.01);
        // Independent uniform bases: no order beats 2 bits on new bases from the same source, and high orders pay for
        // their sparse counts.
        var random = new Random(5);
        long[] Uniform(int n) => Enumerable.Range(0, n).Select(_ => (long)random.Next(2, 6)).ToArray();
        long[] train = Uniform(200_000), test = Uniform(50_000);
        Assert.Equal(2.0, MarkovModel.Fit(train, 0).BitsPerNucleotide(test), 2);
        Assert.True(MarkovModel.Fit(train, 8).BitsPerNucleotide(test) > 2.1);
        // Separators between records are not nucleotides; orders out of range and nothing to score are errors.
        Assert.Equal(2.0, MarkovModel.Fit(periodic, 0).BitsPerNucleotide(tokenizer.Encode("AC\nGT")), 3);
        Assert.Throws<ArgumentOutOfRangeException>(() => MarkovModel.Fit(periodic, MarkovModel.MaxOrder + 1));
        Assert.Throws<ArgumentException>(() => MarkovModel.Fit(periodic, 0).BitsPerNucleotide(tokenizer.Encode("\n")));
    }

    [Fact]
    public void FastaReadsWrappedMultiRecordFilesPlainAndGzip()
    {
        string text = ">one first\nACGT\nacgN\n\n>two\n; a comment\nTTTT\n";
        var records = Fasta.Read(new StringReader(text), "x.fa");
        Assert.Equal(new[] { new FastaRecord("one first", "ACGTACGN"), new FastaRecord("two", "TTTT") }, records);
        string path = Path.Combine(Path.GetTempPath(), $"dna-{Guid.NewGuid():N}.fa.gz");
        try
        {
            using (var gz = new GZipStream(File.Create(path), CompressionLevel.Fastest)) gz.Write(Encoding.UTF8.GetBytes(text));
            Assert.Equal(records, Fasta.Load(path));
        }
        finally { File.Delete(path); }
    }

    [Theory]
    [InlineData(">a\nACGU\n", "line 2: 'U' (base 4) is not a nucleotide")]
    [InlineData(">a\n>b\nACGT\n", "line 1: the record 'a' has no sequence")]
    [InlineData(">a\nACGT\n>b\n", "line 3: the record 'b' has no sequence")]
    [InlineData("ACGT\n", "before the first '>' header")]
    [InlineData("", "no FASTA record")]
    public void BadFastaIsAnErrorNamingTheLine(string text, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => Fasta.Read(new StringReader(text), "x.fa"));
        Assert.Contains(expected, e.Message);
        Assert.Contains("x.fa", e.Message);
    }

    [Theory]
    [InlineData("seq\tlabel\nACGT\t\nACGA\t0", "line 2: the label is empty")]
    [InlineData("seq\tlabel\nACGT\t1\nACGA\t1", "classification needs at least two classes")]
    [InlineData("seq\tlabel\nACXT\t1\nACGA\t0", "'X' (base 3)")]
    [InlineData("sequence\tclass\nACGT\t1", "must name the columns 'seq' and 'label'")]
    [InlineData("seq\tlabel\n", "no sequences")]
    public void BadLabelledSequencesAreErrors(string text, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => LabelledSequences.Parse(text.Split('\n'), "s.tsv"));
        Assert.Contains(expected, e.Message);
    }

    /// <summary>Any text is a label; classes are the sorted labels, by value where all are whole numbers (so 0, 1 stay 0, 1).</summary>
    [Theory]
    [InlineData("n,ei,ie,n", "ei,ie,n", "2,0,1,2")]
    [InlineData("+,-,+", "+,-", "0,1,0")]
    [InlineData("1,0,1", "0,1", "1,0,1")]
    [InlineData("10,9,900000000", "9,10,900000000", "1,0,2")]
    [InlineData("one,-1,0", "-1,0,one", "2,0,1")]
    public void LabelsAreClassNamesSorted(string labels, string classes, string indices)
    {
        var data = LabelledSequences.Parse(["seq\tlabel", .. labels.Split(',').Select(l => $"ACGT\t{l}")], "s.tsv");
        Assert.Equal(classes.Split(','), data.ClassNames);
        Assert.Equal(indices.Split(',').Select(int.Parse), data.Labels);
        Assert.Equal(data.ClassNames, data.StratifiedSplit(1).Test.ClassNames);   // every part keeps the names
    }

    [Fact]
    public void StratifiedSplitIsSeededDisjointAndKeepsTheClassBalance()
    {
        var data = new LabelledSequences(Enumerable.Range(0, 300).Select(i => new string("ACGT"[i % 4], 3) + Convert.ToString(i, 2).Replace('0', 'A').Replace('1', 'C')).ToArray(),
            Enumerable.Range(0, 300).Select(i => i < 200 ? 0 : 1).ToArray(), "planted");
        var (train, validation, test) = data.StratifiedSplit(seed: 5);
        Assert.Equal(300, train.Count + validation.Count + test.Count);
        Assert.Equal((140, 70), (train.Labels.Count(l => l == 0), train.Labels.Count(l => l == 1)));
        Assert.Equal((20, 10), (validation.Labels.Count(l => l == 0), validation.Labels.Count(l => l == 1)));
        Assert.Equal((40, 20), (test.Labels.Count(l => l == 0), test.Labels.Count(l => l == 1)));
        Assert.Empty(train.Sequences.Intersect(test.Sequences).Concat(train.Sequences.Intersect(validation.Sequences)));
        Assert.Equal(train.Sequences, data.StratifiedSplit(seed: 5).Train.Sequences);
        Assert.NotEqual(train.Sequences, data.StratifiedSplit(seed: 6).Train.Sequences);
    }

    /// <summary>Random 32-base sequences; class 1 holds the motif GATC at a random place, class 0 never does.</summary>
    static LabelledSequences PlantedMotif(int count, int seed, bool shuffleLabels = false)
    {
        const string Motif = "GATC";
        const int Length = 32;
        var random = new Random(seed);
        var sequences = new List<string>();
        var labels = new List<int>();
        while (sequences.Count < count)
        {
            var s = new StringBuilder(new string(Enumerable.Range(0, Length).Select(_ => "ACGT"[random.Next(4)]).ToArray()));
            int label = sequences.Count % 2;
            if (label == 1) { int at = random.Next(Length - Motif.Length); s.Remove(at, Motif.Length).Insert(at, Motif); }
            else if (s.ToString().Contains(Motif)) continue;
            sequences.Add(s.ToString());
            labels.Add(label);
        }
        if (shuffleLabels) labels = labels.OrderBy(_ => random.Next()).ToList();
        return new LabelledSequences(sequences, labels, "planted");
    }

    static TitansConfig Tiny(Architecture architecture) => new()
    {
        Architecture = architecture, VocabSize = 7, ModelDim = 32, Layers = 2, Heads = 2, Window = 16, SegmentLength = 8, PersistentTokens = 2,
        Memory = new NeuralMemoryConfig { ModelDim = 32, Heads = 2, Depth = 2, Expansion = 2, ChunkSize = 8 },
    };

    /// <summary>Test accuracy after training on 4,000 planted-motif sequences (or the same with shuffled labels).</summary>
    static double PlantedMotifAccuracy(string model, int steps, bool shuffled)
    {
        var train = PlantedMotif(4000, seed: 1, shuffleLabels: shuffled);
        var test = PlantedMotif(400, seed: 2);
        manual_seed(3);
        using nn.Module<Tensor, Tensor> classifier = model == "cnn"
            ? new ConvolutionalClassifier(7, 16, 32, 2)
            : new SequenceClassifier("classifier", Tiny(ArchitectureNames.Parse(model)), 2);
        var config = new TrainingConfig { Steps = steps, BatchSize = 32, SequenceLength = 1, LearningRate = 3e-3, WarmupSteps = 20, Beta2 = 0.999 };
        using var trainer = new Trainer<nn.Module<Tensor, Tensor>>(classifier, config, new ClassificationObjective(classifier, train, CPU));
        for (int i = 0; i < config.Steps; i++) trainer.TrainStep();
        return SequenceClassification.Accuracy(classifier, test, CPU);
    }

    void AssertLearnsThePlantedMotif(string model, int steps)
    {
        double planted = PlantedMotifAccuracy(model, steps, shuffled: false), control = PlantedMotifAccuracy(model, steps, shuffled: true);
        output.WriteLine($"{model}: planted motif {100 * planted:F1}%, shuffled-label control {100 * control:F1}%");
        Assert.True(planted > 0.9, $"{model} reached {100 * planted:F1}% on the planted motif");
        Assert.True(control < 0.65, $"{model} reached {100 * control:F1}% with shuffled labels, so the test leaks");
    }

    /// <summary>Max pooling keeps the one position that holds the motif; with mean pooling Transformer++ stays near 60% here.</summary>
    [Theory]
    [InlineData("transformer++", 300)]
    [InlineData("cnn", 300)]
    public void TinyClassifierLearnsAPlantedMotifThatAShuffledLabelControlCannot(string model, int steps) => AssertLearnsThePlantedMotif(model, steps);

    [Theory]
    [InlineData(Architecture.Lmm)]
    [InlineData(Architecture.Mac)]
    [InlineData(Architecture.TransformerPlusPlus)]
    public void AClassifierFineTunedFromALanguageModelStartsFromItsBackbone(Architecture architecture)
    {
        manual_seed(4);
        using var language = new TitansLanguageModel("model", Tiny(architecture));
        using var classifier = new SequenceClassifier("classifier", Tiny(architecture), 2);
        classifier.InitializeFrom(language);
        var lm = language.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in classifier.named_parameters().Where(p => !p.name.StartsWith("class_head.")))
            Assert.True(p.eq(lm[name]).all().item<bool>(), name);
        Assert.Equal(lm.Keys.Where(k => k != "head.weight"), classifier.named_parameters().Select(p => p.name).Where(n => !n.StartsWith("class_head.")));
        Assert.Throws<ArgumentException>(() => classifier.InitializeFrom(new TitansLanguageModel("other", Tiny(architecture) with { Layers = 1 })));
    }

    [Fact]
    public void TheCnnsConvolutionEqualsLibtorchsConv1d()
    {
        manual_seed(6);
        using var conv = nn.Conv1d(5, 7, 9, padding: 4);
        Tensor x = randn(3, 5, 40);
        Assert.True(ConvolutionalClassifier.Convolve(conv, x).allclose(conv.forward(x), 1e-5, 1e-5));
    }

    [Fact]
    public void PaddingIsLeftOutOfTheClassifiersPooling()
    {
        manual_seed(5);
        using var classifier = new SequenceClassifier("classifier", Tiny(Architecture.Lmm), 2);
        classifier.eval();
        var data = new LabelledSequences(new[] { "ACGTACGTAC", "ACGTAC" }, new[] { 0, 1 }, "p");
        var (batch, _) = SequenceClassification.Batch(data, new[] { 0, 1 });
        Assert.Equal(new long[] { 2, 10 }, batch.shape);
        var (alone, _) = SequenceClassification.Batch(data, new[] { 1 });
        // Causal backbone: the short sequence's outputs do not see the padding after it, and the pooling leaves the padding out.
        Assert.True(classifier.forward(batch)[1].allclose(classifier.forward(alone)[0], 1e-5, 1e-6));
    }
}
