#!/usr/bin/env python3
"""Small random Phi-3 GGUF files and their unfused twins, for tests/gguf_models.rs.

Writes phi3_{f32,q8_0}.gguf (fused `attn_qkv` and gate+up `ffn_up`, as llama.cpp stores
Phi-3) and qwen2eq_{f32,q8_0}.gguf holding the very same weights split into
`attn_q/k/v` and `ffn_gate`/`ffn_up` under the `qwen2` architecture (rotate-half rope, no
biases): smith must give both the same logits. Needs only numpy and the `gguf` package.
Usage: python3 tools/make_phi3_fixtures.py OUT_DIR
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

VOCAB, DIM, HEADS, KV, HIDDEN, LAYERS, CTX = 96, 64, 4, 2, 128, 2, 64
HD = DIM // HEADS


def add(w, name, a, qtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 1 or qtype == T.F32:
        w.add_tensor(name, a)
    else:
        w.add_tensor(name, quantize(a, qtype), raw_dtype=qtype)


def write(path, arch, weights, qtype):
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_feed_forward_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HD)
    for name, a in weights:
        add(w, name, a, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    r = lambda *s: rng.normal(0, 0.3, s)
    common = [("token_embd.weight", r(VOCAB, DIM)), ("output_norm.weight", 1 + r(DIM) * 0.2),
              ("output.weight", r(VOCAB, DIM))]
    fused, split = list(common), list(common)
    for i in range(LAYERS):
        q, k, v = r(HEADS * HD, DIM), r(KV * HD, DIM), r(KV * HD, DIM)
        gate, up, down = r(HIDDEN, DIM), r(HIDDEN, DIM), r(DIM, HIDDEN)
        norms = [(f"blk.{i}.attn_norm.weight", 1 + r(DIM) * 0.2),
                 (f"blk.{i}.ffn_norm.weight", 1 + r(DIM) * 0.2),
                 (f"blk.{i}.attn_output.weight", r(DIM, HEADS * HD)),
                 (f"blk.{i}.ffn_down.weight", down)]
        fused += norms + [(f"blk.{i}.attn_qkv.weight", np.concatenate([q, k, v])),
                          (f"blk.{i}.ffn_up.weight", np.concatenate([gate, up]))]
        split += norms + [(f"blk.{i}.attn_q.weight", q), (f"blk.{i}.attn_k.weight", k),
                          (f"blk.{i}.attn_v.weight", v), (f"blk.{i}.ffn_gate.weight", gate),
                          (f"blk.{i}.ffn_up.weight", up)]
    for tag, qtype in [("f32", T.F32), ("q8_0", T.Q8_0)]:
        write(f"{out}/phi3_{tag}.gguf", "phi3", fused, qtype)
        write(f"{out}/qwen2eq_{tag}.gguf", "qwen2", split, qtype)


if __name__ == "__main__":
    main()
