using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Titans.Checkpoints;
using static TorchSharp.torch;

namespace Titans.Tests.Checkpoints;

/// <summary>
/// safetensors files: exact round trips of every dtype, a file built by hand from the format's description, and a
/// plain <see cref="InvalidDataException"/> for every kind of malformed or cut-off input, seekable or not.
/// </summary>
public sealed class SafeTensorsTests : IDisposable
{
    readonly DirectoryInfo folder = Directory.CreateTempSubdirectory("safetensors-tests-");

    public void Dispose() => folder.Delete(recursive: true);

    string PathOf(string name) => Path.Combine(folder.FullName, name);

    /// <summary>A tensor of random bits (so NaNs, infinities and subnormals too; 0 or 1 for bool) and those bits.</summary>
    static (Tensor Tensor, byte[] Bytes) RandomBits(ScalarType dtype, Random random, params long[] shape)
    {
        var tensor = empty(shape, dtype);
        var bytes = new byte[tensor.numel() * tensor.ElementSize];
        random.NextBytes(bytes);
        if (dtype == ScalarType.Bool)
            for (int i = 0; i < bytes.Length; i++) bytes[i] &= 1;
        tensor.bytes = bytes;
        return (tensor, bytes);
    }

    /// <summary>The row-major bytes of the transpose of a [rows, columns] matrix, computed apart from TorchSharp.</summary>
    static byte[] Transposed(byte[] bytes, int rows, int columns, int elementSize)
    {
        var result = new byte[bytes.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                Array.Copy(bytes, (r * columns + c) * elementSize, result, (c * rows + r) * elementSize, elementSize);
        return result;
    }

    [Theory]
    [InlineData(ScalarType.Float64)]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Int64)]
    [InlineData(ScalarType.Int32)]
    [InlineData(ScalarType.Int16)]
    [InlineData(ScalarType.Int8)]
    [InlineData(ScalarType.Byte)]
    [InlineData(ScalarType.Bool)]
    public void EveryDtypeRoundTripsBitForBit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var random = new Random((int)dtype);
        var (scalar, scalarBytes) = RandomBits(dtype, random);
        var (hollow, _) = RandomBits(dtype, random, 2, 0, 3);
        var (cube, cubeBytes) = RandomBits(dtype, random, 2, 3, 4);
        var (matrix, matrixBytes) = RandomBits(dtype, random, 5, 3);
        var (tall, tallBytes) = RandomBits(dtype, random, 4, 6);
        int size = (int)scalar.ElementSize;
        var tensors = new List<KeyValuePair<string, Tensor>>
        {
            new("scalar", scalar), new("empty", hollow), new("cube", cube),
            new("transposed", matrix.t()), new("rows 1 and 2", tall.narrow(0, 1, 2)),
        };
        var expected = new List<(long[] Shape, byte[] Bytes)>
        {
            ([], scalarBytes), ([2, 0, 3], []), ([2, 3, 4], cubeBytes),
            ([3, 5], Transposed(matrixBytes, 5, 3, size)), ([2, 6], tallBytes[(6 * size)..(18 * size)]),
        };
        if (is_floating_point(scalar))
        {
            var (trainable, trainableBytes) = RandomBits(dtype, random, 7);
            tensors.Add(new("trainable", trainable.requires_grad_()));
            expected.Add(([7], trainableBytes));
        }
        Assert.False(tensors[3].Value.is_contiguous());

        string path = PathOf("all.safetensors");
        SafeTensors.Save(path, tensors);
        using var content = SafeTensors.Load(path);

        Assert.Equal(tensors.Select(t => t.Key), content.Tensors.Keys);
        foreach (var ((name, _), (shape, bytes)) in tensors.Zip(expected))
        {
            var loaded = content[name];
            Assert.Equal(dtype, loaded.dtype);
            Assert.Equal(shape, loaded.shape);
            Assert.Equal(TorchSharp.DeviceType.CPU, loaded.device_type);
            Assert.False(loaded.requires_grad);
            Assert.True(bytes.AsSpan().SequenceEqual(loaded.bytes), $"{name}: bytes differ");
        }
    }

    [Fact]
    public void OrderAndMetadataSurvive()
    {
        using var scope = NewDisposeScope();
        var tensors = new KeyValuePair<string, Tensor>[]
        {
            new("z.last", ones(2, dtype: ScalarType.Int64)), new("a.first", zeros(3)),
            new("m.2", ones(1, dtype: ScalarType.Bool)), new("m.10", full(2, 2, 0.5, dtype: ScalarType.BFloat16)),
        };
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode ✓ \"quoted\"", ["empty"] = "" };
        var stream = new MemoryStream();
        SafeTensors.Write(stream, tensors, metadata);
        Assert.Contains("ünïcode ✓", Encoding.UTF8.GetString(stream.ToArray())); // readable in the file, not \u-escaped
        stream.Position = 0;
        using var content = SafeTensors.Read(stream, "memory");

        Assert.Equal(tensors.Select(t => t.Key), content.Tensors.Keys);
        Assert.Equal(metadata.OrderBy(m => m.Key), content.Metadata.OrderBy(m => m.Key));
        foreach (var (name, tensor) in tensors)
        {
            Assert.Equal(tensor.dtype, content[name].dtype);
            Assert.Equal(tensor.shape, content[name].shape);
            Assert.True(tensor.eq(content[name]).all().item<bool>(), name);
        }
    }

    [Fact]
    public void WithoutMetadataTheMetadataIsEmpty()
    {
        using var scope = NewDisposeScope();
        var stream = new MemoryStream();
        SafeTensors.Write(stream, [new("x", ones(1))]);
        stream.Position = 0;
        using var content = SafeTensors.Read(stream, "memory");
        Assert.Empty(content.Metadata);
    }

    [Fact]
    public void TheRecordedChecksumIsTheSha256OfTheDataBufferAndCatchesAFlippedByte()
    {
        using var scope = NewDisposeScope();
        string path = PathOf("checked.safetensors");
        SafeTensors.Save(path, [new("w", arange(64, dtype: ScalarType.Float32)), new("step", tensor(3L))], new Dictionary<string, string> { ["k"] = "v" });
        byte[] file = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(file);
        // What any tool can check: hashlib.sha256(data[8 + n:]) against the header's __metadata__.
        using (var json = JsonDocument.Parse(Encoding.UTF8.GetString(file, 8, (int)n)))
            Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(file.AsSpan((int)(8 + n)))),
                json.RootElement.GetProperty("__metadata__").GetProperty(SafeTensors.DataChecksumKey).GetString());
        using (var content = SafeTensors.Load(path))
            Assert.Equal(new Dictionary<string, string> { ["k"] = "v" }, content.Metadata);   // the container's key is not the caller's

        file[8 + n + 37] ^= 0x10;   // one bit inside w's data: still a well-formed file
        File.WriteAllBytes(path, file);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("damaged", e.Message);
        Assert.Contains("SHA-256", e.Message);
    }

    [Theory]
    [InlineData(SafeTensors.DataChecksumKey)]
    [InlineData(SafeTensors.HeaderChecksumKey)]
    public void TheChecksumKeysAreReserved(string key)
    {
        using var scope = NewDisposeScope();
        var e = Assert.Throws<ArgumentException>(() => SafeTensors.Write(new MemoryStream(), [new("x", ones(1))],
            new Dictionary<string, string> { [key] = "0" }));
        Assert.Contains("reserved", e.Message);
    }

    [Fact]
    public void TheHeaderChecksumCoversMetadataNamesAndShapesAndAnyToolCanCheckIt()
    {
        using var scope = NewDisposeScope();
        string path = PathOf("header.safetensors");
        SafeTensors.Save(path, [new("w", arange(6, dtype: ScalarType.Float32).reshape(2, 3))], new Dictionary<string, string> { ["step"] = "20" });
        byte[] file = File.ReadAllBytes(path);
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
        string header = Encoding.UTF8.GetString(file, 8, n);
        string recorded;
        using (var json = JsonDocument.Parse(header))
            recorded = json.RootElement.GetProperty("__metadata__").GetProperty(SafeTensors.HeaderChecksumKey).GetString()!;
        // What any tool can check: the header with the recorded value written as 64 zeros hashes to it.
        Assert.Equal(recorded, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(header.Replace(recorded, new string('0', 64))))));
        using (var content = SafeTensors.Load(path))
            Assert.Equal(new Dictionary<string, string> { ["step"] = "20" }, content.Metadata);

        foreach (var (from, to) in new[] { ("\"step\":\"20\"", "\"step\":\"15\""), ("[2,3]", "[3,2]"), (recorded, recorded.Replace(recorded[0], recorded[0] == 'a' ? 'b' : 'a')) })
        {
            File.WriteAllBytes(path, [.. file[..8], .. Encoding.UTF8.GetBytes(header.Replace(from, to)), .. file[(8 + n)..]]);
            var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(path));
            Assert.Contains("is damaged: the SHA-256 of its header", e.Message);
        }
    }

    /// <summary>A file in the format's own terms: length prefix, header JSON padded with spaces, then raw data.</summary>
    static byte[] Crafted(string headerJson, byte[] data, bool pad = true) => Crafted(Encoding.UTF8.GetBytes(headerJson), data, pad);

    static byte[] Crafted(byte[] headerBytes, byte[] data, bool pad = true)
    {
        var header = headerBytes.ToList();
        while (pad && (8 + header.Count) % 8 != 0) header.Add((byte)' ');
        var file = new byte[8 + header.Count + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)header.Count);
        header.CopyTo(file, 8);
        data.CopyTo(file, 8 + header.Count);
        return file;
    }

    [Fact]
    public void HandWrittenFileReadsAndWritesAsTheFormatSays()
    {
        float[] weight = [1f, -2f, 0.5f, 3.25f];
        var data = new byte[24];
        for (int i = 0; i < 4; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4 * i), weight[i]);
        BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(16), 7);
        string path = PathOf("golden.safetensors");
        File.WriteAllBytes(path, Crafted(
            """{"__metadata__":{"format":"pt"},"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"step":{"dtype":"I64","shape":[],"data_offsets":[16,24]}}""",
            data));

        using var content = SafeTensors.Load(path);
        AssertGolden(content);

        var stream = new MemoryStream();
        SafeTensors.Write(stream, content.Tensors, content.Metadata);
        byte[] written = stream.ToArray();
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(written);
        Assert.Equal(0, (8 + n) % 8);
        Assert.Equal(8 + n + data.Length, written.Length);
        Assert.Equal(data, written[(int)(8 + n)..]);
        string header = Encoding.UTF8.GetString(written, 8, (int)n);
        Assert.Matches(@"(?s)^\{.*\} *$", header); // one JSON object, then spaces as padding
        using (var json = JsonDocument.Parse(header))
        {
            var root = json.RootElement;
            Assert.Equal("pt", root.GetProperty("__metadata__").GetProperty("format").GetString());
            Assert.Equal("F32", root.GetProperty("weight").GetProperty("dtype").GetString());
            Assert.Equal([2L, 2L], root.GetProperty("weight").GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()));
            Assert.Equal([0L, 16L], root.GetProperty("weight").GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()));
            Assert.Equal("I64", root.GetProperty("step").GetProperty("dtype").GetString());
            Assert.Equal(0, root.GetProperty("step").GetProperty("shape").GetArrayLength());
            Assert.Equal([16L, 24L], root.GetProperty("step").GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()));
        }
        using var again = SafeTensors.Read(new MemoryStream(written), "rewritten");
        AssertGolden(again);

        void AssertGolden(SafeTensorsContent c)
        {
            Assert.Equal(["weight", "step"], c.Tensors.Keys);
            Assert.Equal(new Dictionary<string, string> { ["format"] = "pt" }, c.Metadata);
            Assert.Equal(ScalarType.Float32, c["weight"].dtype);
            Assert.Equal([2L, 2L], c["weight"].shape);
            Assert.Equal(weight, c["weight"].data<float>().ToArray());
            Assert.Equal(ScalarType.Int64, c["step"].dtype);
            Assert.Empty(c["step"].shape);
            Assert.Equal(7L, c["step"].item<long>());
        }
    }

    /// <summary>Hands out its bytes a few at a time and cannot seek, like a network or decompression stream.</summary>
    sealed class Trickle(byte[] bytes) : Stream
    {
        readonly MemoryStream inner = new(bytes);
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, Math.Min(count, 5));
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    /// <summary>Reads the bytes as a seekable and as a non-seekable stream; both must refuse with the same telling words.</summary>
    static void AssertRejected(byte[] bytes, params string[] words)
    {
        foreach (var stream in new Stream[] { new MemoryStream(bytes), new Trickle(bytes) })
        {
            var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(stream, "crafted").Dispose());
            Assert.StartsWith("'crafted' ", error.Message);
            foreach (string word in words) Assert.Contains(word, error.Message);
        }
    }

    [Theory]
    [InlineData("not json", 0, "not valid JSON")]
    [InlineData("   ", 0, "not valid JSON")]
    [InlineData("[1, 2]", 0, "not an object")]
    [InlineData("""{"w":[1]}""", 0, "'w'", "not an object")]
    [InlineData("""{"w":{"shape":[1],"data_offsets":[0,4]}}""", 4, "'w'", "\"dtype\"")]
    [InlineData("""{"w":{"dtype":"F32","data_offsets":[0,4]}}""", 4, "'w'", "\"shape\"")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1]}}""", 4, "'w'", "\"data_offsets\"")]
    [InlineData("""{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}""", 4, "'w'", "\"dtype\"", "not a string")]
    [InlineData("""{"w":{"dtype":"F32","shape":"[1]","data_offsets":[0,4]}}""", 4, "'w'", "\"shape\"")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}""", 4, "'w'", "\"shape\"")]
    [InlineData("""{"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}""", 1, "'w'", "F8_E4M3")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}}""", 0, "'w'", "negative")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}}""", 4, "'w'", "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}""", 8, "'w'", "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", 0, "'w'", "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}}""", 4, "'w'", "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}""", 8, "'w'", "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}""", 20, "'w'", "24", "20")]
    [InlineData("""{"w":{"dtype":"F64","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}""", 8, "'w'", "too large")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4, "truncated", "'w'")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, "overlapping", "'b'")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, "gap", "'b'")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "gap", "'a'")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 8, "trailing")]
    [InlineData("""{"__metadata__":{"k":1}}""", 0, "__metadata__", "'k'", "not a string")]
    [InlineData("""{"__metadata__":["k"]}""", 0, "__metadata__", "not an object")]
    [InlineData("""{"__metadata__":{"k":"1","k":"2"}}""", 0, "__metadata__", "duplicate", "'k'")]
    [InlineData("""{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}""", 2, "duplicate", "'a'")]
    [InlineData("""{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}""", 1, "empty name")]
    public void MalformedHeaderIsRefusedWithTheReason(string header, int dataBytes, params string[] words) =>
        AssertRejected(Crafted(header, new byte[dataBytes]), words);

    [Fact]
    public void HugeDeclaredTensorIsRefusedWithoutAllocatingIt() =>
        AssertRejected(Crafted("""{"w":{"dtype":"F64","shape":[8796093022208],"data_offsets":[0,70368744177664]}}""", new byte[8]), "'w'", "70368744177664");

    [Fact]
    public void WellFormedCraftedFileIsAccepted()
    {
        // The control for the refusals above: the same construction, valid, reads (zero-length tensors included).
        var bytes = Crafted("""{"e":{"dtype":"F32","shape":[0,2],"data_offsets":[0,0]},"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},"h":{"dtype":"F16","shape":[1],"data_offsets":[3,5]}}""",
            [1, 0, 1, 0, 0x3C], pad: false);
        foreach (var stream in new Stream[] { new MemoryStream(bytes), new Trickle(bytes) })
        {
            using var content = SafeTensors.Read(stream, "crafted");
            Assert.Equal(["e", "b", "h"], content.Tensors.Keys);
            Assert.Equal([true, false, true], content["b"].data<bool>().ToArray());
            Assert.Equal((Half)1, content["h"].item<Half>());
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void ShorterThanTheLengthPrefixIsTruncated(int length) => AssertRejected(new byte[length], "truncated", "8-byte");

    [Fact]
    public void HeaderLongerThanTheFileIsTruncated()
    {
        var bytes = new byte[8 + 10];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 100);
        AssertRejected(bytes, "truncated", "100");
    }

    [Theory]
    [InlineData(100_000_001UL)]
    [InlineData(ulong.MaxValue)]
    public void HeaderOverTheLimitIsRefused(ulong length)
    {
        var bytes = new byte[64];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length);
        AssertRejected(bytes, "limit", length.ToString());
    }

    [Fact]
    public void HeaderThatIsNotUtf8IsRefused() => AssertRejected(Crafted([(byte)'{', (byte)'"', 0xFF, (byte)'"', (byte)':', (byte)'1', (byte)'}'], []), "UTF-8");

    [Fact]
    public void EveryCutOfARealFileIsRefused()
    {
        using var scope = NewDisposeScope();
        var stream = new MemoryStream();
        SafeTensors.Write(stream, [new("a", randn(2, 3)), new("b", tensor(5L)), new("c", ones(4, dtype: ScalarType.BFloat16))],
            new Dictionary<string, string> { ["format"] = "pt" });
        byte[] whole = stream.ToArray();
        string path = PathOf("cut.safetensors");
        for (int length = 0; length < whole.Length; length++)
        {
            File.WriteAllBytes(path, whole[..length]);
            var error = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(path).Dispose());
            Assert.StartsWith($"'{path}' ", error.Message);
            Assert.Contains("truncated", error.Message);
            var unseekable = Assert.Throws<InvalidDataException>(() => SafeTensors.Read(new Trickle(whole[..length]), "cut").Dispose());
            Assert.Contains("truncated", unseekable.Message);
        }
        File.WriteAllBytes(path, whole);
        SafeTensors.Load(path).Dispose();
    }

    [Fact]
    public void FailedSaveLeavesThePreviousFileIntact()
    {
        using var scope = NewDisposeScope();
        string path = PathOf("model.safetensors");
        SafeTensors.Save(path, [new("w", arange(6).reshape(2, 3))]);
        byte[] before = File.ReadAllBytes(path);

        var error = Assert.Throws<ArgumentException>(() => SafeTensors.Save(path,
            [new("w", zeros(100)), new("complex", zeros(2, dtype: ScalarType.ComplexFloat32))]));
        Assert.Contains("'complex'", error.Message);
        Assert.Contains("ComplexFloat32", error.Message);

        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(folder.FullName));
    }

    [Fact]
    public void SaveReplacesTheFileAndLeavesNoTemporaryFile()
    {
        using var scope = NewDisposeScope();
        string path = PathOf("model.safetensors");
        SafeTensors.Save(path, [new("w", zeros(6))]);
        long synced = Titans.Runtime.Posix.FoldersSynced;
        SafeTensors.Save(path, [new("v", ones(2))]);
        using var content = SafeTensors.Load(path);
        Assert.Equal(["v"], content.Tensors.Keys);
        Assert.Equal([path], Directory.GetFiles(folder.FullName));
        // Durable: the rename itself reaches the disk (the folder is flushed after it), not only the file's bytes.
        if (OperatingSystem.IsLinux()) Assert.True(Titans.Runtime.Posix.FoldersSynced > synced, "the folder was not flushed after the rename");
    }

    [Fact]
    public void SaveIntoAMissingFolderSaysSo()
    {
        using var scope = NewDisposeScope();
        Assert.Throws<DirectoryNotFoundException>(() => SafeTensors.Save(PathOf("missing/model.safetensors"), [new("w", ones(1))]));
    }

    [Theory]
    [InlineData("w", "w", "'w'")]
    [InlineData("", "v", "empty")]
    [InlineData("__metadata__", "v", "__metadata__")]
    public void BadNamesAreRefusedBeforeWriting(string first, string second, string word)
    {
        using var scope = NewDisposeScope();
        var stream = new MemoryStream();
        var error = Assert.Throws<ArgumentException>(() => SafeTensors.Write(stream, [new(first, ones(1)), new(second, ones(1))]));
        Assert.Contains(word, error.Message);
        Assert.Equal(0, stream.Length);
    }

    [Fact]
    public void MissingNameListsTheKnownNames()
    {
        using var scope = NewDisposeScope();
        var stream = new MemoryStream();
        SafeTensors.Write(stream, Enumerable.Range(0, 12).Select(i => new KeyValuePair<string, Tensor>($"t{i}", ones(1))));
        stream.Position = 0;
        using var content = SafeTensors.Read(stream, "twelve");
        var error = Assert.Throws<KeyNotFoundException>(() => content["t12"]);
        Assert.Contains("'t12'", error.Message);
        Assert.Contains("t0, t1, t2, t3, t4, t5, t6, t7, t8, t9 (and 2 more)", error.Message);
    }

    [Fact]
    public void ContentOwnsItsTensorsBeyondTheCallersScope()
    {
        string path = PathOf("owned.safetensors");
        using (NewDisposeScope()) SafeTensors.Save(path, [new("w", full(3, 2.5f))]);
        SafeTensorsContent content;
        using (NewDisposeScope()) content = SafeTensors.Load(path);
        var w = content["w"];
        Assert.False(w.IsInvalid);
        Assert.Equal([2.5f, 2.5f, 2.5f], w.data<float>().ToArray());
        content.Dispose();
        Assert.True(w.IsInvalid);
    }
}
