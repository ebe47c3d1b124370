using ScottPlot;

namespace Titans.Cli.Reporting;

/// <summary>One line of a plot: a name and its points (missing points are simply absent).</summary>
public sealed record PlotSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>
/// Line plots saved as PNG (ScottPlot): log₂ x for sequence lengths, log₁₀ or linear y. Written to a temporary file
/// and renamed, like every result this program saves.
/// </summary>
public static class LinePlot
{
    public static void Save(string path, string title, string xLabel, string yLabel, IReadOnlyList<PlotSeries> series,
        bool log2X = true, bool log10Y = true)
    {
        var plot = new Plot();
        foreach (var s in series.Where(s => s.X.Count > 0))
        {
            double[] xs = s.X.Select(x => log2X ? Math.Log2(x) : x).ToArray();
            double[] ys = s.Y.Select(y => log10Y ? Math.Log10(y) : y).ToArray();
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = s.Name;
            line.LineWidth = 2;
            line.MarkerSize = 6;
        }
        if (log2X)
        {
            var ticks = new ScottPlot.TickGenerators.NumericManual();
            foreach (double x in series.SelectMany(s => s.X).Distinct().Order())
                ticks.AddMajor(Math.Log2(x), x >= 1024 && x % 1024 == 0 ? $"{x / 1024:0}K" : $"{x:0}");
            plot.Axes.Bottom.TickGenerator = ticks;
        }
        if (log10Y)
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                IntegerTicksOnly = true,
                LabelFormatter = y => Math.Abs(y) >= 5 ? $"1E{y:+0;-0}" : $"{Math.Pow(10, y):#,##0.####}",
            };
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(Alignment.UpperRight);
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null) Directory.CreateDirectory(folder);
        Titans.Runtime.AtomicFile.WriteAllBytes(path, plot.GetImageBytes(1000, 600, ScottPlot.ImageFormat.Png));
    }
}
