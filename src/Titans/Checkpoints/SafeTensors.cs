using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Titans.Runtime;
using static TorchSharp.torch;

namespace Titans.Checkpoints;

/// <summary>
/// Tensors read from a safetensors file, in the order their bytes sit in the file, with the file's metadata. Owns
/// the tensors (they belong to no dispose scope): disposing the content disposes them.
/// </summary>
public sealed class SafeTensorsContent : IDisposable
{
    readonly string source;

    internal SafeTensorsContent(OrderedDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string> metadata, string source)
    {
        Tensors = tensors;
        Metadata = metadata;
        this.source = source;
    }

    public IReadOnlyDictionary<string, Tensor> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The named tensor; a missing name throws with the names the file does have, to spot a renamed key.</summary>
    public Tensor this[string name] => Tensors.TryGetValue(name, out var tensor) ? tensor
        : throw new KeyNotFoundException($"No tensor '{name}' in '{source}'. " + (Tensors.Count == 0 ? "It has none."
            : $"It has: {string.Join(", ", Tensors.Keys.Take(10))}" + (Tensors.Count > 10 ? $" (and {Tensors.Count - 10} more)." : ".")));

    public void Dispose()
    {
        foreach (var tensor in Tensors.Values) tensor.Dispose();
    }
}

/// <summary>
/// The Hugging Face safetensors format: an 8-byte little-endian header length N, N bytes of JSON naming each tensor's
/// dtype, shape and byte range, then the packed row-major little-endian data. Files load in other frameworks and,
/// unlike pickles, reading one runs no code. Every malformed input is reported as <see cref="InvalidDataException"/>.
/// Assumes a little-endian host (tensor memory is copied as is).
/// </summary>
public static class SafeTensors
{
    const string MetadataKey = "__metadata__";
    /// <summary>
    /// The metadata key of the SHA-256 (lowercase hex) of the whole data buffer, everything after the header: written
    /// on every save and checked on load when present, so a flipped byte inside tensor data is caught. Any tool can
    /// check it (docs/checkpoints.md); files written elsewhere, without it, load unchecked.
    /// </summary>
    public const string DataChecksumKey = "tensor_data_sha256";
    /// <summary>
    /// The metadata key of the SHA-256 (lowercase hex) of the header itself (the JSON after the 8-byte length, padding
    /// included) as written with this value replaced by 64 '0' characters. With the data checksum inside the header it
    /// covers the whole file, so an edited step or configuration is caught as surely as a flipped weight. Checked on
    /// load when present (files of earlier builds and of other tools lack it).
    /// </summary>
    public const string HeaderChecksumKey = "header_sha256";
    static readonly string HeaderChecksumPlaceholder = new('0', 64);
    /// <summary>The reference implementation's limit: a larger length means a corrupt or foreign file.</summary>
    const long MaxHeaderBytes = 100_000_000;
    /// <summary>A span's length is an int, so tensor memory is copied in pieces of at most this many bytes.</summary>
    const long MaxSpanBytes = 1L << 30;

    sealed record DType(string Name, ScalarType Type, int Size);

    static readonly DType[] DTypes =
    [
        new("F64", ScalarType.Float64, 8), new("F32", ScalarType.Float32, 4), new("F16", ScalarType.Float16, 2),
        new("BF16", ScalarType.BFloat16, 2), new("I64", ScalarType.Int64, 8), new("I32", ScalarType.Int32, 4),
        new("I16", ScalarType.Int16, 2), new("I8", ScalarType.Int8, 1), new("U8", ScalarType.Byte, 1),
        new("BOOL", ScalarType.Bool, 1),
    ];

    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>One tensor's header entry; Begin and End are offsets into the data buffer, End exclusive.</summary>
    sealed record Entry(string Name, DType DType, long[] Shape, long Begin, long End);

    /// <summary>
    /// Writes to a temporary file beside <paramref name="path"/>, flushed to disk, then renames it over the target
    /// (<see cref="AtomicFile"/>), so a crash or an error mid-save leaves the previous file intact.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        AtomicFile.Write(path, file => Write(file, tensors, metadata));

    /// <summary>
    /// Writes the tensors in the order given, packed. Names and dtypes are checked before the first byte is written.
    /// Tensors may be on any device, non-contiguous or require grad; their detached CPU values are written.
    /// </summary>
    public static void Write(Stream stream, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var entries = new List<(Entry Entry, Tensor Tensor)>();
        var names = new HashSet<string>();
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            if (string.IsNullOrEmpty(name)) throw new ArgumentException("A tensor name is empty.", nameof(tensors));
            if (name == MetadataKey) throw new ArgumentException($"'{MetadataKey}' is reserved for the metadata, not a tensor name.", nameof(tensors));
            if (!names.Add(name)) throw new ArgumentException($"Tensor name '{name}' is given twice.", nameof(tensors));
            var dtype = Array.Find(DTypes, d => d.Type == tensor.dtype)
                ?? throw new ArgumentException($"Tensor '{name}' has dtype {tensor.dtype}, which safetensors does not support here.", nameof(tensors));
            long bytes = checked(tensor.numel() * dtype.Size);
            entries.Add((new Entry(name, dtype, tensor.shape, offset, offset + bytes), tensor));
            offset += bytes;
        }

        foreach (string reserved in new[] { DataChecksumKey, HeaderChecksumKey })
            if (metadata?.ContainsKey(reserved) == true)
                throw new ArgumentException($"The metadata key '{reserved}' is reserved for the file's checksums.", nameof(metadata));
        var withChecksum = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>())
        {
            [DataChecksumKey] = DataChecksum(entries),
            [HeaderChecksumKey] = HeaderChecksumPlaceholder,
        };
        byte[] header = Header(entries.Select(e => e.Entry), withChecksum);
        int at = ChecksumPosition(header, HeaderChecksumPlaceholder) ?? throw new InvalidOperationException("The header checksum's place was not found.");
        Encoding.ASCII.GetBytes(Convert.ToHexStringLower(SHA256.HashData(header))).CopyTo(header, at);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        foreach (var (entry, tensor) in entries)
        {
            using var scope = NewDisposeScope();
            ForEachSpan(tensor.detach().cpu().contiguous(), entry.DType.Size, span => stream.Write(span));
        }
    }

    /// <summary>The SHA-256 of the tensors' bytes as they will be written, in order (a first pass over their memory).</summary>
    static string DataChecksum(List<(Entry Entry, Tensor Tensor)> entries)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (entry, tensor) in entries)
        {
            using var scope = NewDisposeScope();
            ForEachSpan(tensor.detach().cpu().contiguous(), entry.DType.Size, span => hash.AppendData(span));
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>The header JSON, padded with spaces so the data starts at a multiple of 8 bytes from the file start.</summary>
    static byte[] Header(IEnumerable<Entry> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        // Names and metadata stay readable in the file (no \uXXXX for non-ASCII or '+'); the header is never embedded in HTML.
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is not null)
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            foreach (var entry in entries)
            {
                json.WriteStartObject(entry.Name);
                json.WriteString("dtype", entry.DType.Name);
                json.WriteStartArray("shape");
                foreach (long size in entry.Shape) json.WriteNumberValue(size);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(entry.Begin);
                json.WriteNumberValue(entry.End);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int padded = (buffer.WrittenCount + 8 + 7) / 8 * 8 - 8;
        byte[] header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }

    /// <summary>A file's metadata alone (its header is read and checked; no tensor is read).</summary>
    public static IReadOnlyDictionary<string, string> ReadMetadata(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var (_, metadata) = ReadHeader(file, path);
        metadata.Remove(DataChecksumKey);
        return metadata;
    }

    /// <summary>Reads a file; the tensors are on the CPU.</summary>
    public static SafeTensorsContent Load(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return Read(file, path);
    }

    /// <summary>
    /// Reads a safetensors stream from its current position to its end; <paramref name="sourceName"/> starts every
    /// error message. The header is validated completely (and, on a seekable stream, against the stream's length)
    /// before any tensor is allocated.
    /// </summary>
    public static SafeTensorsContent Read(Stream stream, string sourceName)
    {
        var (entries, metadata) = ReadHeader(stream, sourceName);
        var layout = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
        long dataBytes = CheckPacked(layout, sourceName);
        if (stream.CanSeek)
        {
            long available = stream.Length - stream.Position;
            if (layout.FirstOrDefault(e => e.End > available) is { } cut)
                throw Bad(sourceName, $"is truncated: tensor '{cut.Name}' needs data bytes [{cut.Begin}, {cut.End}) but the data buffer has only {available}");
            if (available > dataBytes)
                throw Bad(sourceName, $"has {available - dataBytes} trailing bytes after the last tensor");
        }

        using var scope = NewDisposeScope();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var tensors = new OrderedDictionary<string, Tensor>();
        foreach (var entry in layout)
        {
            var tensor = Allocate(entry, sizeChecked: stream.CanSeek, sourceName);
            long position = entry.Begin;
            ForEachSpan(tensor, entry.DType.Size, span =>
            {
                int read = stream.ReadAtLeast(span, span.Length, throwOnEndOfStream: false);
                if (read < span.Length)
                    throw Bad(sourceName, $"is truncated: tensor '{entry.Name}' needs data bytes [{entry.Begin}, {entry.End}) but the data ends at byte {position + read}");
                position += read;
                hash.AppendData(span);
            });
            tensors.Add(entry.Name, tensor);
        }
        if (stream.ReadByte() != -1) throw Bad(sourceName, "has trailing bytes after the last tensor");
        if (metadata.Remove(DataChecksumKey, out var recorded))   // the container's own, not the caller's metadata
        {
            string actual = Convert.ToHexStringLower(hash.GetHashAndReset());
            if (!string.Equals(actual, recorded, StringComparison.OrdinalIgnoreCase))
                throw Bad(sourceName, $"is damaged: the SHA-256 of its tensor data is {actual[..16]}…, but {recorded[..Math.Min(16, recorded.Length)]}… was recorded when it was saved");
        }

        foreach (var tensor in tensors.Values) tensor.DetachFromDisposeScope();
        return new SafeTensorsContent(tensors, metadata, sourceName);
    }

    /// <summary>
    /// An unseekable stream's length cannot be checked against the header first, so a corrupt header can declare more
    /// than memory holds; that is reported as bad data. Where the size was checked, running out of memory is just that.
    /// </summary>
    static Tensor Allocate(Entry entry, bool sizeChecked, string source)
    {
        try { return empty(entry.Shape, entry.DType.Type, CPU); }
        catch (ExternalException e) when (!sizeChecked)
        {
            throw Bad(source, $"declares tensor '{entry.Name}' of {entry.End - entry.Begin} bytes, which could not be allocated "
                + $"(the stream cannot seek, so its length could not be checked first): {e.Message.Split('\n')[0]}");
        }
    }

    /// <summary>Where <paramref name="value"/> sits in the header as the header checksum's value; null where it does not.</summary>
    static int? ChecksumPosition(byte[] header, string value)
    {
        byte[] pattern = Encoding.UTF8.GetBytes($"\"{HeaderChecksumKey}\":\"{value}\"");
        int at = header.AsSpan().IndexOf(pattern);
        return at < 0 ? null : at + pattern.Length - 1 - value.Length;
    }

    /// <summary>The header hashes to what it records, with the record itself read as zeros.</summary>
    static void CheckHeader(byte[] header, string recorded, string source)
    {
        if (recorded.Length != 64 || ChecksumPosition(header, recorded) is not int at)
            throw Bad(source, $"is damaged: its {HeaderChecksumKey} '{recorded[..Math.Min(16, recorded.Length)]}' is not a SHA-256 written in place");
        byte[] zeroed = (byte[])header.Clone();
        Encoding.ASCII.GetBytes(HeaderChecksumPlaceholder).CopyTo(zeroed, at);
        string actual = Convert.ToHexStringLower(SHA256.HashData(zeroed));
        if (!string.Equals(actual, recorded, StringComparison.OrdinalIgnoreCase))
            throw Bad(source, $"is damaged: the SHA-256 of its header (metadata, names and shapes) is {actual[..16]}…, but {recorded[..16]}… was " +
                              "recorded when it was saved (was it edited?)");
    }

    /// <summary>The header's entries and metadata, its checksum (where recorded) checked and removed from the metadata.</summary>
    static (List<Entry> Entries, Dictionary<string, string> Metadata) ReadHeader(Stream stream, string source)
    {
        Span<byte> prefix = stackalloc byte[8];
        int got = stream.ReadAtLeast(prefix, 8, throwOnEndOfStream: false);
        if (got < 8) throw Bad(source, $"is truncated: {got} bytes, shorter than the 8-byte header length");
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (length > MaxHeaderBytes)
            throw Bad(source, $"declares a header of {length} bytes, over the {MaxHeaderBytes}-byte limit: it is corrupt or not a safetensors file");
        byte[] bytes = new byte[length];
        got = stream.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
        if (got < bytes.Length) throw Bad(source, $"is truncated: the header should be {length} bytes but only {got} follow");

        string text;
        try { text = StrictUtf8.GetString(bytes); }
        catch (DecoderFallbackException) { throw Bad(source, "has a header that is not valid UTF-8"); }
        using var document = ParseJson(text, source);
        if (document.RootElement.ValueKind != JsonValueKind.Object)
            throw Bad(source, $"has a header that is a JSON {document.RootElement.ValueKind}, not an object");

        var entries = new List<Entry>();
        var metadata = new Dictionary<string, string>();
        var seen = new HashSet<string>();
        foreach (var property in document.RootElement.EnumerateObject())
        {
            if (!seen.Add(property.Name)) throw Bad(source, $"lists '{property.Name}' twice in its header (duplicate name)");
            if (property.Name == MetadataKey) ReadMetadata(property.Value, metadata, source);
            else entries.Add(ReadEntry(property.Name, property.Value, source));
        }
        if (metadata.Remove(HeaderChecksumKey, out var recorded)) CheckHeader(bytes, recorded, source);
        return (entries, metadata);
    }

    static JsonDocument ParseJson(string text, string source)
    {
        try { return JsonDocument.Parse(text); }
        catch (JsonException e) { throw Bad(source, $"has a header that is not valid JSON ({e.Message.TrimEnd('.')})"); }
    }

    static void ReadMetadata(JsonElement element, Dictionary<string, string> metadata, string source)
    {
        if (element.ValueKind != JsonValueKind.Object)
            throw Bad(source, $"has a {MetadataKey} that is a JSON {element.ValueKind}, not an object of strings");
        foreach (var item in element.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw Bad(source, $"has a {MetadataKey} value for '{item.Name}' that is a JSON {item.Value.ValueKind}, not a string");
            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                throw Bad(source, $"lists '{item.Name}' twice in its {MetadataKey} (duplicate key)");
        }
    }

    static Entry ReadEntry(string name, JsonElement element, string source)
    {
        InvalidDataException Wrong(string problem) => Bad(source, $"has a malformed header: tensor '{name}' {problem}");

        if (name.Length == 0) throw Bad(source, "has a tensor with an empty name");
        if (element.ValueKind != JsonValueKind.Object) throw Wrong($"is a JSON {element.ValueKind}, not an object");
        JsonElement Field(string field) => element.TryGetProperty(field, out var value) ? value : throw Wrong($"has no \"{field}\"");

        var dtypeElement = Field("dtype");
        if (dtypeElement.ValueKind != JsonValueKind.String) throw Wrong($"has a \"dtype\" that is a JSON {dtypeElement.ValueKind}, not a string");
        string dtypeName = dtypeElement.GetString()!;
        var dtype = Array.Find(DTypes, d => d.Name == dtypeName)
            ?? throw Wrong($"has unknown dtype '{dtypeName}' (supported: {string.Join(", ", DTypes.Select(d => d.Name))})");

        long[] shape = Integers(Field("shape")) ?? throw Wrong("has a \"shape\" that is not an array of integers");
        long negative = shape.FirstOrDefault(size => size < 0);
        if (negative < 0) throw Wrong($"has a negative dimension ({negative}) in its shape");

        long[]? offsets = Integers(Field("data_offsets"));
        if (offsets is not [var begin, var end] || begin < 0 || end < begin)
            throw Wrong("has \"data_offsets\" that are not two non-negative integers [begin, end] with begin <= end");

        long expected;
        try { expected = checked(shape.Aggregate(1L, (product, size) => product * size) * dtype.Size); }
        catch (OverflowException) { throw Wrong($"has a shape [{string.Join(", ", shape)}] too large to address"); }
        if (end - begin != expected)
            throw Wrong($"has shape [{string.Join(", ", shape)}] of {dtype.Name}, which needs {expected} bytes, but its data_offsets [{begin}, {end}] cover {end - begin} bytes");
        return new Entry(name, dtype, shape, begin, end);
    }

    /// <summary>The array's values when it is an array of integers that fit a long; null otherwise.</summary>
    static long[]? Integers(JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Array) return null;
        var values = new long[element.GetArrayLength()];
        int i = 0;
        foreach (var item in element.EnumerateArray())
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out values[i++])) return null;
        return values;
    }

    /// <summary>Checks the tensors (sorted by offset) tile the data buffer from 0 with no gap or overlap; returns its length.</summary>
    static long CheckPacked(List<Entry> layout, string source)
    {
        long end = 0;
        foreach (var entry in layout)
        {
            if (entry.Begin < end)
                throw Bad(source, $"has overlapping tensors: '{entry.Name}' (data_offsets [{entry.Begin}, {entry.End}]) starts before byte {end}, where the tensor before it ends");
            if (entry.Begin > end)
                throw Bad(source, $"has a gap of {entry.Begin - end} unused bytes in its data before tensor '{entry.Name}' (data_offsets [{entry.Begin}, {entry.End}])");
            end = entry.End;
        }
        return end;
    }

    /// <summary>Hands a contiguous CPU tensor's memory to <paramref name="action"/> in order, in spans of at most 1 GiB.</summary>
    static void ForEachSpan(Tensor contiguous, int elementSize, Action<Span<byte>> action)
    {
        using var flat = contiguous.view(-1);
        long count = flat.shape[0], perSpan = MaxSpanBytes / elementSize;
        for (long start = 0; start < count; start += perSpan)
        {
            using var piece = flat.narrow(0, start, Math.Min(perSpan, count - start));
            action(piece.bytes);
        }
    }

    static InvalidDataException Bad(string source, string problem) => new($"'{source}' {problem}.");
}
