"""Reference outputs of transformers' CLIP for tests/clip.rs.

    python3 tools/make_clip_fixtures.py --vocab target/clip-vocab --photos target/photos \
        --out tests/fixtures/clip [--b32 DIR]

Writes into --out:
- `tiny_quick/` and `tiny_gelu/`: two small `CLIPModel`s saved whole (config.json,
  model.safetensors) with seeded weights (norms and biases perturbed so that none is
  trivial), one with QuickGELU and the old end-of-text id 2 (pooled at the largest id),
  one with the exact GELU, a real end-of-text id and `position_ids` buffers written into
  the file; each with `reference.safetensors`: the inputs (random images, a padded batch of
  token ids and its attention mask) and transformers' outputs in f32 (projected features,
  normalised embeddings, `logits_per_image`).
- `tokenization.json`: a few hundred strings (punctuation, Unicode, whitespace, texts
  longer than the context) and the ids transformers' `CLIPTokenizer`, built from
  vocab.json and merges.txt alone, gives them with truncation to 77.
- `photos.safetensors`: the 8-bit levels `CLIPImageProcessor` leaves after its resize and
  crop of the four photos (`levels`, [4, 3, 224, 224]) and the first rows of its
  normalised output for the first photo (`pixel_rows`).

With --b32 DIR, also a `CLIPModel` with transformers' default configuration (ViT-B/32
shapes) and seeded weights, saved whole into DIR with the tokenizer, and
DIR/reference.safetensors from the photos and a padded batch of captions: too large to
keep, so it is made and checked on the same machine.
"""

import argparse
import json
import pathlib
import random
import shutil
import tempfile

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import transformers
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
            elif name == "logit_scale":
                p.fill_(2.0)


def run(model, pixels, ids, mask):
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        vis = model.vision_model(pixel_values=pixels).pooler_output
        txt = model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return {
            "image_features": model.visual_projection(vis).contiguous(),
            "text_features": model.text_projection(txt).contiguous(),
            "image_embeds": out.image_embeds.contiguous(),
            "text_embeds": out.text_embeds.contiguous(),
            "logits_per_image": out.logits_per_image.contiguous(),
        }


def tiny(out, name, act, legacy_eos, hidden, heads, image, patch, seed, position_ids):
    vocab = 512
    eos = vocab - 1
    text = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=2,
        max_position_embeddings=77,
        hidden_act=act,
        eos_token_id=2 if legacy_eos else eos,
        bos_token_id=vocab - 2,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=2,
        image_size=image,
        patch_size=patch,
        hidden_act=act,
    )
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    perturb(model, seed + 1)
    d = out / name
    model.save_pretrained(d)
    if position_ids:
        f = d / "model.safetensors"
        w = load_file(f)
        w["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        grid = (image // patch) ** 2 + 1
        w["vision_model.embeddings.position_ids"] = torch.arange(grid).unsqueeze(0)
        save_file(w, f, metadata={"format": "pt"})
    g = torch.Generator().manual_seed(seed + 2)
    pixels = torch.randn(3, 3, image, image, generator=g)
    lengths = [5, 9, 12]
    t = max(lengths)
    pad = eos if legacy_eos else 1
    ids = torch.full((3, t), pad, dtype=torch.int64)
    mask = torch.zeros((3, t), dtype=torch.int64)
    for r, n in enumerate(lengths):
        ids[r, 0] = vocab - 2
        ids[r, 1 : n - 1] = torch.randint(3, vocab - 3, (n - 2,), generator=g)
        ids[r, n - 1] = eos
        mask[r, :n] = 1
    ref = run(model, pixels, ids, mask)
    ref.update(pixel_values=pixels, input_ids=ids, attention_mask=mask)
    save_file(ref, d / "reference.safetensors")


def strings():
    base = [
        "a photo of a cat",
        "A photo of a DOG.",
        "Hello, world!!!",
        "it's a dog's life; we'll see, they're here, I'm done, you've won, he'd go",
        "don't stop",
        "1234567890 3.14159 1st 2nd 3rd",
        "café naïve Zürich façade",
        "e\u0301cole",  # combining accent, NFC-normalised
        "日本語のテキスト",
        "中文字符和标点，句号。",
        "emoji 🐱🐶🚀 and ❤️",
        "Ελληνικά και русский текст",
        "tabs\tand\nnewlines\r\nand   many    spaces",
        "   leading and trailing   ",
        "",
        "!!!???...,,,;;;",
        "<|startoftext|> spelled out <|endoftext|>",
        "a-b_c/d\\e|f@g#h$i%j^k&l*m(n)o[p]q{r}s<t>u=v+w~x`y",
        "&amp; &lt; html entities &gt;",
        "Mixed CASE WiTh CamelCase and snake_case",
        "x" * 300,
        "antidisestablishmentarianism supercalifragilisticexpialidocious",
    ]
    words = (
        "the quick brown fox jumps over lazy dog photo of a an in on with red blue green "
        "small large cat dog bird car tree house rocket coffee cup astronaut space city "
        "night day sunny painting drawing sketch 3d render close-up portrait landscape "
        "über naïve 東京 café ß ø å é ç ñ"
    ).split()
    rng = random.Random(0)
    out = list(base)
    for _ in range(240):
        n = rng.randint(1, 20)
        s = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            s = s.capitalize() + rng.choice([".", "!", "?", ",", " :)", "..."])
        out.append(s)
    long = " ".join(words * 3)
    out += [long, long.upper(), ("a photo of " * 40).strip()]
    return out


def tokenization(vocab, out):
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(vocab / f, tmp)
        tok = CLIPTokenizer.from_pretrained(tmp)
        texts = strings()
        ids = tok(texts, truncation=True, max_length=77)["input_ids"]
    doc = {
        "tokenizer": type(tok).__name__,
        "transformers": transformers.__version__,
        "texts": texts,
        "ids": ids,
    }
    (out / "tokenization.json").write_text(json.dumps(doc, ensure_ascii=False))
    try:
        from tokenizers import Tokenizer

        ours = Tokenizer.from_file(str(vocab / "tokenizer.json"))
        ours.enable_truncation(77)
        bad = sum(ours.encode(t).ids != i for t, i in zip(texts, ids))
        print(f"tokenization: {len(texts)} strings, tokenizer.json differs on {bad}")
    except ImportError:
        print(f"tokenization: {len(texts)} strings")
    return tok


def processor():
    try:
        from transformers import CLIPImageProcessor

        p = CLIPImageProcessor()
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"no CLIPImageProcessor: {e}")
    return p


def photos(dir_, out):
    proc = processor()
    imgs = [Image.open(dir_ / p).convert("RGB") for p in PHOTOS]
    px = proc(images=imgs, return_tensors="pt")["pixel_values"].float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    levels = ((px * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    save_file(
        {"levels": levels.contiguous(), "pixel_rows": px[0, :, :8, :].contiguous()},
        out / "photos.safetensors",
        metadata={"processor": type(proc).__name__},
    )
    print(f"photos: {type(proc).__name__}, pixel_values {tuple(px.shape)}")
    return proc, imgs, px


def b32(dir_, vocab, proc, imgs, px, tok):
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()
    perturb(model, 1)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(1 / 0.07))
    model.save_pretrained(dir_)
    shutil.copy(vocab / "tokenizer.json", dir_)
    texts = [
        "a photo of a cat",
        "a photo of a cup of coffee",
        "an astronaut",
        "a rocket on the launch pad at night, with clouds",
    ]
    enc = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    ref = run(model, px, enc["input_ids"], enc["attention_mask"])
    ref.update(
        pixel_values=px.contiguous(),
        input_ids=enc["input_ids"].contiguous(),
        attention_mask=enc["attention_mask"].contiguous(),
    )
    save_file(ref, pathlib.Path(dir_) / "reference.safetensors")
    print(f"b32: saved to {dir_}, logits {ref['logits_per_image'].tolist()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=pathlib.Path, required=True)
    ap.add_argument("--photos", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--b32", type=pathlib.Path)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    tiny(a.out, "tiny_quick", "quick_gelu", True, 64, 1, 32, 8, 10, False)
    tiny(a.out, "tiny_gelu", "gelu", False, 32, 2, 48, 16, 20, True)
    tok = tokenization(a.vocab, a.out)
    proc, imgs, px = photos(a.photos, a.out)
    if a.b32:
        b32(a.b32, a.vocab, proc, imgs, px, tok)


if __name__ == "__main__":
    main()
