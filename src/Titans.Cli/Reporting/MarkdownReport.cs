using System.Text;

namespace Titans.Cli.Reporting;

/// <summary>A results document for docs/: the command that produced it, the machine, then tables. Written atomically.</summary>
public sealed class MarkdownReport
{
    readonly StringBuilder text = new();

    public MarkdownReport(string title, string command)
    {
        text.AppendLine($"# {title}").AppendLine();
        text.AppendLine("Produced by:").AppendLine().AppendLine("```").AppendLine(command).AppendLine("```").AppendLine();
        text.AppendLine($"Machine: {MachineDescription()}; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.").AppendLine();
    }

    public MarkdownReport Paragraph(string paragraph)
    {
        text.AppendLine(paragraph).AppendLine();
        return this;
    }

    public MarkdownReport Table(IReadOnlyList<string> header, IEnumerable<IReadOnlyList<string>> rows)
    {
        text.AppendLine("| " + string.Join(" | ", header) + " |");
        text.AppendLine("|" + string.Join("|", header.Select(_ => "---")) + "|");
        foreach (var row in rows) text.AppendLine("| " + string.Join(" | ", row) + " |");
        text.AppendLine();
        return this;
    }

    public void Save(string path)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null) Directory.CreateDirectory(dir);
        Titans.Runtime.AtomicFile.WriteAllText(path, text.ToString());
    }

    public static string MachineDescription()
    {
        string cpu = "unknown CPU";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        return $"{cpu}, {Environment.ProcessorCount} cores, {TorchSharp.torch.get_num_threads()} libtorch threads, " +
               $".NET {Environment.Version}, TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}";
    }
}
