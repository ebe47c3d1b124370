using System.Globalization;
using System.Text;

namespace Titans.Forecasting;

/// <summary>
/// Numeric columns of a CSV file with a header row, in file order (rows are time steps, oldest first), and the
/// optional date column as text. Every cell of a chosen column must be a finite number; anything else is an error that
/// names the file, the row and the column.
/// </summary>
public sealed class TimeSeriesTable
{
    public string Source { get; }
    public IReadOnlyList<string> Columns { get; }
    /// <summary>The date column's cells (null without one).</summary>
    public IReadOnlyList<string>? Dates { get; }
    /// <summary>values[row, column], in the order of <see cref="Columns"/>.</summary>
    public double[,] Values { get; }
    public int Rows => Values.GetLength(0);

    TimeSeriesTable(string source, IReadOnlyList<string> columns, IReadOnlyList<string>? dates, double[,] values)
    {
        Source = source;
        Columns = columns;
        Dates = dates;
        Values = values;
    }

    /// <summary>
    /// Reads <paramref name="path"/>. <paramref name="dateColumn"/>: the date column's name (null: a column called
    /// <c>date</c> if there is one, matched in any case; "" for none). <paramref name="columns"/>: the numeric columns to
    /// read (null: every column but the date).
    /// </summary>
    public static TimeSeriesTable Load(string path, string? dateColumn = null, IReadOnlyList<string>? columns = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"The CSV file '{path}' does not exist.", path);
        return Parse(Text.TextCorpus.Decode(path, Text.TextCorpus.ReadBounded(path), requireText: false).Split('\n'), path, dateColumn, columns);
    }

    public static TimeSeriesTable Parse(IReadOnlyList<string> lines, string source, string? dateColumn = null, IReadOnlyList<string>? columns = null)
    {
        var content = lines.Select((text, i) => (Text: text.TrimEnd('\r'), Line: i + 1)).Where(l => l.Text.Trim().Length > 0).ToList();
        if (content.Count == 0) throw new InvalidDataException($"'{source}' is empty: a CSV file needs a header row and data rows.");
        string[] header = Split(content[0].Text);
        if (header.Any(h => h.Length == 0)) throw new InvalidDataException($"'{source}': the header has an empty column name.");
        var duplicate = header.GroupBy(h => h).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidDataException($"'{source}': the header names the column '{duplicate.Key}' twice.");

        int Find(string name)
        {
            int i = Array.FindIndex(header, h => string.Equals(h, name, StringComparison.OrdinalIgnoreCase));
            return i >= 0 ? i : throw new ArgumentException($"'{source}' has no column '{name}'; its columns are {string.Join(", ", header)}.");
        }
        int date = dateColumn switch
        {
            null => Array.FindIndex(header, h => string.Equals(h, "date", StringComparison.OrdinalIgnoreCase)),
            "" => -1,
            _ => Find(dateColumn),
        };
        int[] chosen = columns is null
            ? Enumerable.Range(0, header.Length).Where(i => i != date).ToArray()
            : columns.Select(Find).ToArray();
        if (chosen.Length == 0) throw new ArgumentException($"'{source}': no numeric column to read.");
        if (chosen.Contains(date)) throw new ArgumentException($"'{source}': the date column '{header[date]}' cannot also be a numeric column.");
        if (content.Count < 2) throw new InvalidDataException($"'{source}' has a header but no data rows.");

        var values = new double[content.Count - 1, chosen.Length];
        var dates = date >= 0 ? new string[content.Count - 1] : null;
        for (int r = 1; r < content.Count; r++)
        {
            var (text, line) = content[r];
            string[] cells = Split(text);
            if (cells.Length != header.Length)
                throw new InvalidDataException($"'{source}' line {line}: {cells.Length} cells, the header has {header.Length}.");
            if (dates is not null) dates[r - 1] = cells[date];
            for (int c = 0; c < chosen.Length; c++)
            {
                string cell = cells[chosen[c]].Trim();
                if (cell.Length == 0)
                    throw new InvalidDataException($"'{source}' line {line}: the cell of column '{header[chosen[c]]}' is empty (missing values are not filled in).");
                if (!double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
                    throw new InvalidDataException($"'{source}' line {line}: column '{header[chosen[c]]}' holds '{cell}', which is not a finite number.");
                values[r - 1, c] = v;
            }
        }
        if (dates is not null) CheckTimeOrder(source, header[date], dates, content.Skip(1).Select(l => l.Line).ToArray());
        return new TimeSeriesTable(source, chosen.Select(i => header[i]).ToArray(), dates, values);
    }

    /// <summary>
    /// The date column's cells are times (a date and time, or a number such as a Unix time) that run forward: a cell that
    /// is neither, or a row not after the one before (a file sorted newest first, a repeated row), is an error naming the line.
    /// </summary>
    static void CheckTimeOrder(string source, string column, IReadOnlyList<string> dates, IReadOnlyList<int> lines)
    {
        // One kind for the whole column, decided by its first cell: numbers (a Unix time, an index) are read as numbers
        // first, since the date parser would also take "1.5" for a date.
        static double? Number(string cell) => double.TryParse(cell, NumberStyles.Float, CultureInfo.InvariantCulture, out double n) && double.IsFinite(n) ? n : null;
        static double? Date(string cell) =>
            DateTimeOffset.TryParse(cell, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AllowWhiteSpaces, out var when)
                ? when.UtcTicks : null;
        bool numbers = dates.Count > 0 && Number(dates[0]) is not null;
        double previous = double.NegativeInfinity;
        for (int r = 0; r < dates.Count; r++)
        {
            double time = (numbers ? Number(dates[r]) : Date(dates[r])) ?? throw new InvalidDataException(
                $"'{source}' line {lines[r]}: the {column} column holds '{dates[r]}', which is not " + (numbers ? "a number like the rows above it" : "a date and time") +
                "; name the time column with --date-column, or '' for none.");
            if (r > 0 && !(time > previous))
                throw new InvalidDataException($"'{source}' line {lines[r]}: {column} '{dates[r]}' is not after the row before's ('{dates[r - 1]}'); " +
                                               "rows must run oldest first, each at a later time.");
            previous = time;
        }
    }

    /// <summary>Cells of a line; double-quoted cells may hold commas.</summary>
    static string[] Split(string line)
    {
        if (!line.Contains('"')) return line.Split(',').Select(c => c.Trim()).ToArray();
        var cells = new List<string>();
        var cell = new StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char ch = line[i];
            if (ch == '"' && quoted && i + 1 < line.Length && line[i + 1] == '"') { cell.Append('"'); i++; }
            else if (ch == '"') quoted = !quoted;
            else if (ch == ',' && !quoted) { cells.Add(cell.ToString().Trim()); cell.Clear(); }
            else cell.Append(ch);
        }
        cells.Add(cell.ToString().Trim());
        return cells.ToArray();
    }
}
