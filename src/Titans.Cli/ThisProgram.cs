using System.Diagnostics;

namespace Titans.Cli;

/// <summary>How to start this program again, as it was started: an apphost (a .NET tool), or `dotnet Titans.Cli.dll`.</summary>
public static class ThisProgram
{
    /// <summary>The executable and the arguments that come before the program's own (the dll, under `dotnet`); null if unknown.</summary>
    public static (string File, IReadOnlyList<string> Prefix)? Command()
    {
        string? host = Environment.ProcessPath;
        if (host is null) return null;
        return Path.GetFileNameWithoutExtension(host) == "dotnet" ? (host, [typeof(ThisProgram).Assembly.Location]) : (host, []);
    }

    /// <summary>Waits for a started process with redirected output, reading both streams at once (neither pipe can fill and stall it).</summary>
    public static (int Code, string Output, string Error) Finish(Process process)
    {
        using (process)
        {
            var error = process.StandardError.ReadToEndAsync();
            string output = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output, error.Result);
        }
    }

    /// <summary>A start of this program with <paramref name="arguments"/>; output redirected when asked.</summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> arguments, bool redirect)
    {
        var (file, prefix) = Command() ?? throw new InvalidOperationException("The program's path is unknown.");
        var info = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = redirect, RedirectStandardError = redirect };
        foreach (string argument in prefix.Concat(arguments)) info.ArgumentList.Add(argument);
        return info;
    }
}
