#!/usr/bin/env python3
"""Trains GPT-2 124M for a few steps with smith and with PyTorch from the same initial
weights on the same batches, and compares the losses step by step.

1. transformers makes a randomly initialised GPT-2 124M (seed 0, no dropout) and saves it
   as a Hugging Face folder, OUT/init.
2. `smith train --model gpt2-124m --tokens TOKENS --init OUT/init` trains from it (smith
   reads batches in file order: batch k is tokens [k*B*T, (k+1)*B*T] of the first 90%).
3. PyTorch trains the same model on the same batches, eagerly, with the same recipe:
   AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the linear layers' matrices only),
   linear warmup then cosine decay, gradient norm clipped to 1.0, the loss from f32 logits,
   and autocast in the chosen precision.
4. Prints both losses per step and their relative difference, writes OUT/compare.json,
   and exits 1 when any step differs by more than --tolerance (relative).

Usage: python3 tools/gpt2_train_reference.py --smith .gpu/bin/smith --tokens FILE --out DIR
       [--steps 50] [--precision bf16] [--batch 16] [--seq 1024] [--warmup 10]
"""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def lr_at(step, max_lr, min_lr, warmup, total):
    """smith's WarmupCosine schedule."""
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total or total <= warmup:
        return min_lr
    progress = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def ordered_batch(train, b, t, index, dev):
    """smith's ordered batches: consecutive windows, one pass after another."""
    span = b * t
    per_pass = max((len(train) - 1) // span, 1)
    start = (index % per_pass) * span
    rows = [train[start + r * t:start + r * t + t + 1] for r in range(b)]
    block = torch.tensor(np.stack(rows).astype(np.int64), device=dev)
    return block[:, :-1], block[:, 1:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smith", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--min-lr", type=float, default=6e-5)
    ap.add_argument("--tolerance", type=float, default=0.01)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(out / "init", safe_serialization=True)

    # smith first, while PyTorch holds nothing on the GPU.
    cmd = [args.smith, "train", "--model", "gpt2-124m", "--tokens", args.tokens,
           "--init", str(out / "init"), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--lr", str(args.lr), "--min-lr", str(args.min_lr), "--batch-size", str(args.batch),
           "--seq-len", str(args.seq), "--precision", args.precision, "--device", "cuda",
           "--eval-interval", str(10 * args.steps), "--sample-tokens", "0",
           "--out", str(out / "smith")]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    state = json.loads((out / "smith" / "trainer.json").read_text())
    smith_losses = [loss for _, loss in state["train_losses"]]

    dev = "cuda"
    ids = np.fromfile(args.tokens, dtype="<u2")
    train = ids[: len(ids) * 9 // 10]
    model = model.to(dev).train()
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and "wte" not in n and "wpe" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "wte" not in n and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    half = {"bf16": torch.bfloat16, "f32": None}[args.precision]
    torch_losses = []
    for step in range(args.steps):
        x, y = ordered_batch(train, args.batch, args.seq, step, dev)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lr, args.min_lr, args.warmup, args.steps)
        with torch.autocast("cuda", dtype=half or torch.float32, enabled=half is not None):
            logits = model(x).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch_losses.append(loss.item())

    rows = []
    worst = 0.0
    print(f"{'step':>4} {'smith':>9} {'pytorch':>9} {'rel diff':>9}")
    for i, (a, b) in enumerate(zip(smith_losses, torch_losses)):
        rel = abs(a - b) / abs(b)
        worst = max(worst, rel)
        rows.append({"step": i + 1, "smith": a, "pytorch": b, "rel": rel})
        print(f"{i + 1:>4} {a:>9.4f} {b:>9.4f} {100 * rel:>8.3f}%")
    ok = len(smith_losses) == args.steps and worst <= args.tolerance
    summary = {"precision": args.precision, "steps": args.steps, "batch": args.batch, "seq": args.seq,
               "max_rel_diff": worst, "ok": ok, "rows": rows}
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    print(f"max relative difference over {args.steps} steps: {100 * worst:.3f}% "
          f"(tolerance {100 * args.tolerance:.1f}%): {'ok' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
