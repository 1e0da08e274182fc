#!/usr/bin/env python3
"""transformers' greedy continuations of SmolLM2-135M-Instruct Q4_1 loaded from its GGUF file
(`from_pretrained(dir, gguf_file=...)`, which dequantizes it; needs the `gguf` package), for
tests/real_models.rs. Writes prompts, their token ids and 32 greedy tokens each as JSON.
Usage: python3 tools/make_smollm2_reference.py DIR_WITH_GGUF OUT.json
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
]


def main():
    d, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=FILE)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=FILE, torch_dtype=torch.float32).eval()
    cases = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=32, do_sample=False,
                                 attention_mask=torch.ones_like(ids), pad_token_id=2)
        new = gen[0, ids.shape[1]:].tolist()
        cases.append({"prompt": p, "ids": ids[0].tolist(), "greedy": new})
        print(repr(p + tok.decode(new)))
    with open(out, "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
