using ScottPlot;

namespace Titans.Cli.Reporting;

/// <summary>
/// A grid of accuracies as a PNG heat map (ScottPlot): one coloured, labelled cell per (row, column), 0 dark and 1 bright
/// (viridis), NaN grey. Written to a temporary file and renamed.
/// </summary>
public static class HeatMap
{
    /// <param name="values">[row, column] in [0, 1]; row 0 is drawn at the top.</param>
    public static void Save(string path, string title, string xLabel, string yLabel, IReadOnlyList<string> columns,
        IReadOnlyList<string> rows, double[,] values)
    {
        var plot = new Plot();
        var colormap = new ScottPlot.Colormaps.Viridis();
        for (int r = 0; r < rows.Count; r++)
            for (int c = 0; c < columns.Count; c++)
            {
                double value = values[r, c];
                double top = rows.Count - r, bottom = top - 1;
                var cell = plot.Add.Rectangle(c, c + 1, bottom, top);
                cell.FillColor = double.IsNaN(value) ? Colors.LightGray : colormap.GetColor(Math.Clamp(value, 0, 1));
                cell.LineColor = Colors.White;
                cell.LineWidth = 1;
                var label = plot.Add.Text(double.IsNaN(value) ? "—" : $"{100 * value:0}%", c + 0.5, bottom + 0.5);
                label.LabelAlignment = Alignment.MiddleCenter;
                label.LabelFontSize = 16;
                label.LabelFontColor = value > 0.6 ? Colors.Black : Colors.White;
            }
        var xTicks = new ScottPlot.TickGenerators.NumericManual();
        for (int c = 0; c < columns.Count; c++) xTicks.AddMajor(c + 0.5, columns[c]);
        var yTicks = new ScottPlot.TickGenerators.NumericManual();
        for (int r = 0; r < rows.Count; r++) yTicks.AddMajor(rows.Count - r - 0.5, rows[r]);
        plot.Axes.Bottom.TickGenerator = xTicks;
        plot.Axes.Left.TickGenerator = yTicks;
        plot.Axes.SetLimits(0, columns.Count, 0, rows.Count);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null) Directory.CreateDirectory(folder);
        Titans.Runtime.AtomicFile.WriteAllBytes(path,
            plot.GetImageBytes(Math.Max(500, 110 * columns.Count + 160), Math.Max(300, 60 * rows.Count + 140), ScottPlot.ImageFormat.Png));
    }
}
