using Titans.Cli;

namespace Titans.Tests.Cli;

/// <summary>Runs the program in process as `./titans args` would, capturing what it prints (tests run one at a time).</summary>
static class TitansCli
{
    /// <summary>The small corpus the command-line tests train on (300 lines), written into <paramref name="folder"/>.</summary>
    public static string WriteCorpus(string folder)
    {
        string path = Path.Combine(folder, "corpus.txt");
        File.WriteAllText(path, string.Concat(Enumerable.Range(0, 300).Select(i => $"Line {i}: the whale is {(i % 5 == 0 ? "white" : "grey")}.\n")));
        return path;
    }

    public static (int Code, string Output, string Error) Run(params string[] args)
    {
        var (output, error) = (new StringWriter(), new StringWriter());
        var (stdout, stderr) = (Console.Out, Console.Error);
        Console.SetOut(output);
        Console.SetError(error);
        try { return (Program.Main(args), output.ToString(), error.ToString()); }
        finally { Console.SetOut(stdout); Console.SetError(stderr); }
    }
}
