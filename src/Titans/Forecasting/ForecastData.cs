using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Forecasting;

/// <summary>The three parts of a series, split by time.</summary>
public enum ForecastPart { Train, Validation, Test }

/// <summary>
/// Rows [0, TrainEnd) train, [TrainEnd, ValidationEnd) validate, [ValidationEnd, TestEnd) test; rows after TestEnd
/// are unused (the ETT protocol leaves the last months out).
/// </summary>
public sealed record ForecastSplit(int TrainEnd, int ValidationEnd, int TestEnd)
{
    /// <summary>The standard ETT protocol (Informer): 12 / 4 / 4 months of hourly rows (8,640 / 2,880 / 2,880).</summary>
    public static ForecastSplit EttHourly { get; } = new(12 * 30 * 24, 16 * 30 * 24, 20 * 30 * 24);
    /// <summary>The same months of 15-minute rows (ETTm1, ETTm2).</summary>
    public static ForecastSplit EttQuarterHourly { get; } = new(4 * 12 * 30 * 24, 4 * 16 * 30 * 24, 4 * 20 * 30 * 24);

    /// <summary>The usual split of other datasets: the first <paramref name="train"/>, then <paramref name="validation"/> of the rows, the rest test.</summary>
    public static ForecastSplit Fractions(int rows, double train, double validation)
    {
        if (!(train > 0 && validation > 0 && train + validation < 1))
            throw new ArgumentException($"The split fractions must be positive and sum to less than 1, got {train} and {validation}.");
        int trainEnd = (int)(rows * train), validationEnd = trainEnd + (int)(rows * validation);
        return new ForecastSplit(trainEnd, validationEnd, rows);
    }

    /// <summary>
    /// "ett-hourly", "ett-15min", "TRAIN,VALIDATION" fractions (e.g. "0.7,0.1"), or "auto": the ETT protocol for files
    /// named ETTh* / ETTm*, else 0.7 / 0.1 / 0.2.
    /// </summary>
    public static ForecastSplit Parse(string text, string fileName, int rows)
    {
        string name = Path.GetFileName(fileName);
        switch (text.Trim().ToLowerInvariant())
        {
            case "auto" when name.StartsWith("ETTh", StringComparison.OrdinalIgnoreCase): return EttHourly;
            case "auto" when name.StartsWith("ETTm", StringComparison.OrdinalIgnoreCase): return EttQuarterHourly;
            case "auto": return Fractions(rows, 0.7, 0.1);
            case "ett-hourly": return EttHourly;
            case "ett-15min": return EttQuarterHourly;
        }
        var parts = text.Split(',');
        if (parts.Length == 2 && double.TryParse(parts[0], System.Globalization.CultureInfo.InvariantCulture, out double a)
                              && double.TryParse(parts[1], System.Globalization.CultureInfo.InvariantCulture, out double b))
            return Fractions(rows, a, b);
        throw new ArgumentException($"Unknown split '{text}'; use auto, ett-hourly, ett-15min or two fractions such as 0.7,0.1.");
    }

    public override string ToString() =>
        $"rows 0-{TrainEnd - 1} train, {TrainEnd}-{ValidationEnd - 1} validation, {ValidationEnd}-{TestEnd - 1} test";
}

/// <summary>
/// A series ready for forecasting: the table's columns z-scored with the mean and deviation of the training rows only,
/// and windows of <see cref="Lookback"/> inputs followed by <see cref="Horizon"/> targets. A window belongs to the part
/// its targets lie in; validation and test windows read their lookback from the rows before (the standard protocol),
/// so no part's targets are ever an input of training.
/// </summary>
public sealed class ForecastData : IDisposable
{
    public IReadOnlyList<string> Columns { get; }
    /// <summary>Which columns are forecast and scored (indices into <see cref="Columns"/>).</summary>
    public IReadOnlyList<int> Targets { get; }
    public ForecastSplit Split { get; }
    public int Lookback { get; }
    public int Horizon { get; }
    /// <summary>The training rows' mean and (population) deviation of each column.</summary>
    public IReadOnlyList<double> Mean { get; }
    public IReadOnlyList<double> Deviation { get; }
    /// <summary>The z-scored rows [rows, columns], float32.</summary>
    public Tensor Values { get; }

    public ForecastData(TimeSeriesTable table, ForecastSplit split, int lookback, int horizon, IReadOnlyList<string>? targets = null,
        IReadOnlyList<double>? mean = null, IReadOnlyList<double>? deviation = null)
    {
        if (lookback < 1) throw new ArgumentException($"The lookback must be at least 1 step, got {lookback}.");
        if (horizon < 1) throw new ArgumentException($"The horizon must be at least 1 step, got {horizon}.");
        if (split.TrainEnd < 1 || split.ValidationEnd <= split.TrainEnd || split.TestEnd <= split.ValidationEnd)
            throw new ArgumentException($"The split must give every part rows: {split}.");
        if (split.TestEnd > table.Rows)
            throw new ArgumentException($"'{table.Source}' has {table.Rows} rows; the split needs {split.TestEnd} ({split}).");
        Columns = table.Columns;
        Split = split;
        Lookback = lookback;
        Horizon = horizon;
        Targets = targets is null ? Enumerable.Range(0, Columns.Count).ToArray() : targets.Select(t =>
        {
            int i = Columns.ToList().FindIndex(c => string.Equals(c, t, StringComparison.OrdinalIgnoreCase));
            return i >= 0 ? i : throw new ArgumentException($"The target column '{t}' is not among the columns read: {string.Join(", ", Columns)}.");
        }).ToArray();
        if (Targets.Count == 0) throw new ArgumentException("Name at least one target column.");
        foreach (var part in Enum.GetValues<ForecastPart>())
            if (WindowCount(part) < 1)
                throw new ArgumentException($"'{table.Source}': the {part.ToString().ToLowerInvariant()} rows of {split} are too few for a " +
                                            $"lookback of {lookback} plus a horizon of {horizon} steps.");
        (Mean, Deviation) = mean is not null && deviation is not null ? (mean, deviation) : TrainingStatistics(table, split.TrainEnd);
        int rows = table.Rows, columns = Columns.Count;
        var z = new float[rows * columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                double score = (table.Values[r, c] - Mean[c]) / Deviation[c];
                if (!(Math.Abs(score) <= float.MaxValue))   // in float32 it would be infinite: every loss and score after it garbage
                    throw new ArgumentException($"'{table.Source}': row {r + 1} of column '{Columns[c]}' holds {table.Values[r, c]:G6}, " +
                                                $"{score:G3} training deviations from the training mean, more than float32 holds; rescale the column or leave that row out.");
                z[r * columns + c] = (float)score;
            }
        Values = tensor(z, new long[] { rows, columns });
    }

    /// <summary>
    /// Mean and population deviation of each column over rows [0, <paramref name="trainEnd"/>), computed on the values
    /// divided by the column's largest magnitude, so that values near the ends of double's range (1e155, whose squares
    /// overflow) give the statistics they have instead of an infinite deviation; a constant column is an error.
    /// </summary>
    static (double[] Mean, double[] Deviation) TrainingStatistics(TimeSeriesTable table, int trainEnd)
    {
        int columns = table.Columns.Count;
        var mean = new double[columns];
        var deviation = new double[columns];
        for (int c = 0; c < columns; c++)
        {
            double scale = 0;
            for (int r = 0; r < trainEnd; r++) scale = Math.Max(scale, Math.Abs(table.Values[r, c]));
            if (scale == 0) scale = 1;
            double sum = 0;
            for (int r = 0; r < trainEnd; r++) sum += table.Values[r, c] / scale;
            double scaledMean = sum / trainEnd, square = 0;
            for (int r = 0; r < trainEnd; r++) square += (table.Values[r, c] / scale - scaledMean) * (table.Values[r, c] / scale - scaledMean);
            double scaledDeviation = Math.Sqrt(square / trainEnd);
            (mean[c], deviation[c]) = (scaledMean * scale, scaledDeviation * scale);
            if (!(scaledDeviation > 1e-12 * Math.Max(1e-300, Math.Abs(scaledMean))) || scaledDeviation * scale == 0)
                throw new ArgumentException($"'{table.Source}': column '{table.Columns[c]}' is constant over the training rows " +
                                            "(zero variance), so it cannot be z-scored; leave it out with --columns.");
        }
        return (mean, deviation);
    }

    /// <summary>The first input row of the part's first window.</summary>
    public int FirstStart(ForecastPart part) => part switch
    {
        ForecastPart.Train => 0,
        ForecastPart.Validation => Split.TrainEnd - Lookback,
        _ => Split.ValidationEnd - Lookback,
    };

    int PartEnd(ForecastPart part) => part switch
    {
        ForecastPart.Train => Split.TrainEnd,
        ForecastPart.Validation => Split.ValidationEnd,
        _ => Split.TestEnd,
    };

    /// <summary>Windows whose targets lie in the part.</summary>
    public int WindowCount(ForecastPart part) => Math.Max(0, PartEnd(part) - Lookback - Horizon - Math.Max(0, FirstStart(part)) + 1);

    /// <summary>Inputs [B, Lookback, columns] and targets [B, Horizon, columns] of the windows starting at the given rows.</summary>
    public (Tensor Inputs, Tensor Targets) Windows(IReadOnlyList<long> starts)
    {
        using var scope = NewDisposeScope();
        var index = tensor(starts.ToArray()).unsqueeze(1) + arange(Lookback + Horizon, dtype: ScalarType.Int64).unsqueeze(0);
        Tensor windows = Values.index(index);   // [B, L + H, C]
        var result = (windows[.., ..Lookback].contiguous(), windows[.., Lookback..].contiguous());
        scope.MoveToOuter(result.Item1, result.Item2);
        return result;
    }

    /// <summary>The start row of window <paramref name="index"/> of a part.</summary>
    public long Start(ForecastPart part, int index) => Math.Max(0, FirstStart(part)) + index;

    /// <summary>The start rows of window <paramref name="first"/> to <paramref name="first"/> + count of a part.</summary>
    public long[] Starts(ForecastPart part, int first, int count) =>
        Enumerable.Range(first, Math.Min(count, WindowCount(part) - first)).Select(i => Start(part, i)).ToArray();

    public void Dispose() => Values.Dispose();
}
