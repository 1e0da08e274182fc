#!/usr/bin/env python3
"""Reference losses for smith's GPT training, computed by PyTorch.

Builds the same GPT as smith (pre-norm blocks, learned positions, fused QKV, tanh GELU,
head tied to the token embedding; parameter names identical to smith's), draws fixed
batches from data/shakespeare.txt, and runs 20 AdamW steps in f32 on the CPU with the
same learning-rate schedule, parameter groups and gradient clipping as `smith train`.

Writes tests/fixtures/gpt_adamw/{weights,batches}.safetensors and expected.json.
Usage: python3 tools/make_gpt_fixture.py
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "gpt_adamw")

CFG = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, batch_size=4, steps=20,
           lr=1e-2, min_lr=1e-3, warmup=5, weight_decay=0.1, grad_clip=1.0,
           beta1=0.9, beta2=0.95, eps=1e-8)


class Attention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        b, t, c = x.shape
        hd = c // self.h
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, hd).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.proj(y)


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc = nn.Linear(c, 4 * c)
        self.proj = nn.Linear(4 * c, c)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.norm1 = nn.LayerNorm(c, eps=1e-5)
        self.attn = Attention(c, h)
        self.norm2 = nn.LayerNorm(c, eps=1e-5)
        self.mlp = Mlp(c)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Gpt(nn.Module):
    def __init__(self, vocab, cfg):
        super().__init__()
        c = cfg["n_embd"]
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(cfg["block_size"], c)
        self.h = nn.ModuleList(Block(c, cfg["n_head"]) for _ in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(c, eps=1e-5)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-1)


def lr_at(step, cfg):
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    if step >= cfg["steps"]:
        return cfg["min_lr"]
    progress = (step - cfg["warmup"]) / (cfg["steps"] - cfg["warmup"])
    return cfg["min_lr"] + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg["lr"] - cfg["min_lr"])


def main():
    torch.manual_seed(0)
    text = open(os.path.join(ROOT, "data", "shakespeare.txt"), encoding="utf-8").read()
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text[:200_000]], dtype=np.int64)
    model = Gpt(len(chars), CFG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Perturb every parameter (biases and norms included) so that every gradient
            # path matters.
            if name.endswith("bias"):
                p.copy_(0.02 * torch.randn_like(p))
            elif "norm" in name or name.startswith("ln_f"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(OUT, "weights.safetensors"))

    rng = np.random.RandomState(0)
    b, t, steps = CFG["batch_size"], CFG["block_size"], CFG["steps"]
    starts = rng.randint(0, len(ids) - t - 1, size=(steps, b))
    x = np.stack([[ids[s:s + t] for s in row] for row in starts])
    y = np.stack([[ids[s + 1:s + t + 1] for s in row] for row in starts])
    save_file({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, os.path.join(OUT, "batches.safetensors"))

    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(("wte", "wpe"))]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith(("wte", "wpe")))]
    opt = torch.optim.AdamW([
        {"params": decay, "weight_decay": CFG["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=CFG["lr"], betas=(CFG["beta1"], CFG["beta2"]), eps=CFG["eps"], foreach=False)
    losses, norms = [], []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, CFG)
        loss = model(torch.from_numpy(x[step]), torch.from_numpy(y[step]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CFG["grad_clip"])
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    expected = dict(config=CFG, vocab="".join(chars), losses=losses, grad_norms=norms,
                    torch_version=torch.__version__)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print("losses:", " ".join(f"{l:.5f}" for l in losses))
    print("grad norms:", " ".join(f"{n:.4f}" for n in norms))


if __name__ == "__main__":
    main()
