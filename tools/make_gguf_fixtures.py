#!/usr/bin/env python3
"""GGUF test file for smith's reader and dequantizers, checked against the reference
dequantizers of the PyPI `gguf` package (pip install gguf numpy).

For every tensor type smith reads, writes a [3, cols] tensor of random blocks (random
bytes, with the f16 scale fields set to finite values) and, beside it, `NAME.expected`:
`gguf.quants.dequantize` of the same bytes, in F32. Also writes metadata of every value
type, so `smith info` and the metadata reader have something to show.
Usage: python3 tools/make_gguf_fixtures.py OUT.gguf
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

# Byte offsets of the f16 scale fields within one block.
SCALES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(out, arch="llama")
    w.add_name("smith quantization fixture")
    w.add_context_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_int32("test.i32", -123456)
    w.add_uint64("test.u64", 1 << 40)
    w.add_int64("test.i64", -(1 << 40))
    w.add_float32("test.f32", 0.5)
    w.add_float64("test.f64", 0.25)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo")
    w.add_array("test.array", [1, 2, 3])
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ab"])
    for t in [T.F32, T.F16, T.BF16, *SCALES]:
        block, size = gguf.GGML_QUANT_SIZES[t]
        cols = 512 if block == 256 else 64
        name = t.name.lower()
        if t in (T.F32, T.F16, T.BF16):
            values = rng.standard_normal((3, cols)).astype(np.float32)
            if t == T.F32:
                w.add_tensor(name, values)
                expected = values
            elif t == T.F16:
                raw = values.astype(np.float16)
                w.add_tensor(name, raw)
                expected = raw.astype(np.float32)
            else:
                raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(3, -1)
                w.add_tensor(name, raw, raw_dtype=T.BF16)
                expected = dequantize(raw, T.BF16)
        else:
            n_blocks = 3 * cols // block
            raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
            for at in SCALES[t]:
                scale = (rng.standard_normal(n_blocks) * 0.1).astype(np.float16)
                raw[:, at:at + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
            raw = raw.reshape(3, -1)
            w.add_tensor(name, raw, raw_dtype=t)
            expected = dequantize(raw, t)
        w.add_tensor(name + ".expected", np.ascontiguousarray(expected, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
