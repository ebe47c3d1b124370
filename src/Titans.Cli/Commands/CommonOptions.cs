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
        Description = "CPU threads for libtorch (default: all cores, shared with other titans processes running beside it)",
        DefaultValueFactory = _ => System.Environment.ProcessorCount,
        Recursive = true,
    };

    public static readonly Option<string> Device = new("--device")
    {
        Description = "cpu, cuda or cuda:N",
        DefaultValueFactory = _ => "cpu",
        Recursive = true,
    };

    /// <summary>--force for a command that writes a folder: the user's say to write beside files titans did not write there.</summary>
    public static Option<bool> Force() => new("--force")
    {
        Description = "write into an --out folder that holds files titans did not write (titans replaces files of its own names there, nothing else)",
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
            if (Distributed.DataParallel.World is { } world && !DataParallelCommands.Contains(Name(parse)))
                return Fail($"`titans {Name(parse)}` does not run under mpirun ({world.Size} ranks would each do the same work and write the same " +
                            $"files); run it as one process. Under mpirun: {string.Join(", ", DataParallelCommands.Select(c => $"`titans {c}`"))}.",
                    collective: true);
            if (Given(parse, Threads))
            {
                int threads = parse.GetValue(Threads);
                if (threads < 1) throw new ArgumentException($"--threads must be at least 1, got {threads}.");
                if (threads > System.Environment.ProcessorCount)   // more threads than cores only wait for each other (1000 ran ~1000× slower)
                {
                    Console.Error.WriteLine($"warning: --threads {threads} is more than the {System.Environment.ProcessorCount} core(s) this process may use; using {System.Environment.ProcessorCount}.");
                    threads = System.Environment.ProcessorCount;
                }
                CoreShare.Leave();
                torch.set_num_threads(threads);
            }
            else CoreShare.Join();   // all cores alone, a share of them beside other titans processes
            return body(Devices.Parse(parse.GetValue(Device)!));
        }
        catch (ArgumentException e)
        {
            return Fail(PlainMessage(e));
        }
        // Bad files (a non-UTF-8 corpus, a truncated checkpoint) and a diverged run are the user's input too; so are the
        // machine's limits (a full disk, a folder it may not write, memory). Saves are atomic, so what was saved stays.
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException or TrainingDivergedException
                                       or NonFiniteValueException)
        {
            return Fail(e.Message, collective: e is TrainingDivergedException);
        }
        catch (OutOfMemoryException e)
        {
            return Fail($"out of memory ({e.Message}); use less data, a smaller model or a smaller batch.");
        }
        catch (System.Runtime.InteropServices.ExternalException e) when (e.Message.Contains("can't allocate memory") || e.Message.Contains("out of memory"))
        {
            // libtorch's allocator: "[enforce fail at alloc_cpu.cpp:…] DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes…"
            string detail = System.Text.RegularExpressions.Regex.Match(e.Message, @"tried to allocate (\d+) bytes") is { Success: true } m
                ? $"libtorch could not allocate {long.Parse(m.Groups[1].Value) / (1024.0 * 1024 * 1024):N1} GiB" : e.Message.Split('\n')[0];
            return Fail($"out of memory ({detail}); use less data, a smaller model or a smaller batch.");
        }
        catch (Distributed.ReplicasDivergedException e)
        {
            return Fail(e.Message, collective: true);   // every rank learned of it at the same check
        }
        catch (Exception e) when (Distributed.DataParallel.World is not null)
        {
            return Fail($"{e.GetType().Name}: {e.Message}");   // a rank must not leave the others waiting
        }
    }

    /// <summary>
    /// Prints the one-line error and returns exit code 2. Under mpirun an error of one rank ends the job everywhere
    /// (MPI_Abort), so no rank waits forever for one that stopped; an error every rank met alike at the same point
    /// (<paramref name="collective"/>: a diverged step) is printed once, by rank 0, and every rank exits cleanly.
    /// </summary>
    static int Fail(string message, bool collective = false)
    {
        var parallel = Distributed.DataParallel.World;
        if (parallel is null || !collective || parallel.IsRoot)
            Console.Error.WriteLine(parallel is null || collective ? $"error: {message}" : $"error (rank {parallel.Rank} of {parallel.Size}): {message}");
        Console.Error.Flush();
        if (parallel is not null && !collective) parallel.Abort(2);   // the others may be waiting for this rank
        return 2;
    }

    /// <summary>Whether the user typed the option (its default is not a request).</summary>
    public static bool Given(ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };

    /// <summary>
    /// What the library trains and evaluates in under this program: the MPI replicas under mpirun (null otherwise), and
    /// the cores shared with other titans processes (<see cref="CoreShare.Rebalance"/>, a no-op where --threads fixed them).
    /// </summary>
    public static TrainingEnvironment Environment => new(Distributed.DataParallel.World, CoreShare.Rebalance);

    /// <summary>Whether this process writes results: always, except ranks other than 0 of an mpirun job, which only train.</summary>
    public static bool Writes => Distributed.DataParallel.World?.IsRoot ?? true;

    /// <summary>The commands that train data-parallel under mpirun (rank 0 alone writes); every other command refuses it.</summary>
    static readonly string[] DataParallelCommands = ["train", "task train", "dna pretrain", "forecast train", "dna classify"];

    /// <summary>The command's name as typed after `titans`: "train", "task eval", "bench lm".</summary>
    static string Name(ParseResult parse)
    {
        var names = new List<string>();
        for (var result = parse.CommandResult; result?.Parent is System.CommandLine.Parsing.CommandResult parent; result = parent) names.Insert(0, result.Command.Name);
        return string.Join(' ', names);
    }

    /// <summary>The message without .NET's " (Parameter 'name')" suffix, which means nothing to a user.</summary>
    public static string PlainMessage(ArgumentException e) => e.ParamName is null ? e.Message : e.Message.Replace($" (Parameter '{e.ParamName}')", "");

    /// <summary>The enum value named <paramref name="text"/> (any case); a number or another word is an error listing the names.</summary>
    public static T ByName<T>(string text, string option) where T : struct, Enum =>
        Enum.GetNames<T>().FirstOrDefault(n => n.Equals(text.Trim(), StringComparison.OrdinalIgnoreCase)) is string name ? Enum.Parse<T>(name)
            : throw new ArgumentException($"{option} must be {string.Join(", ", Enum.GetNames<T>().Select(n => n.ToLowerInvariant()))}, got '{text}'.");
}
