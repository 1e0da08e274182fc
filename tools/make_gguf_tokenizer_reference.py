#!/usr/bin/env python3
"""Token ids of transformers' GGUF tokenizer for GGUF files whose
`tokenizer.ggml.add_bos_token` is true, false or absent, for tests/gguf_bos.rs.

For each vocabulary below (llama.cpp's vocab-only test files, fetched by
tools/fetch_vocab_tests.sh), writes three variants of the file (the key set true, set
false, removed; every other key kept byte for byte), loads each with
`AutoTokenizer.from_pretrained(dir, gguf_file=...)` and records `tokenizer(text).input_ids`
(special tokens added the way the tokenizer decides) for a few texts. For the longest text
it also records how many tokens transformers' sliding-window perplexity recipe scores
(https://huggingface.co/docs/transformers/perplexity) for a given window and stride: the
labels left after the model's internal one-position shift that are not -100.

Usage: python3 tools/make_gguf_tokenizer_reference.py VOCAB_DIR OUT.json
Needs transformers (5.24 or later: 5.17 ignores the key for SentencePiece files), tokenizers,
torch and gguf.
"""
import json
import multiprocessing
import os
import struct
import sys
import tempfile

import transformers
from transformers import AutoTokenizer

VOCABS = [
    "ggml-vocab-llama-spm",  # SentencePiece, add_bos_token true in the file
    "ggml-vocab-phi-3",  # SentencePiece, phi3 architecture
    "ggml-vocab-llama-bpe",  # Llama-3 byte-level BPE, key absent in the file
    "ggml-vocab-qwen2",  # byte-level BPE, qwen2 architecture
    "ggml-vocab-gpt-2",  # byte-level BPE, gpt2 architecture
]

TEXTS = [
    "Hello world",
    " leading space and  two spaces",
    "Straße, naïve café — 日本語のテキスト 🙂",
    "",
    (
        "The quick brown fox jumps over the lazy dog. It was the best of times, it was the "
        "worst of times, it was the age of wisdom, it was the age of foolishness, it was the "
        "epoch of belief, it was the epoch of incredulity.\nNumbers: 3.14159, 2718, 1e-5."
    ),
]

# Window and stride of the perplexity count (several windows over the longest text).
PPL_CTX, PPL_STRIDE = 16, 8

KEY = "tokenizer.ggml.add_bos_token"

# Byte sizes of GGUF's fixed-size value types.
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY, BOOL = 8, 9, 7


def skip_value(buf, pos, kind):
    """Offset just past one value of GGUF type `kind` starting at `pos`."""
    if kind in FIXED:
        return pos + FIXED[kind]
    if kind == STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if kind == ARRAY:
        item, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if item in FIXED:
            return pos + n * FIXED[item]
        for _ in range(n):
            pos = skip_value(buf, pos, item)
        return pos
    raise ValueError(f"unknown GGUF value type {kind}")


def with_add_bos(src, dst, value):
    """Copies the vocab-only GGUF file `src` to `dst` with KEY set to `value` (a bool) or
    removed (`None`)."""
    buf = open(src, "rb").read()
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
    if magic != b"GGUF" or version < 2:
        raise ValueError(f"{src}: not a GGUF v2+ file")
    if n_tensors != 0:
        raise ValueError(f"{src}: has tensors; only vocab-only files are rewritten")
    pos, kept = 24, []
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8 : pos + 8 + klen].decode()
        pos += 8 + klen
        (kind,) = struct.unpack_from("<I", buf, pos)
        pos = skip_value(buf, pos + 4, kind)
        if key != KEY:
            kept.append(buf[start:pos])
    if value is not None:
        k = KEY.encode()
        kept.append(struct.pack("<Q", len(k)) + k + struct.pack("<IB", BOOL, int(value)))
    with open(dst, "wb") as f:
        f.write(struct.pack("<4sIQQ", magic, version, 0, len(kept)))
        f.writelines(kept)
        f.write(buf[pos:])


def recipe_scored(n_ids, ctx, stride):
    """Tokens the sliding-window recipe's losses average over for `n_ids` encoded ids:
    per window, target labels are the window's last `trg_len` ids (the rest -100), and the
    model drops the first label when it shifts them."""
    scored, prev_end, begin = 0, 0, 0
    while begin < n_ids:
        end = min(begin + ctx, n_ids)
        trg_len = end - prev_end
        labels = [-100] * (end - begin - trg_len) + [1] * trg_len
        scored += sum(1 for t in labels[1:] if t != -100)
        prev_end = end
        if end == n_ids:
            break
        begin += stride
    return scored


def reference(job):
    """One case of the fixture: the tokenizer of vocabulary `name` with the key `setting`."""
    vocab_dir, tmp, name, setting = job
    label = {True: "true", False: "false", None: "absent"}[setting]
    fname = f"{name}-{label}.gguf"
    with_add_bos(os.path.join(vocab_dir, f"{name}.gguf"), os.path.join(tmp, fname), setting)
    case = {"vocab": name, "add_bos_token": label}
    try:
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=fname)
    except Exception as e:  # recorded, and the Rust test reports it
        case["error"] = f"{type(e).__name__}: {e}"[:300]
        print(name, label, "not loadable:", case["error"], flush=True)
        return case
    ids = [tok(t).input_ids for t in TEXTS]
    case["bos_token_id"] = tok.bos_token_id
    case["ids"] = ids
    n = len(ids[-1])
    case["perplexity"] = {
        "ctx": PPL_CTX,
        "stride": PPL_STRIDE,
        "ids": n,
        "scored": recipe_scored(n, PPL_CTX, PPL_STRIDE),
    }
    print(name, label, "bos", tok.bos_token_id, "first ids", [i[:3] for i in ids], flush=True)
    return case


def main():
    vocab_dir, out = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(vocab_dir, tmp, name, s) for name in VOCABS for s in (True, False, None)]
        # SentencePiece files carry no merges, and transformers rebuilds them for a minute
        # per file: one process per case.
        with multiprocessing.Pool(min(len(jobs), os.cpu_count() or 1)) as pool:
            cases = pool.map(reference, jobs)
    with open(out, "w") as f:
        json.dump(
            {"transformers": transformers.__version__, "texts": TEXTS, "cases": cases},
            f,
            ensure_ascii=False,
            indent=1,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
