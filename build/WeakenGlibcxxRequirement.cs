// Compiled by RoslynCodeTaskFactory against netstandard2.0, hence the older APIs.
#nullable enable
// MSBuild inline task (see TorchSharpGlibcxxFix.targets): marks one GLIBCXX version requirement of
// libLibTorchSharp.so as weak when the system libstdc++ does not define that version.
using System;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class WeakenGlibcxxRequirement : Task
{
    [Required] public string Directory { get; set; } = "";
    [Required] public string VersionName { get; set; } = "";

    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    public override bool Execute()
    {
        string target = Path.Combine(Directory, "libLibTorchSharp.so");
        if (!File.Exists(target)) return true;

        string? systemLib = FindSystemLibStdCxx();
        if (systemLib != null && FileContains(systemLib, VersionName + "\0"))
        {
            Log.LogMessage(MessageImportance.Low, $"{systemLib} defines {VersionName}: libLibTorchSharp.so left as shipped.");
            return true;
        }

        byte[] elf = File.ReadAllBytes(target);
        string? error = TryWeaken(elf, VersionName, out bool changed);
        if (error != null)
        {
            Log.LogWarning($"libLibTorchSharp.so not patched ({error}); TorchSharp may fail to load on this system.");
            return true;
        }
        if (!changed) return true; // already weak (an earlier build patched this copy)

        // Write beside, then rename: never leave a half-written library, never modify a hard-linked source.
        string temp = target + ".tmp";
        File.WriteAllBytes(temp, elf);
        File.Replace(temp, target, null); // rename(2) on Unix
        Log.LogMessage(MessageImportance.High,
            $"TorchSharp: marked {VersionName} weak in {target} (system libstdc++ {systemLib ?? "not found"} lacks it).");
        return true;
    }

    /// <summary>Sets VER_FLG_WEAK on the Vernaux entry named <paramref name="version"/>. Returns an error or null.</summary>
    static string? TryWeaken(byte[] elf, string version, out bool changed)
    {
        changed = false;
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            return "not an ELF file";
        if (elf[4] != 2 || elf[5] != 1) return "not a little-endian ELF64 file";

        ulong shoff = BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)shoff + i * shentsize);
            if (BitConverter.ToUInt32(elf, sh + 4) != ShtGnuVerneed) continue;
            int offset = checked((int)BitConverter.ToUInt64(elf, sh + 24));
            int link = (int)BitConverter.ToUInt32(elf, sh + 40);
            int count = (int)BitConverter.ToUInt32(elf, sh + 44);
            int strtab = checked((int)BitConverter.ToUInt64(elf, checked((int)shoff + link * shentsize) + 24));

            int vn = offset;
            for (int n = 0; n < count; n++)
            {
                int auxCount = BitConverter.ToUInt16(elf, vn + 2);
                int aux = vn + (int)BitConverter.ToUInt32(elf, vn + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    string name = ReadCString(elf, strtab + (int)BitConverter.ToUInt32(elf, aux + 8));
                    if (name == version)
                    {
                        ushort flags = BitConverter.ToUInt16(elf, aux + 4);
                        if ((flags & VerFlgWeak) == 0)
                        {
                            BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, aux + 4);
                            changed = true;
                        }
                        return null;
                    }
                    aux += (int)BitConverter.ToUInt32(elf, aux + 12);
                }
                vn += (int)BitConverter.ToUInt32(elf, vn + 12);
            }
            return $"no requirement named {version}";
        }
        return "no .gnu.version_r section";
    }

    static string ReadCString(byte[] data, int start)
    {
        int end = Array.IndexOf(data, (byte)0, start);
        return Encoding.ASCII.GetString(data, start, end - start);
    }

    static bool FileContains(string path, string text)
    {
        byte[] needle = Encoding.ASCII.GetBytes(text);
        byte[] data = File.ReadAllBytes(path);
        for (int i = 0; i + needle.Length <= data.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && data[i + j] == needle[j]) j++;
            if (j == needle.Length) return true;
        }
        return false;
    }

    /// <summary>The libstdc++.so.6 the dynamic loader would pick: from `ldconfig -p`, else the usual Debian paths.</summary>
    static string? FindSystemLibStdCxx()
    {
        foreach (string ldconfig in new[] { "/sbin/ldconfig", "/usr/sbin/ldconfig" })
        {
            if (!File.Exists(ldconfig)) continue;
            try
            {
                var psi = new ProcessStartInfo(ldconfig, "-p") { RedirectStandardOutput = true, UseShellExecute = false };
                using var p = Process.Start(psi)!;
                string output = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                string? line = output.Split('\n').FirstOrDefault(l => l.Contains("libstdc++.so.6 ") && l.Contains("x86-64"));
                if (line != null)
                {
                    string path = line.Substring(line.IndexOf("=>", StringComparison.Ordinal) + 2).Trim();
                    if (File.Exists(path)) return path;
                }
            }
            catch (Exception) { /* fall back to the usual paths */ }
        }
        return new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6" }
            .FirstOrDefault(File.Exists);
    }
}
