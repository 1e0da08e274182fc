#!/usr/bin/env python3
"""PyTorch's figures for the workloads of `smith bench`, on the same GPU.

Prints one JSON object {workload: value} as its last line, in the units smith uses:
TFLOP/s for GEMM, GB/s (bytes read + written) for memory-bound ops, milliseconds for
cross-entropy and AdamW, microseconds for launch overhead.
Usage: python3 tools/torch_baseline.py [--quick] [--models-only] [--gpt2] [--generate]
       [--attention] [--vision] [--clip]
"""
import json
import sys
import time

import torch
import torch.nn.functional as F


def timed(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


class Block(torch.nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.norm1 = torch.nn.LayerNorm(c)
        self.qkv = torch.nn.Linear(c, 3 * c)
        self.proj = torch.nn.Linear(c, c)
        self.norm2 = torch.nn.LayerNorm(c)
        self.fc = torch.nn.Linear(c, 4 * c)
        self.fc_proj = torch.nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (c // self.h) ** -0.5
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.fc_proj(F.gelu(self.fc(self.norm2(x)), approximate="tanh"))


def gpt2_step(autocast=None):
    """Tokens/s (millions) of one GPT-2 124M training step, eager: f32 with TF32, or with
    `autocast` (torch.bfloat16) as mixed precision."""
    b, t, v, c = 16, 1024, 50304, 768
    wte = torch.nn.Embedding(v, c).cuda()
    wpe = torch.nn.Embedding(t, c).cuda()
    blocks = torch.nn.ModuleList(Block(c, 12) for _ in range(12)).cuda()
    ln_f = torch.nn.LayerNorm(c).cuda()
    params = list(wte.parameters()) + list(wpe.parameters()) + list(blocks.parameters()) + list(ln_f.parameters())
    opt = torch.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    ids = torch.randint(0, 50257, (b, t + 1), device="cuda")
    x, y = ids[:, :-1], ids[:, 1:]
    pos = torch.arange(t, device="cuda")

    def step():
        with torch.autocast("cuda", dtype=autocast or torch.float32, enabled=autocast is not None):
            h = wte(x) + wpe(pos)
            for blk in blocks:
                h = blk(h)
            logits = F.linear(ln_f(h), wte.weight)
            loss = F.cross_entropy(logits.view(-1, v), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    s = timed(step, 5)
    return b * t / s / 1e6


def gpt2_generate(dtype):
    """Tokens/s of transformers' greedy generate with GPT-2 124M (random weights), batch 1:
    a 16-token prompt and exactly 256 new tokens, with its KV cache."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).cuda().to(dtype).eval()
    prompt = (torch.arange(16, device="cuda") * 997 % 50257).unsqueeze(0)
    mask = torch.ones_like(prompt)

    def run():
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=mask, max_new_tokens=256, min_new_tokens=256,
                                 do_sample=False, pad_token_id=0)
        assert out.shape[1] == 16 + 256

    run()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    return 256 / ((time.perf_counter() - start) / 3)


def attention(out, dev):
    """scaled_dot_product_attention in bf16, forward and forward+backward, in TFLOP/s by
    FlashAttention's count (4*B*H*S^2*D forward, halved when causal; backward 2.5x)."""
    for b, h, s, d, causal in [(8, 12, 1024, 64, True), (2, 16, 4096, 128, True), (4, 16, 2048, 128, False)]:
        q, k, v = (torch.randn(b, h, s, d, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        g = torch.randn(b, h, s, d, device=dev, dtype=torch.bfloat16)
        flops = 4 * b * h * s * s * d / (2 if causal else 1)
        name = f"attention_b{b}_h{h}_s{s}_d{d}" + ("_causal" if causal else "")

        def fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        def both():
            F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(g)

        # The fastest of three loops, as smith's bench times its own.
        out[name + "_fwd"] = flops / min(timed(fwd, 40) for _ in range(3)) / 1e12
        out[name + "_fwd_bwd"] = 3.5 * flops / min(timed(both, 15) for _ in range(3)) / 1e12


def kernel_workloads(out, quick, dev):
    """The GEMM, memory-bound, cross-entropy, AdamW and launch workloads."""
    for dtype, label in [(torch.float32, "f32_tf32"), (torch.bfloat16, "bf16")]:
        for n in ([256, 512] if quick else [1024, 4096, 8192]):
            a = torch.randn(n, n, device=dev, dtype=dtype)
            b = torch.randn(n, n, device=dev, dtype=dtype)
            s = timed(lambda: a @ b, 10 if n >= 8192 else 30)
            out[f"gemm_{label}_{n}"] = 2 * n**3 / s / 1e12
    scale = 16 if quick else 1
    n = 100_000_000 // scale
    x = torch.randn(n, device=dev)
    out["copy_f32"] = 8 * n / timed(lambda: x.clone(), 20) / 1e9
    del x
    for name, (r, c), fn in [
        ("softmax_98304x1024", (98304, 1024), lambda t: torch.softmax(t, dim=1)),
        ("layernorm_16384x768", (16384, 768), None),
        ("gelu_16384x768", (16384, 768), lambda t: F.gelu(t, approximate="tanh")),
    ]:
        t = torch.randn(r // scale, c, device=dev)
        if fn is None:
            w, b = torch.ones(c, device=dev), torch.zeros(c, device=dev)
            fn = lambda u: F.layer_norm(u, (c,), w, b, 1e-5)  # noqa: E731
        out[name] = 8 * t.numel() / timed(lambda: fn(t), 20) / 1e9
    rows = 16384 // scale
    logits = torch.randn(rows, 50304, device=dev)
    targets = (torch.arange(rows, device=dev) * 7919) % 50304
    out["cross_entropy_16384x50304"] = timed(lambda: F.cross_entropy(logits, targets), 10) * 1e3
    del logits
    c, v, t = 768, 50304, 1024
    shapes = [(v, c), (t, c)]
    for _ in range(12):
        shapes += [(c,), (c,), (3 * c, c), (3 * c,), (c, c), (c,), (c,), (c,), (4 * c, c), (4 * c,), (c, 4 * c), (c,)]
    shapes += [(c,), (c,)]
    params = []
    for s in shapes:
        s = (max(s[0] // scale, 1),) + tuple(s[1:])
        p = torch.nn.Parameter(torch.randn(*s, device=dev))
        p.grad = torch.randn_like(p)
        params.append(p)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    out["adamw_124m"] = timed(opt.step, 10) * 1e3


def channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


def vision(out, dev):
    """The vision workloads with cuDNN (cudnn.benchmark on, channels-last, bf16): ResNet-50's
    3x3 convolutions alone (forward, and forward + both gradients) in TFLOP/s, and
    ResNet-50 inference and a training step (SGD) at batch 256 in images/s."""
    import torchvision

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    for c, hw in ((64, 56), (128, 28), (256, 14), (512, 7)):
        flops = 2 * 256 * c * c * 9 * hw * hw
        for dt, tag in ((torch.bfloat16, "bfloat16"), (torch.float32, "float32")):
            conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(dev, dtype=dt)
            conv = conv.to(memory_format=torch.channels_last)
            x = channels_last(torch.randn(256, c, hw, hw, device=dev, dtype=dt))
            name = f"conv3x3_c{c}_{hw}px_B256_{tag}"
            with torch.no_grad():
                out[f"{name}_tflops"] = flops / timed(lambda: conv(x), 20) / 1e12
            if dt == torch.bfloat16:
                xg = x.clone().requires_grad_()
                g = channels_last(torch.randn(256, c, hw, hw, device=dev, dtype=dt))
                out[f"{name}_fwd_bwd_tflops"] = 3 * flops / timed(lambda: conv(xg).backward(g), 10) / 1e12
            del conv, x
    b = 256
    model = torchvision.models.resnet50().to(dev).to(memory_format=torch.channels_last)
    x = channels_last(torch.randn(b, 3, 224, 224, device=dev))
    y = torch.randint(0, 1000, (b,), device=dev)
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out["resnet50_infer_bf16_B256_nhwc_img_per_s"] = b / timed(lambda: model(x), 10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out["resnet50_train_bf16_B256_nhwc_img_per_s"] = b / timed(step, 5)
    del model, opt
    torch.cuda.empty_cache()
    clip(out, dev)


def clip(out, dev):
    """transformers' CLIP ViT-B/32 (default configuration, random weights, bf16, SDPA
    attention) embedding 1024 images and 1024 full-context texts."""
    try:
        from transformers import CLIPConfig, CLIPModel
    except ImportError:
        return
    b = 1024
    model = CLIPModel._from_config(CLIPConfig(), attn_implementation="sdpa").to(dev, dtype=torch.bfloat16).eval()
    px = torch.randn(b, 3, 224, 224, device=dev, dtype=torch.bfloat16)
    ids = torch.randint(1, 49000, (b, 77), device=dev)
    ids[:, 0] = 49406
    ids[:, -1] = 49407
    with torch.no_grad():
        out[f"clip_b32_image_embed_B{b}_img_per_s"] = b / timed(lambda: model.get_image_features(pixel_values=px), 5)
        out[f"clip_b32_text_embed_B{b}x77_seq_per_s"] = b / timed(lambda: model.get_text_features(input_ids=ids), 5)
    del model
    torch.cuda.empty_cache()


def main():
    quick = "--quick" in sys.argv
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    out = {}
    if "--models-only" not in sys.argv:
        kernel_workloads(out, quick, dev)
    if "--generate" in sys.argv:
        out["gpt2_generate_f32"] = gpt2_generate(torch.float32)
        out["gpt2_generate_bf16"] = gpt2_generate(torch.bfloat16)
    if "--gpt2" in sys.argv:
        out["gpt2_124m_train_step"] = gpt2_step()
        out["gpt2_124m_train_step_bf16"] = gpt2_step(torch.bfloat16)
    if "--attention" in sys.argv:
        attention(out, dev)
    if "--vision" in sys.argv:
        vision(out, dev)
    elif "--clip" in sys.argv:
        clip(out, dev)
    tiny = torch.zeros(1, device=dev)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(2000):
        torch.add(tiny, 1.0)
    out["launch_overhead"] = (time.perf_counter() - start) / 2000 * 1e6
    torch.cuda.synchronize()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
