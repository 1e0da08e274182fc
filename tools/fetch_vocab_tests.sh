#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors (vocab-only GGUF files with .inp/.out pairs)
# from the source package of llama-cpp-python 0.3.36 on PyPI into DIR (default
# target/vocab-tests), for tests/gguf_tokenizers.rs.
set -euo pipefail
dir="${1:-target/vocab-tests}"
if [ -f "$dir/ggml-vocab-gpt-2.gguf.out" ]; then exit 0; fi
mkdir -p "$dir"
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
sha="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
tmp="$(mktemp -d)"
curl -fsSL --retry 3 -o "$tmp/src.tar.gz" "$url"
echo "$sha  $tmp/src.tar.gz" | sha256sum -c --quiet
tar -xzf "$tmp/src.tar.gz" -C "$tmp" --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*'
cp "$tmp"/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-* "$dir/"
rm -rf "$tmp"
