// Compiled by RoslynCodeTaskFactory against netstandard2.0, hence the older APIs and no System.Reflection.Metadata.
#nullable enable
// MSBuild inline task (see TorchSharpJitFix.targets): marks every IL method of the output copy of TorchSharp.dll
// NoOptimization | NoInlining, so the JIT keeps the Scalars and tensors each method hands to libtorch alive until it
// returns, whatever the rest of the program is compiled with.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class KeepTorchSharpUnoptimized : Task
{
    [Required] public string Assembly { get; set; } = "";

    public override bool Execute()
    {
        if (!File.Exists(Assembly)) return true;
        byte[] image = File.ReadAllBytes(Assembly);
        string? error = TryPatch(image, out int patched, out int already);
        if (error != null)
        {
            Log.LogError($"{Assembly} could not be patched ({error}); without the patch an optimized process can free a libtorch argument mid-call.");
            return false;
        }
        if (patched == 0) return true;                                        // an earlier build patched this copy
        // Write beside, then rename: never leave a half-written assembly, never modify a hard-linked source.
        string temp = Assembly + ".tmp";
        File.WriteAllBytes(temp, image);
        File.Replace(temp, Assembly, null);
        Log.LogMessage(MessageImportance.Normal, $"TorchSharp: {patched} methods of {Assembly} marked NoOptimization | NoInlining ({already} were already).");
        return true;
    }

    const ushort NoInlining = 0x0008, NoOptimization = 0x0040, AggressiveInlining = 0x0100, AggressiveOptimization = 0x0200;
    const ushort CodeTypeMask = 0x0003, InternalCall = 0x1000;                // implementation flags
    const ushort PinvokeImpl = 0x2000;                                        // method flags

    /// <summary>Sets the two flags on every method with an IL body. Returns an error or null.</summary>
    public static string? TryPatch(byte[] pe, out int patched, out int already)
    {
        patched = already = 0;
        try
        {
            int peHeader = I32(pe, 0x3C);
            if (I32(pe, peHeader) != 0x00004550) return "not a PE file";
            int coff = peHeader + 4;
            int sections = U16(pe, coff + 2), optionalSize = U16(pe, coff + 16);
            int optional = coff + 20;
            int magic = U16(pe, optional);
            int directories = optional + (magic == 0x20B ? 112 : magic == 0x10B ? 96 : throw new FormatException("unknown optional header"));
            int cliRva = I32(pe, directories + 14 * 8);
            if (cliRva == 0) return "no CLI header: not a .NET assembly";
            int sectionTable = optional + optionalSize;
            int Offset(int rva)
            {
                for (int s = 0; s < sections; s++)
                {
                    int at = sectionTable + 40 * s;
                    int virtualAddress = I32(pe, at + 12), size = Math.Max(I32(pe, at + 8), I32(pe, at + 16));
                    if (rva >= virtualAddress && rva < virtualAddress + size) return rva - virtualAddress + I32(pe, at + 20);
                }
                throw new FormatException($"RVA 0x{rva:x} lies in no section");
            }
            int cli = Offset(cliRva);
            if (I32(pe, cli + 64) != 0) return "a ReadyToRun image: its precompiled code would ignore the flags";
            int root = Offset(I32(pe, cli + 8));
            if (I32(pe, root) != 0x424A5342) return "no metadata signature";
            int versionLength = I32(pe, root + 12);
            int streamCount = U16(pe, root + 16 + versionLength + 2);
            int header = root + 16 + versionLength + 4;
            int tables = -1;
            for (int i = 0; i < streamCount; i++)
            {
                int offset = I32(pe, header), nameAt = header + 8, end = nameAt;
                while (pe[end] != 0) end++;
                string name = Encoding.ASCII.GetString(pe, nameAt, end - nameAt);
                if (name == "#~") tables = root + offset;
                if (name == "#-") return "uncompressed metadata tables (#-) are not handled";
                header = nameAt + ((end - nameAt + 4) & ~3);
            }
            if (tables < 0) return "no #~ stream";
            byte heapSizes = pe[tables + 6];
            if ((heapSizes & 0x40) != 0) return "extra table data is not handled";
            ulong valid = BitConverter.ToUInt64(pe, tables + 8);
            var rows = new int[64];
            int at2 = tables + 24;
            for (int t = 0; t < 64; t++)
                if ((valid >> t & 1) != 0) { rows[t] = I32(pe, at2); at2 += 4; }
            int str = (heapSizes & 1) != 0 ? 4 : 2, guid = (heapSizes & 2) != 0 ? 4 : 2, blob = (heapSizes & 4) != 0 ? 4 : 2;
            int Index(int table) => rows[table] < 1 << 16 ? 2 : 4;
            int Coded(int tagBits, params int[] targets)
            {
                int most = 0;
                foreach (int t in targets) most = Math.Max(most, rows[t]);
                return most < 1 << (16 - tagBits) ? 2 : 4;
            }
            const int Module = 0x00, TypeRef = 0x01, TypeDef = 0x02, FieldPtr = 0x03, Field = 0x04, MethodPtr = 0x05, MethodDef = 0x06,
                Param = 0x08, ModuleRef = 0x1A, TypeSpec = 0x1B, AssemblyRef = 0x23;
            var size = new int[MethodDef + 1];
            size[Module] = 2 + str + 3 * guid;
            size[TypeRef] = Coded(2, Module, ModuleRef, AssemblyRef, TypeRef) + 2 * str;
            size[TypeDef] = 4 + 2 * str + Coded(2, TypeDef, TypeRef, TypeSpec) + Index(Field) + Index(MethodDef);
            size[FieldPtr] = Index(Field);
            size[Field] = 2 + str + blob;
            size[MethodPtr] = Index(MethodDef);
            size[MethodDef] = 4 + 2 + 2 + str + blob + Index(Param);
            int method = at2;
            for (int t = 0; t < MethodDef; t++) method += rows[t] * size[t];
            for (int r = 0; r < rows[MethodDef]; r++, method += size[MethodDef])
            {
                int rva = I32(pe, method);
                ushort impl = (ushort)U16(pe, method + 4), flags = (ushort)U16(pe, method + 6);
                if (rva == 0 || (impl & CodeTypeMask) != 0 || (impl & InternalCall) != 0 || (flags & PinvokeImpl) != 0) continue;
                ushort wanted = (ushort)((impl | NoOptimization | NoInlining) & ~(AggressiveOptimization | AggressiveInlining));
                if (wanted == impl) { already++; continue; }
                pe[method + 4] = (byte)wanted;
                pe[method + 5] = (byte)(wanted >> 8);
                patched++;
            }
            return patched + already == 0 ? "no IL methods found" : null;
        }
        catch (Exception e) when (e is FormatException || e is IndexOutOfRangeException || e is ArgumentException)
        {
            return e.Message;
        }
    }

    static int I32(byte[] b, int at) => BitConverter.ToInt32(b, at);
    static int U16(byte[] b, int at) => BitConverter.ToUInt16(b, at);
}
