#!/usr/bin/env bash
# Fetches CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, from the open-clip-torch 3.3.0
# wheel on PyPI) into DIR (default target/clip-vocab) and turns it into vocab.json,
# merges.txt and tokenizer.json (tools/make_clip_vocab.py), for tests/clip.rs and
# tools/make_clip_fixtures.py.
set -euo pipefail
dir="${1:-target/clip-vocab}"
if [ -f "$dir/tokenizer.json" ]; then exit 0; fi
mkdir -p "$dir"
sha="c549ad5ed6bfc119cc11105033c0a2b9d7a2a4afeb40a58a09aab3da1a0043ce"
tmp="$(mktemp -d)"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  "open-clip-torch==3.3.0" -d "$tmp"
whl="$tmp/open_clip_torch-3.3.0-py3-none-any.whl"
echo "$sha  $whl" | sha256sum -c --quiet
python3 - "$whl" "$dir" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    with open(f"{out}/bpe_simple_vocab_16e6.txt.gz", "wb") as f:
        f.write(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
PY
python3 "$(dirname "$0")/make_clip_vocab.py" "$dir/bpe_simple_vocab_16e6.txt.gz" "$dir"
rm -rf "$tmp"
