#!/usr/bin/env python3
"""transformers' greedy continuations of a real GGUF model loaded from its file
(`from_pretrained(dir, gguf_file=...)`, which dequantizes it; needs the `gguf` package), for
tests/real_models.rs. Writes prompts, their token ids and 32 greedy tokens each as JSON.
Usage: python3 tools/make_real_model_reference.py DIR FILE.gguf OUT.json [--bos]
(--bos: the prompts start with the tokenizer's BOS token, as Gemma expects.)
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
]


def main():
    d, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
    bos = "--bos" in sys.argv[4:]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    cases = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt", add_special_tokens=bos).input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=32, do_sample=False,
                                 attention_mask=torch.ones_like(ids), pad_token_id=pad)
        new = gen[0, ids.shape[1]:].tolist()
        cases.append({"prompt": p, "bos": bos, "ids": ids[0].tolist(), "greedy": new})
        print(repr(p + tok.decode(new)))
    with open(out, "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
