using System.Globalization;
using System.Numerics;
using System.Text;
using Titans.Text;

namespace Titans.Dna;

/// <summary>
/// Sequences with class labels from a TSV file with a header naming the columns <c>seq</c> and <c>label</c> (any order,
/// other columns ignored), as GenomicsBenchmarks ships them. A label is any text (<c>0</c>, <c>ei</c>, <c>+</c>); the
/// distinct labels, sorted (by value where every one is a whole number, so 0, 1, 2 stay classes 0, 1, 2), are the
/// classes, named in <see cref="ClassNames"/>. At least two and at most <see cref="MaxClasses"/> classes must occur;
/// bases as in <see cref="NucleotideTokenizer"/>.
/// </summary>
/// <param name="Labels">Each sequence's class: an index into <see cref="ClassNames"/>.</param>
public sealed record LabelledSequences(IReadOnlyList<string> Sequences, IReadOnlyList<int> Labels, string Source)
{
    /// <summary>More classes than any sequence benchmark has; a classifier's output layer is as wide as the classes.</summary>
    public const int MaxClasses = 10_000;

    readonly IReadOnlyList<string>? names;

    /// <summary>The label each class stands for, by class index (default: the indices themselves).</summary>
    public IReadOnlyList<string> ClassNames
    {
        get => names ?? Enumerable.Range(0, Labels.Max() + 1).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray();
        init => names = value;
    }

    public int Count => Sequences.Count;
    public int Classes => ClassNames.Count;

    /// <summary>How many sequences of each class there are, by class index.</summary>
    public int[] CountPerClass()
    {
        var counts = new int[Classes];
        foreach (int label in Labels) counts[label]++;
        return counts;
    }

    public static LabelledSequences Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The labelled sequence file '{path}' does not exist.", path);
        return Parse(Text.TextCorpus.Decode(path, Text.TextCorpus.ReadBounded(path), requireText: false).Split('\n'), path);
    }

    public static LabelledSequences Parse(IReadOnlyList<string> lines, string source)
    {
        var rows = lines.Select((text, i) => (Text: text.TrimEnd('\r'), Line: i + 1)).Where(r => r.Text.Trim().Length > 0).ToList();
        if (rows.Count == 0) throw new InvalidDataException($"'{source}' is empty: it needs a header with 'seq' and 'label' and one row per sequence.");
        string[] header = rows[0].Text.Split('\t').Select(h => h.Trim()).ToArray();
        int seq = Array.FindIndex(header, h => h.Equals("seq", StringComparison.OrdinalIgnoreCase));
        int label = Array.FindIndex(header, h => h.Equals("label", StringComparison.OrdinalIgnoreCase));
        if (seq < 0 || label < 0)
            throw new InvalidDataException($"'{source}': the tab-separated header must name the columns 'seq' and 'label'; it has {string.Join(", ", header)}.");
        var sequences = new List<string>();
        var labels = new List<string>();
        foreach (var (text, line) in rows.Skip(1))
        {
            string[] cells = text.Split('\t');
            if (cells.Length != header.Length) throw new InvalidDataException($"'{source}' line {line}: {cells.Length} cells, the header has {header.Length}.");
            string s = cells[seq].Trim();
            if (s.Length == 0) throw new InvalidDataException($"'{source}' line {line}: the sequence is empty.");
            for (int i = 0; i < s.Length; i++)
            {
                try { NucleotideTokenizer.Id(s[i], i); }
                catch (InvalidDataException e) { throw new InvalidDataException($"'{source}' line {line}: {e.Message}"); }
            }
            string name = cells[label].Trim();
            if (name.Length == 0) throw new InvalidDataException($"'{source}' line {line}: the label is empty.");
            sequences.Add(s.ToUpperInvariant());
            labels.Add(name);
        }
        if (sequences.Count == 0) throw new InvalidDataException($"'{source}' has a header but no sequences.");
        var distinct = labels.Distinct().ToList();
        if (distinct.Count < 2)
            throw new InvalidDataException($"'{source}': every sequence has the label '{labels[0]}'; classification needs at least two classes.");
        if (distinct.Count > MaxClasses)
            throw new InvalidDataException($"'{source}' has {distinct.Count:N0} distinct labels; a classifier here takes at most {MaxClasses:N0} classes " +
                                           "(is the label column a value rather than a class?).");
        bool numbers = distinct.All(l => BigInteger.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out _));
        var names = (numbers ? distinct.OrderBy(l => BigInteger.Parse(l, CultureInfo.InvariantCulture)) : distinct.Order(StringComparer.Ordinal)).ToArray();
        var index = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i);
        return new LabelledSequences(sequences, labels.Select(l => index[l]).ToArray(), source) { ClassNames = names };
    }

    /// <summary>
    /// A seeded split stratified by label: of each class, <paramref name="trainFraction"/> goes to training,
    /// <paramref name="validationFraction"/> to validation, the rest to test (each rounded down, at least one where the
    /// class allows).
    /// </summary>
    public (LabelledSequences Train, LabelledSequences Validation, LabelledSequences Test) StratifiedSplit(long seed, double trainFraction = 0.7,
        double validationFraction = 0.1)
    {
        if (!(trainFraction > 0 && validationFraction >= 0 && trainFraction + validationFraction < 1))
            throw new ArgumentException($"The split fractions must be positive and sum to less than 1, got {trainFraction} and {validationFraction}.");
        var random = new Random((int)(seed & 0x7FFFFFFF));
        var parts = new[] { new List<int>(), new List<int>(), new List<int>() };
        foreach (var group in Enumerable.Range(0, Count).GroupBy(i => Labels[i]).OrderBy(g => g.Key))
        {
            int[] members = group.ToArray();
            random.Shuffle(members);
            int train = Math.Max(1, (int)(members.Length * trainFraction));
            int validation = (int)(members.Length * validationFraction);
            parts[0].AddRange(members.Take(train));
            parts[1].AddRange(members.Skip(train).Take(validation));
            parts[2].AddRange(members.Skip(train + validation));
        }
        LabelledSequences Subset(List<int> rows, string name)
        {
            random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(rows));
            return new LabelledSequences(rows.Select(i => Sequences[i]).ToArray(), rows.Select(i => Labels[i]).ToArray(), $"{Source} ({name})")
                { ClassNames = ClassNames };
        }
        return (Subset(parts[0], "train"), Subset(parts[1], "validation"), Subset(parts[2], "test"));
    }
}
