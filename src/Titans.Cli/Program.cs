using System.CommandLine;

namespace Titans.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("Titans.NET: neural long-term memory that learns to memorize at test time.");
        return root.Parse(args).Invoke();
    }
}
