using System.CommandLine;
using TorchSharp;
using Titans.Memory;
using Titans.Runtime;
using Titans.Training;

namespace Titans.Cli.Commands;

/// <summary>Options every command understands, and the one place that applies them.</summary>
public static class CommonOptions
{
    public static readonly Option<int> Threads = new("--threads")
    {
        Description = "CPU threads for libtorch (default: all cores)",
        DefaultValueFactory = _ => Environment.ProcessorCount,
        Recursive = true,
    };

    public static readonly Option<string> Device = new("--device")
    {
        Description = "cpu, cuda or cuda:N",
        DefaultValueFactory = _ => "cpu",
        Recursive = true,
    };

    /// <summary>The command as the user typed it, for the "Produced by" line of result documents.</summary>
    public static string CommandLine(ParseResult parse) => "./titans " + string.Join(' ', parse.Tokens.Select(t => Quoted(t.Value)));

    /// <summary>A token as a shell needs it: single-quoted when it holds spaces, quotes or other special characters.</summary>
    static string Quoted(string token) =>
        token.Length > 0 && token.All(c => char.IsLetterOrDigit(c) || "-_./,:=+%@".Contains(c)) ? token : "'" + token.Replace("'", "'\\''") + "'";

    /// <summary>Applies the common options and runs the command; bad input ends with a one-line error, exit code 2.</summary>
    public static int Run(ParseResult parse, Func<torch.Device, int> body)
    {
        try
        {
            int threads = parse.GetValue(Threads);
            if (threads < 1) throw new ArgumentException($"--threads must be at least 1, got {threads}.");
            torch.set_num_threads(threads);
            return body(Devices.Parse(parse.GetValue(Device)!));
        }
        catch (ArgumentException e)
        {
            string message = e.ParamName is null ? e.Message : e.Message.Replace($" (Parameter '{e.ParamName}')", "");
            Console.Error.WriteLine($"error: {message}");
            return 2;
        }
        // Bad files (a non-UTF-8 corpus, a truncated checkpoint) and a diverged run are the user's input too.
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or DirectoryNotFoundException or TrainingDivergedException
                                       or NonFiniteValueException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    /// <summary>A comma-separated list of positive integers; anything else is an error naming the option.</summary>
    public static IReadOnlyList<int> IntList(string text, string option)
    {
        if (string.IsNullOrWhiteSpace(text)) return Array.Empty<int>();
        return text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Select(part => int.TryParse(part, out int value) && value > 0
                ? value
                : throw new ArgumentException($"{option} must be a comma-separated list of positive integers, got '{part}'."))
            .ToList();
    }
}
