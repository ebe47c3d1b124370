using System.Text;

namespace Titans.Text;

/// <summary>
/// The text of a UTF-8 file, or of every <c>*.txt</c> file under a folder (in ordinal path order, separated by a blank
/// line). Invalid UTF-8 and empty corpora are refused with the file and byte offset, never decoded into garbage.
/// </summary>
public static class TextCorpus
{
    static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    /// <summary>The largest file read: a corpus becomes 8 bytes per token in memory, and a device such as /dev/zero never ends.</summary>
    public const long MaxFileBytes = 1L << 30;

    public static string Load(string path)
    {
        if (File.Exists(path)) return Decode(path, ReadBounded(path), requireText: true);
        if (!Directory.Exists(path)) throw new FileNotFoundException($"No corpus file or folder at '{path}'.", path);
        var files = Directory.EnumerateFiles(path, "*.txt", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new InvalidDataException($"The corpus folder '{path}' holds no *.txt files.");
        var text = new StringBuilder();
        foreach (string file in files)
        {
            if (text.Length > 0) text.Append("\n\n");
            text.Append(Decode(file, ReadBounded(file), requireText: false));
        }
        string corpus = text.ToString();
        if (string.IsNullOrWhiteSpace(corpus)) throw new InvalidDataException($"The corpus folder '{path}' holds only empty files.");
        return corpus;
    }

    /// <summary>A file's bytes, refused past <see cref="MaxFileBytes"/> (read in pieces, so an endless device stops there too).</summary>
    public static byte[] ReadBounded(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var bytes = new MemoryStream();
        var buffer = new byte[1 << 20];
        int read;
        while ((read = file.Read(buffer)) > 0)
        {
            if (bytes.Length + read > MaxFileBytes)
                throw new InvalidDataException($"'{path}' is larger than {MaxFileBytes >> 30} GiB (or endless, like a device); give a smaller text file.");
            bytes.Write(buffer, 0, read);
        }
        return bytes.ToArray();
    }

    /// <summary>
    /// <paramref name="inner"/> read through a counter that stops at <see cref="MaxFileBytes"/> with an error naming
    /// <paramref name="path"/>: for streams whose length is not the file's (a gzip file can inflate without bound).
    /// </summary>
    public static Stream Bounded(Stream inner, string path) => new BoundedStream(inner, path);

    sealed class BoundedStream(Stream inner, string path) : Stream
    {
        long read;
        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));
        public override int Read(Span<byte> buffer) => Count(inner.Read(buffer));
        int Count(int got)
        {
            if ((read += got) > MaxFileBytes)
                throw new InvalidDataException($"'{path}' holds more than {MaxFileBytes >> 30} GiB (uncompressed); give a smaller file.");
            return got;
        }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => read; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }

    /// <summary>Strict UTF-8 (a leading byte-order mark is dropped); the error names the first bad byte's offset.</summary>
    public static string Decode(string source, byte[] bytes, bool requireText = true)
    {
        int start = bytes.AsSpan().StartsWith(Encoding.UTF8.Preamble) ? 3 : 0;
        string text;
        try { text = Strict.GetString(bytes, start, bytes.Length - start); }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"'{source}' is not UTF-8 text: invalid byte 0x{e.BytesUnknown?.FirstOrDefault():X2} at offset {start + e.Index}.", e);
        }
        if (requireText && string.IsNullOrWhiteSpace(text)) throw new InvalidDataException($"The corpus '{source}' is empty.");
        return text;
    }
}
