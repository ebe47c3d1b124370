using System.Globalization;
using System.Text;

namespace Titans.Dna;

/// <summary>
/// Sequences with integer class labels from a TSV file with a header naming the columns <c>seq</c> and <c>label</c>
/// (any order, other columns ignored), as GenomicsBenchmarks ships them. Labels must be integers ≥ 0 and at least two
/// classes must occur; bases as in <see cref="NucleotideTokenizer"/>.
/// </summary>
public sealed record LabelledSequences(IReadOnlyList<string> Sequences, IReadOnlyList<int> Labels, string Source)
{
    public int Count => Sequences.Count;
    public int Classes => Labels.Max() + 1;

    public static LabelledSequences Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The labelled sequence file '{path}' does not exist.", path);
        return Parse(Text.TextCorpus.Decode(path, File.ReadAllBytes(path), requireText: false).Split('\n'), path);
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
        var labels = new List<int>();
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
            if (!int.TryParse(cells[label].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int l))
                throw new InvalidDataException($"'{source}' line {line}: the label '{cells[label].Trim()}' is not an integer class (0, 1, ...).");
            sequences.Add(s.ToUpperInvariant());
            labels.Add(l);
        }
        if (sequences.Count == 0) throw new InvalidDataException($"'{source}' has a header but no sequences.");
        if (labels.Distinct().Count() < 2)
            throw new InvalidDataException($"'{source}': every sequence has the label {labels[0]}; classification needs at least two classes.");
        return new LabelledSequences(sequences, labels, source);
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
            return new LabelledSequences(rows.Select(i => Sequences[i]).ToArray(), rows.Select(i => Labels[i]).ToArray(), $"{Source} ({name})");
        }
        return (Subset(parts[0], "train"), Subset(parts[1], "validation"), Subset(parts[2], "test"));
    }
}
