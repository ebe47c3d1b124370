#!/usr/bin/env bash
# Checks the packages as a user gets them: packs the library (Titans.NET) and the command-line tool (Titans.NET.Cli)
# from a clean copy of the sources into a temporary feed, installs the tool into a temporary tool path and runs it,
# then builds and runs samples/TrainAFewSteps from a copy outside the repository against the library package.
# ./test runs it after the test suite (TITANS_SKIP_PACKAGES=1 skips it). Leaves nothing behind.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="0.1.0-check.$(date +%s)"
work="$(mktemp -d)"
cleanup() {
  rm -rf "$work" "$HOME/.nuget/packages/titans.net/$version" "$HOME/.nuget/packages/titans.net.cli/$version"
}
trap cleanup EXIT
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

echo "packages: packing $version from a clean copy of the sources"
untracked="$(cd "$root" && git ls-files --others --exclude-standard -- src build)"
[ -z "$untracked" ] || echo "packages: note: files git does not track are left out (as in a clean clone): $untracked"
mkdir -p "$work/src"
(cd "$root" && git ls-files -z -- src build data/moby-dick.txt Directory.Build.props Directory.Build.targets README.md \
  | xargs -0 tar -cf - ) | tar -xf - -C "$work/src"
for project in src/Titans/Titans.csproj src/Titans.Cli/Titans.Cli.csproj; do
  dotnet pack "$work/src/$project" -c Release -p:Version="$version" -o "$work/feed" --nologo -v quiet
done
ls -la "$work/feed"

echo "packages: installing the tool into a temporary tool path and running it"
dotnet tool install Titans.NET.Cli --version "$version" --tool-path "$work/tools" --add-source "$work/feed" >/dev/null
"$work/tools/titans" models --preset tiny --json >/dev/null 2>"$work/models.err"
# The tool's TorchSharp.dll must carry the build's NoOptimization marks (build/TorchSharpJitFix.targets), or it warns.
if [ -s "$work/models.err" ]; then cat "$work/models.err" >&2; echo "packages: the tool warned" >&2; exit 1; fi
"$work/tools/titans" train -a lmm --steps 2 --seq-len 32 --batch-size 2 --eval-tokens 256 --out "$work/run" | tail -1
"$work/tools/titans" generate -c "$work/run" -p "Call me" -n 10 >/dev/null

echo "packages: building samples/TrainAFewSteps against the library package"
cp -r "$root/samples/TrainAFewSteps" "$work/sample"
rm -rf "$work/sample/bin" "$work/sample/obj"
cat > "$work/sample/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="titans-check" value="$work/feed" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="titans-check"><package pattern="Titans.NET*" /></packageSource>
    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
CONFIG
(cd "$work/sample" && dotnet run -c Release -p:TitansVersion="$version")
echo "packages: ok"
