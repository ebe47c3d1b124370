using System.IO.Compression;
using System.Text;
using Titans.Text;

namespace Titans.Dna;

/// <summary>One FASTA record: the header line's text (after '>') and the sequence, upper case.</summary>
public sealed record FastaRecord(string Name, string Sequence);

/// <summary>
/// Reads FASTA files, plain or gzip (by content, not by name), with any number of records. Sequence lines may wrap at
/// any width; every character must be a nucleotide (A, C, G, T, N, any case; IUPAC ambiguity codes other than N are
/// errors, as is an empty record), and each error names the file, the line and the character.
/// </summary>
public static class Fasta
{
    public static IReadOnlyList<FastaRecord> Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The FASTA file '{path}' does not exist.", path);
        using var file = File.OpenRead(path);
        bool gzip = file.Length >= 2 && file.ReadByte() == 0x1f && file.ReadByte() == 0x8b;
        file.Position = 0;
        using Stream stream = Text.TextCorpus.Bounded(gzip ? new GZipStream(file, CompressionMode.Decompress) : file, path);
        using var reader = new StreamReader(stream, new UTF8Encoding(false, throwOnInvalidBytes: true));
        try { return Read(reader, path); }
        catch (DecoderFallbackException) { throw new InvalidDataException($"'{path}' is not text (nor gzip-compressed text)."); }
        catch (InvalidDataException e) when (gzip && !e.Message.StartsWith($"'{path}'"))
        {
            throw new InvalidDataException($"'{path}' is a damaged gzip file: {e.Message}", e);
        }
    }

    public static IReadOnlyList<FastaRecord> Read(TextReader reader, string source)
    {
        var records = new List<FastaRecord>();
        string? name = null;
        var sequence = new StringBuilder();
        int line = 0, nameLine = 0;
        void Finish()
        {
            if (name is null) return;
            if (sequence.Length == 0) throw new InvalidDataException($"'{source}' line {nameLine}: the record '{name}' has no sequence.");
            records.Add(new FastaRecord(name, sequence.ToString()));
            sequence.Clear();
        }
        for (string? text = reader.ReadLine(); text is not null; text = reader.ReadLine())
        {
            line++;
            text = text.TrimEnd('\r');
            if (text.StartsWith('>'))
            {
                Finish();
                name = text[1..].Trim();
                nameLine = line;
                continue;
            }
            if (text.Trim().Length == 0 || text.StartsWith(';')) continue;
            if (name is null) throw new InvalidDataException($"'{source}' line {line}: sequence before the first '>' header; this is not FASTA.");
            string bases = text.Trim();
            for (int i = 0; i < bases.Length; i++)
            {
                char c = bases[i];
                try { NucleotideTokenizer.Id(c, i); }
                catch (InvalidDataException e) { throw new InvalidDataException($"'{source}' line {line}: {e.Message}"); }
                sequence.Append(char.ToUpperInvariant(c));
            }
        }
        Finish();
        if (records.Count == 0) throw new InvalidDataException($"'{source}' holds no FASTA record.");
        return records;
    }
}
