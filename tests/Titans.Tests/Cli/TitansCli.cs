using Titans.Cli;

namespace Titans.Tests.Cli;

/// <summary>Runs the program in process as `./titans args` would, capturing what it prints (tests run one at a time).</summary>
static class TitansCli
{
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
