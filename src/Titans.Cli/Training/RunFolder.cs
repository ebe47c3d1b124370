using System.Text.Json;
using System.Text.Json.Nodes;
using Titans.Runtime;

namespace Titans.Cli.Training;

/// <summary>
/// A folder titans writes a run into, held by one writer, that touches only what titans itself wrote there.
/// <list type="bullet">
/// <item>The writer holds an exclusive lock on <c>RUN/run.lock</c> for as long as it writes, so a second process (another
/// run with the same --out, a --resume of it, a second quickstart) stops with a clear error; nothing is cleared or
/// written before the lock is held.</item>
/// <item><c>RUN/titans-run.json</c> records the kind of run and every file titans wrote there (<see cref="Claim"/>
/// records a name before its first write). Starting afresh removes those files only, and the leftovers of a killed
/// writer that are removed are the temporary files of those files (<see cref="AtomicFile"/>'s naming), nothing else.</item>
/// <item>A folder that is not empty and holds no titans run is refused, and so is a file titans would replace that it
/// did not write, unless the user says --force (then titans writes its own files beside theirs, replacing those of the
/// same names, and still deletes nothing of theirs).</item>
/// </list>
/// Folders made by builds before the record (they hold <c>run.lock</c>) are taken as titans runs whose files are the
/// ones those builds wrote.
/// </summary>
public sealed class RunFolder : IDisposable
{
    public const string LockFile = "run.lock";
    public const string RecordFile = "titans-run.json";

    /// <summary>What builds before the record wrote into a training run folder.</summary>
    static readonly string[] EarlierFiles =
        ["checkpoint.safetensors", "metrics.jsonl", "loss.png", "model.json", "training.json", "timing.json"];

    readonly FileStream handle;
    readonly bool force;
    readonly string kind;
    readonly SortedSet<string> files;
    readonly Dictionary<string, string> identity;

    RunFolder(string directory, FileStream handle, string kind, bool force, SortedSet<string> files, Dictionary<string, string> identity)
    {
        Directory = directory;
        this.handle = handle;
        this.kind = kind;
        this.force = force;
        this.files = files;
        this.identity = identity;
    }

    /// <summary>The folder.</summary>
    public string Directory { get; }

    /// <summary>
    /// Takes the folder for a run of <paramref name="kind"/> ("train", "forecast", …): creates it where missing, locks
    /// it, refuses it where it holds something else, removes the leftovers of a killed writer of its own files and,
    /// with <paramref name="fresh"/>, the files of the run it held before (to start over).
    /// </summary>
    /// <param name="identity">What the run is of (its data set): a folder that recorded another is refused, so one run never replaces another's files.</param>
    /// <param name="force">The user's say to write into a folder that holds files titans did not write.</param>
    public static RunFolder Acquire(string directory, string kind, bool force = false, bool fresh = false,
        IReadOnlyDictionary<string, string>? identity = null)
    {
        if (File.Exists(directory)) throw new ArgumentException($"The run folder '{directory}' is a file; give --out a folder.");
        string lockPath = Path.Combine(directory, LockFile);
        FileStream? handle;
        try
        {
            if (!force && System.IO.Directory.Exists(directory) && !IsRun(directory) && System.IO.Directory.EnumerateFileSystemEntries(directory).Any())
                throw ForeignFolder(directory);
            System.IO.Directory.CreateDirectory(directory);
            if (Posix.Inspect(lockPath) is { Kind: not (Posix.EntryKind.Missing or Posix.EntryKind.RegularFile) })
                throw new ArgumentException($"'{lockPath}' is not a plain file; titans will not open it. Give another --out.");
            handle = FileLock.TryHold(lockPath, FileMode.OpenOrCreate);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"Cannot write into the run folder '{directory}': {e.Message}");
        }
        if (handle is null)
            throw new ArgumentException($"Another process is writing into the run folder '{directory}' (it holds {LockFile}); " +
                                        "wait for it to finish, or give another --out.");
        try
        {
            var (recordedKind, files, recordedIdentity) = ReadRecord(directory);
            if (recordedKind is not null && recordedKind != kind && !force)
                throw new ArgumentException($"'{directory}' holds a titans {recordedKind} run, not a {kind} run; give another --out.");
            foreach (var (key, value) in identity ?? new Dictionary<string, string>())
            {
                if (recordedIdentity.TryGetValue(key, out var recorded) && recorded != value && !force)
                    throw new ArgumentException($"'{directory}' holds the {kind} run of {key} '{recorded}', not of '{value}'; " +
                                                "give this one its own --out (or --force to replace that run's files).");
                recordedIdentity[key] = value;
            }
            var folder = new RunFolder(directory, handle, kind, force, files, recordedIdentity);
            folder.RemoveLeftovers();
            if (fresh) folder.Clear();
            folder.SaveRecord();
            return folder;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    static ArgumentException ForeignFolder(string directory)
    {
        var names = System.IO.Directory.EnumerateFileSystemEntries(directory).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        return new ArgumentException($"'{directory}' is not empty and holds no titans run ({string.Join(", ", names.Take(3))}" +
                                     (names.Count > 3 ? $" and {names.Count - 3} more" : "") + "); give a new or empty folder, or --force to write " +
                                     "titans' files beside what is there (files of the same names are replaced; nothing else is touched).");
    }

    /// <summary>
    /// Whether a folder holds a titans run (its record, or the lock file of a build before the record), or only folders
    /// that do (the runs a quickstart or a benchmark of an earlier build left).
    /// </summary>
    public static bool IsRun(string directory) =>
        File.Exists(Path.Combine(directory, RecordFile)) || File.Exists(Path.Combine(directory, LockFile)) ||
        (System.IO.Directory.EnumerateFileSystemEntries(directory).Any() && System.IO.Directory.EnumerateFileSystemEntries(directory)
            .All(entry => System.IO.Directory.Exists(entry) && (File.Exists(Path.Combine(entry, RecordFile)) || File.Exists(Path.Combine(entry, LockFile)))));

    /// <summary>
    /// The full path of <paramref name="name"/> (a path relative to the folder, '/'-separated), recorded as titans' own
    /// before it is first written, its folder created. A file of that name titans did not write is refused unless --force.
    /// </summary>
    public string Claim(string name)
    {
        string path = Path.Combine(Directory, name);
        if (!files.Contains(name))
        {
            if ((File.Exists(path) || System.IO.Directory.Exists(path)) && !force)
                throw new ArgumentException($"'{path}' is there already and titans did not write it; move it, or give --force to replace it.");
            files.Add(name);
            SaveRecord();
        }
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        return path;
    }

    /// <summary>Writes <paramref name="text"/> as the folder's file <paramref name="name"/>, replacing it atomically.</summary>
    public void Write(string name, string text) => AtomicFile.WriteAllText(Claim(name), text);

    /// <summary>The temporary files of titans' own files a killed writer left, removed (and said so).</summary>
    void RemoveLeftovers()
    {
        var leftovers = new List<string>();
        foreach (string name in files.Append(RecordFile))
        {
            string path = Path.Combine(Directory, name), parent = Path.GetDirectoryName(path)!;
            if (!System.IO.Directory.Exists(parent)) continue;
            leftovers.AddRange(System.IO.Directory.EnumerateFiles(parent, Path.GetFileName(path) + ".tmp*")
                .Where(f => AtomicFile.IsTemporaryOf(f, path) || Path.GetFileName(f) == Path.GetFileName(path) + ".tmp"));   // the latter: earlier builds'
        }
        if (leftovers.Count == 0) return;
        long bytes = leftovers.Sum(f => new FileInfo(f).Length);
        foreach (string file in leftovers) File.Delete(file);
        Console.WriteLine($"Removed {leftovers.Count} temporary file(s) of {bytes / (1024.0 * 1024):N1} MiB that an interrupted run left in {Directory}.");
    }

    /// <summary>Removes every file of the run held here before, and the folders titans made for them once empty; nothing else.</summary>
    void Clear()
    {
        foreach (string name in files)
        {
            string path = Path.Combine(Directory, name);
            if (File.Exists(path)) File.Delete(path);
            for (string? parent = Path.GetDirectoryName(path); parent is not null && parent.Length > Directory.Length; parent = Path.GetDirectoryName(parent))
                if (System.IO.Directory.Exists(parent) && !System.IO.Directory.EnumerateFileSystemEntries(parent).Any()) System.IO.Directory.Delete(parent);
        }
        files.Clear();
    }

    static (string? Kind, SortedSet<string> Files, Dictionary<string, string> Identity) ReadRecord(string directory)
    {
        string path = Path.Combine(directory, RecordFile);
        var files = new SortedSet<string>(StringComparer.Ordinal);
        var identity = new Dictionary<string, string>();
        if (!File.Exists(path))
        {
            // A build before the record: its run folders hold run.lock and the files it always wrote.
            foreach (string name in EarlierFiles.Where(n => File.Exists(Path.Combine(directory, n)))) files.Add(name);
            return (files.Count > 0 ? "train" : null, files, identity);
        }
        try
        {
            var record = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            foreach (var name in record["files"]!.AsArray()) files.Add(Safe(name!.GetValue<string>(), path));
            foreach (var (key, value) in record["identity"]?.AsObject() ?? new JsonObject()) identity[key] = value!.GetValue<string>();
            return (record["kind"]!.GetValue<string>(), files, identity);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException or FormatException)
        {
            throw new InvalidDataException($"'{path}' is damaged ({e.Message.TrimEnd('.')}); titans will not write into this folder until it is moved away.");
        }
    }

    /// <summary>A recorded name stays inside the folder (a record edited to name ../something is refused).</summary>
    static string Safe(string name, string record) =>
        name.Length > 0 && !Path.IsPathRooted(name) && !name.Split('/', '\\').Any(part => part is ".." or "." or "")
            ? name
            : throw new InvalidDataException($"'{record}' names '{name}', which is not a file inside its folder.");

    void SaveRecord()
    {
        var record = new JsonObject
        {
            ["kind"] = kind,
            ["identity"] = new JsonObject(identity.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
            ["files"] = new JsonArray(files.Select(f => (JsonNode?)f).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(Directory, RecordFile), record.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    public void Dispose() => handle.Dispose();
}
