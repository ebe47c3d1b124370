using System.Text.Json;
using System.Text.Json.Nodes;
using Titans.Runtime;

namespace Titans.Cli.Runs;

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
/// Folders made by builds before the record (<see cref="EarlierRun"/>: a run.lock or a titans checkpoint, a results
/// table of titans', a folder of such runs) are taken as titans runs whose files are the ones those builds wrote.
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
        // Read before anything is created here: what an earlier build left, or a folder of the user's (whose files,
        // even under --force, are never taken for titans' own).
        Earlier? earlier = null;
        try
        {
            if (System.IO.Directory.Exists(directory) && !File.Exists(Path.Combine(directory, RecordFile)))
            {
                earlier = EarlierRun(directory);
                if (earlier is null && !force && System.IO.Directory.EnumerateFileSystemEntries(directory).Any()) throw ForeignFolder(directory);
            }
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
            // Read again under the lock: a writer that held it until now may have recorded its run meanwhile.
            var (recordedKind, files, recordedIdentity) = File.Exists(Path.Combine(directory, RecordFile))
                ? ReadRecord(directory)
                : (earlier?.Kind, new SortedSet<string>(earlier?.Files ?? [], StringComparer.Ordinal), new Dictionary<string, string>());
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

    /// <summary>Whether a folder holds a titans run: its record, or what a build before the record left (<see cref="EarlierRun"/>).</summary>
    public static bool IsRun(string directory) => File.Exists(Path.Combine(directory, RecordFile)) || EarlierRun(directory) is not null;

    /// <summary>The kind of run a build before the record left in a folder, and the files it wrote there.</summary>
    sealed record Earlier(string? Kind, IReadOnlyList<string> Files);

    /// <summary>
    /// What a build before the record left: a training run (its lock, or a titans checkpoint), a forecast or a DNA
    /// classification (a results.md of that title), or a folder of such runs (a quickstart's, a benchmark's); null for
    /// anything else.
    /// </summary>
    static Earlier? EarlierRun(string directory)
    {
        string Here(string name) => Path.Combine(directory, name);
        if (File.Exists(Here(LockFile)) || IsTitansCheckpoint(Here(EarlierFiles[0])))
            return new Earlier("train", EarlierFiles.Where(n => File.Exists(Here(n))).ToList());
        string? title = File.Exists(Here("results.md")) ? File.ReadLines(Here("results.md")).FirstOrDefault() : null;
        if (title?.StartsWith("# Forecasting ") == true)
            return new Earlier("forecast", new[] { "results.md", "results.json", "forecasts.png" }.Where(n => File.Exists(Here(n)))
                .Concat(System.IO.Directory.EnumerateDirectories(directory).Select(Path.GetFileName)
                    .Where(d => File.Exists(Path.Combine(directory, d!, "forecaster.safetensors"))).Select(d => $"{d}/forecaster.safetensors")).ToList());
        if (title?.StartsWith("# DNA classification") == true)
            return new Earlier("dna-classify", new[] { "results.md", "results.json" }.Where(n => File.Exists(Here(n))).ToList());
        var entries = System.IO.Directory.EnumerateFileSystemEntries(directory).ToList();
        return entries.Count > 0 && entries.All(e => System.IO.Directory.Exists(e) && IsRun(e)) ? new Earlier(null, []) : null;
    }

    static bool IsTitansCheckpoint(string path)
    {
        if (!File.Exists(path)) return false;
        try { return Checkpoints.SafeTensors.ReadMetadata(path).GetValueOrDefault("format")?.StartsWith("titans-") == true; }
        catch (InvalidDataException) { return false; }
    }

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
                .Where(f => AtomicFile.IsTemporaryOf(f, path) || IsEarlierTemporaryOf(Path.GetFileName(f), Path.GetFileName(path))));
        }
        if (leftovers.Count == 0) return;
        long bytes = leftovers.Sum(f => new FileInfo(f).Length);
        foreach (string file in leftovers) File.Delete(file);
        Console.WriteLine($"Removed {leftovers.Count} temporary file(s) of {bytes / (1024.0 * 1024):N1} MiB that an interrupted run left in {Directory}.");
    }

    /// <summary>The temporary names of builds before <see cref="AtomicFile"/>: NAME.tmp, NAME.tmp.png (plots), NAME.tmp-xxxxxxxx.xxx (checkpoints).</summary>
    static bool IsEarlierTemporaryOf(string candidate, string name) =>
        candidate == name + ".tmp" || candidate == name + ".tmp.png" ||
        System.Text.RegularExpressions.Regex.IsMatch(candidate, "^" + System.Text.RegularExpressions.Regex.Escape(name) + @"\.tmp-[a-z0-9]{8}\.[a-z0-9]{3}$");

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
