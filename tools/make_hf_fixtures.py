#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers for smith's pretrained-model tests.

Builds a small GPT-2 with random weights (scaled so the logits are far from uniform), saves
it with `save_pretrained` (config.json + model.safetensors), and records, in f32 on the CPU:
  - logits.safetensors: `ids` [1, 40] and `logits` [1, 40, vocab] of one forward pass;
  - greedy.json: a prompt and the 32 tokens `generate(do_sample=False)` adds to it;
  - perplexity.json: token ids of a 150-token text and the perplexity of strided windows
    (ctx 64, stride 32: each token scored once, with up to 63 tokens of context).
Also writes bare/model.safetensors: the same weights without the `transformer.` prefix.
Usage: python3 tools/make_hf_fixtures.py OUT_DIR
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "bare"), exist_ok=True)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.normal_(0.0, 0.25)
            elif "ln" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    model.save_pretrained(out, safe_serialization=True)
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight" and not k.endswith(".attn.bias") and not k.endswith("masked_bias")}
    save_file(state, os.path.join(out, "bare", "model.safetensors"))
    with open(os.path.join(out, "bare", "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1, default=str)

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (1, 40), generator=g)
    with torch.no_grad():
        logits = model(ids).logits.float()
    save_file({"ids": ids.to(torch.int64).contiguous(), "logits": logits.contiguous()},
              os.path.join(out, "logits.safetensors"))
    p = logits.softmax(-1)
    print("mean max probability", p.max(-1).values.mean().item())

    prompt = torch.randint(0, cfg.vocab_size, (1, 8), generator=g)
    with torch.no_grad():
        gen = model.generate(prompt, max_new_tokens=32, do_sample=False,
                             pad_token_id=0, attention_mask=torch.ones_like(prompt))
    with open(os.path.join(out, "greedy.json"), "w") as f:
        json.dump({"prompt": prompt[0].tolist(), "tokens": gen[0, 8:].tolist()}, f)

    text = torch.randint(0, cfg.vocab_size, (150,), generator=g)
    ctx, stride = 64, 32
    nll, count, scored_to, begin = 0.0, 0, 1, 0
    while True:
        end = min(begin + ctx, len(text))
        window = text[begin:end].unsqueeze(0)
        with torch.no_grad():
            lp = model(window[:, :-1]).logits.double().log_softmax(-1)[0]
        for j in range(end - begin - 1):
            i = begin + j + 1
            if i >= scored_to:
                nll -= lp[j, text[i]].item()
                count += 1
        scored_to = end
        if end == len(text):
            break
        begin += stride
    with open(os.path.join(out, "perplexity.json"), "w") as f:
        json.dump({"ids": text.tolist(), "ctx": ctx, "stride": stride,
                   "perplexity": math.exp(nll / count), "tokens": count}, f)
    print("perplexity", math.exp(nll / count), "over", count)


if __name__ == "__main__":
    main()
