#!/usr/bin/env python3
"""Reference outputs of transformers for GGUF models smith loads.

Writes, for a small random Llama (GQA, untied head) and the GPT-2 of tests/fixtures/hf_gpt2,
GGUF files in F16, BF16, Q8_0 and Q4_0; for a random Phi-2 (parallel block, partial rotary,
GQA, biases everywhere) F16 with separate Q/K/V and Q8_0 with them fused; for a Llama with
Llama 3.1 rope scaling (`rope_freqs.weight`) F16, and for one with YaRN F16 (matrices quantized, norms and biases in F32, as
llama.cpp does; Llama's Q/K rows permuted to adjacent rotary pairs, as llama.cpp's
converter does). For each file, transformers runs on the dequantized weights (un-permuted)
and records logits (of the last 4 of 16 tokens), 32 greedy tokens and strided perplexity in NAME.json.
Needs the `gguf` package.
Usage: python3 tools/make_gguf_model_fixtures.py OUT_DIR [llama gpt2 phi2 llama31 yarn]
"""
import json
import math
import os
import sys

import numpy as np
import torch
import gguf
import transformers
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize
from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PhiConfig, PhiForCausalLM

V5 = int(transformers.__version__.split(".")[0]) >= 5
TYPES = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}


def permute(w, heads):
    """Hugging Face rotate-half rows -> adjacent pairs (llama.cpp's converter)."""
    out, dim = w.shape
    return w.reshape(heads, 2, out // heads // 2, dim).swapaxes(1, 2).reshape(out, dim)


def unpermute(w, heads):
    out, dim = w.shape
    return w.reshape(heads, out // heads // 2, 2, dim).swapaxes(1, 2).reshape(out, dim)


def store(writer, name, array, qtype):
    """Adds `array` (f32) in `qtype` (1-D tensors stay F32); returns what a reader gets."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim == 1:
        writer.add_tensor(name, array)
        return array
    if qtype == T.F16:
        raw = array.astype(np.float16)
        writer.add_tensor(name, raw)
        return raw.astype(np.float32)
    raw = quantize(array, qtype)
    writer.add_tensor(name, raw, raw_dtype=qtype)
    return dequantize(raw, qtype).reshape(array.shape).astype(np.float32)


def reference(model, path, vocab, ctx):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, vocab, (1, 16), generator=g)
    with torch.no_grad():
        logits = model(ids).logits.float()[0]
    prompt = torch.randint(0, vocab, (1, 8), generator=g)
    with torch.no_grad():
        gen = model.generate(prompt, max_new_tokens=32, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones_like(prompt))
    text = torch.randint(0, vocab, (150,), generator=g)
    stride, nll, count, scored_to, begin = ctx // 2, 0.0, 0, 1, 0
    while True:
        end = min(begin + ctx, len(text))
        with torch.no_grad():
            lp = model(text[begin:end - 1].unsqueeze(0)).logits.double().log_softmax(-1)[0]
        for j in range(end - begin - 1):
            i = begin + j + 1
            if i >= scored_to:
                nll -= lp[j, text[i]].item()
                count += 1
        scored_to = end
        if end == len(text):
            break
        begin += stride
    with open(path, "w") as f:
        json.dump({"ids": ids[0].tolist(), "logits_last4": logits[-4:].flatten().tolist(),
                   "prompt": prompt[0].tolist(), "greedy": gen[0, 8:].tolist(),
                   "text": text.tolist(), "ctx": ctx, "stride": stride,
                   "perplexity": math.exp(nll / count)}, f)
    print(path, "mean max probability", logits.softmax(-1).max(-1).values.mean().item(),
          "perplexity", math.exp(nll / count))


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def llama3_rope_freqs(head_dim):
    """llama.cpp's `rope_freqs` for LLAMA3_ROPE: the divisor of each rotary frequency."""
    r = LLAMA3_ROPE
    low_wavelen = r["original_max_position_embeddings"] / r["low_freq_factor"]
    high_wavelen = r["original_max_position_embeddings"] / r["high_freq_factor"]
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * r["rope_theta"] ** (i / head_dim)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(r["factor"])
        else:
            smooth = (r["original_max_position_embeddings"] / wavelen - r["low_freq_factor"]) / (
                r["high_freq_factor"] - r["low_freq_factor"])
            out.append(1 / ((1 - smooth) / r["factor"] + smooth))
    return np.array(out, dtype=np.float32)


YARN_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
             "original_max_position_embeddings": 16}


def yarn_divisors(head_dim):
    """llama.cpp's YaRN (beta_fast 32, beta_slow 1) as a divisor of each frequency, and
    its cos/sin magnitude."""
    r = YARN_ROPE
    pair = lambda turns: head_dim * math.log(r["original_max_position_embeddings"] / (turns * 2 * math.pi)) / (
        2 * math.log(r["rope_theta"]))
    low, high = max(0.0, math.floor(pair(32))), min(head_dim - 1.0, math.ceil(pair(1)))
    if high == low:
        high += 0.001
    out = []
    for i in range(head_dim // 2):
        keep = 1 - min(1.0, max(0.0, (i - low) / (high - low)))
        out.append(1 / ((1 - keep) / r["factor"] + keep))
    return np.array(out), 0.1 * math.log(r["factor"]) + 1


def llama(out, prefix="llama", types=TYPES, scaling=None):
    """scaling: None, "llama3" (rope_freqs.weight in the file) or "yarn" (metadata)."""
    torch.manual_seed(0)
    rope = {"rope_theta": 10000.0}
    params = {"llama3": LLAMA3_ROPE, "yarn": YARN_ROPE}.get(scaling)
    if params and V5:
        rope = {"rope_parameters": dict(params)}
    elif params:
        rope["rope_scaling"] = {k: v for k, v in params.items() if k != "rope_theta"}
    cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, **rope)
    model = LlamaForCausalLM(cfg).eval()
    if scaling:
        # transformers must really be scaling: its frequencies are the plain ones divided
        # by the factors smith derives, and its cos/sin magnitude is smith's.
        plain = 1.0 / (10000.0 ** (np.arange(0, 16, 2) / 16))
        div, mag = (llama3_rope_freqs(16), 1.0) if scaling == "llama3" else yarn_divisors(16)
        got = model.model.rotary_emb.inv_freq.double().numpy()
        assert np.allclose(got, plain / div, rtol=1e-5), (got, plain / div)
        assert not np.allclose(got, plain), "rope scaling had no effect"
        assert abs(model.model.rotary_emb.attention_scaling - mag) < 1e-6, model.model.rotary_emb.attention_scaling
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.25)
            else:
                p.uniform_(0.5, 1.5)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    h, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    for label, qtype in types.items():
        w = gguf.GGUFWriter(os.path.join(out, f"{prefix}_{label}.gguf"), arch="llama")
        w.add_context_length(64)
        w.add_embedding_length(64)
        w.add_block_count(2)
        w.add_feed_forward_length(128)
        w.add_head_count(h)
        w.add_head_count_kv(kv)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        if scaling == "llama3":
            w.add_tensor("rope_freqs.weight", llama3_rope_freqs(16))
        if scaling == "yarn":
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(YARN_ROPE["factor"])
            w.add_rope_scaling_orig_ctx_len(YARN_ROPE["original_max_position_embeddings"])
        back = {}
        back["model.embed_tokens.weight"] = store(w, "token_embd.weight", sd["model.embed_tokens.weight"], qtype)
        for i in range(2):
            p = f"model.layers.{i}."
            names = [("input_layernorm.weight", "attn_norm.weight"),
                     ("post_attention_layernorm.weight", "ffn_norm.weight"),
                     ("self_attn.v_proj.weight", "attn_v.weight"),
                     ("self_attn.o_proj.weight", "attn_output.weight"),
                     ("mlp.gate_proj.weight", "ffn_gate.weight"),
                     ("mlp.up_proj.weight", "ffn_up.weight"),
                     ("mlp.down_proj.weight", "ffn_down.weight")]
            for hf, gg in names:
                back[p + hf] = store(w, f"blk.{i}.{gg}", sd[p + hf], qtype)
            q = store(w, f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], h), qtype)
            k = store(w, f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], kv), qtype)
            back[p + "self_attn.q_proj.weight"] = unpermute(q, h)
            back[p + "self_attn.k_proj.weight"] = unpermute(k, kv)
        back["model.norm.weight"] = store(w, "output_norm.weight", sd["model.norm.weight"], qtype)
        back["lm_head.weight"] = store(w, "output.weight", sd["lm_head.weight"], qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        m = LlamaForCausalLM(cfg).eval()
        m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in back.items()}, strict=False)
        reference(m, os.path.join(out, f"{prefix}_{label}.json"), 1000, 64)


def gpt2(out, hf_dir):
    base = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    sd = {k: v.numpy() for k, v in base.state_dict().items()}
    for label, qtype in TYPES.items():
        w = gguf.GGUFWriter(os.path.join(out, f"gpt2_{label}.gguf"), arch="gpt2")
        w.add_context_length(64)
        w.add_embedding_length(64)
        w.add_block_count(2)
        w.add_head_count(4)
        w.add_layer_norm_eps(1e-5)
        back = {}
        back["transformer.wte.weight"] = store(w, "token_embd.weight", sd["transformer.wte.weight"], qtype)
        back["transformer.wpe.weight"] = store(w, "position_embd.weight", sd["transformer.wpe.weight"], qtype)
        for i in range(2):
            p = f"transformer.h.{i}."
            for hf, gg in [("ln_1", "attn_norm"), ("ln_2", "ffn_norm")]:
                for part in ["weight", "bias"]:
                    back[p + f"{hf}.{part}"] = store(w, f"blk.{i}.{gg}.{part}", sd[p + f"{hf}.{part}"], qtype)
            for hf, gg in [("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"),
                           ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")]:
                # Conv1D [in, out] is stored as [out, in].
                back[p + hf + ".weight"] = store(w, f"blk.{i}.{gg}.weight", sd[p + hf + ".weight"].T, qtype).T
                back[p + hf + ".bias"] = store(w, f"blk.{i}.{gg}.bias", sd[p + hf + ".bias"], qtype)
        for part in ["weight", "bias"]:
            back[f"transformer.ln_f.{part}"] = store(w, f"output_norm.{part}", sd[f"transformer.ln_f.{part}"], qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        m = GPT2LMHeadModel(base.config).eval()
        back["lm_head.weight"] = back["transformer.wte.weight"]
        m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in back.items()}, strict=False)
        reference(m, os.path.join(out, f"gpt2_{label}.json"), 1000, 64)


def phi2(out):
    """Phi-2: one layer norm feeding attention and MLP side by side, rotary on half of each
    head, GQA, gelu_new, biases on every layer and on the head."""
    torch.manual_seed(1)
    kw = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              layer_norm_eps=1e-5, hidden_act="gelu_new", tie_word_embeddings=False,
              resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, qk_layernorm=False)
    if V5:
        cfg = PhiConfig(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                         "partial_rotary_factor": 0.5}, **kw)
    else:
        cfg = PhiConfig(rope_theta=10000.0, partial_rotary_factor=0.5, **kw)
    model = PhiForCausalLM(cfg).eval()
    rot, hd, h, kv = 8, 16, 4, 2
    assert model.model.rotary_emb.inv_freq.shape[0] == rot // 2, model.model.rotary_emb.inv_freq.shape
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.25)
            elif "layernorm.weight" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    for label, qtype, fused in [("f16", T.F16, False), ("q8_0", T.Q8_0, True)]:
        w = gguf.GGUFWriter(os.path.join(out, f"phi2_{label}.gguf"), arch="phi2")
        w.add_context_length(64)
        w.add_embedding_length(64)
        w.add_block_count(2)
        w.add_feed_forward_length(256)
        w.add_head_count(h)
        w.add_head_count_kv(kv)
        w.add_layer_norm_eps(1e-5)
        w.add_rope_dimension_count(rot)
        back = {}
        back["model.embed_tokens.weight"] = store(w, "token_embd.weight", sd["model.embed_tokens.weight"], qtype)
        for i in range(2):
            p = f"model.layers.{i}."
            names = [("input_layernorm", "attn_norm"), ("self_attn.dense", "attn_output"),
                     ("mlp.fc1", "ffn_up"), ("mlp.fc2", "ffn_down")]
            if not fused:
                names += [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                          ("self_attn.v_proj", "attn_v")]
            for hf, gg in names:
                for part in ["weight", "bias"]:
                    back[p + f"{hf}.{part}"] = store(w, f"blk.{i}.{gg}.{part}", sd[p + f"{hf}.{part}"], qtype)
            if fused:
                sizes = [h * hd, kv * hd, kv * hd]
                for part in ["weight", "bias"]:
                    qkv = np.concatenate([sd[p + f"self_attn.{n}.{part}"] for n in ["q_proj", "k_proj", "v_proj"]])
                    got = store(w, f"blk.{i}.attn_qkv.{part}", qkv, qtype)
                    for n, piece in zip(["q_proj", "k_proj", "v_proj"], np.split(got, np.cumsum(sizes)[:-1])):
                        back[p + f"self_attn.{n}.{part}"] = piece
        for part in ["weight", "bias"]:
            back[f"model.final_layernorm.{part}"] = store(w, f"output_norm.{part}", sd[f"model.final_layernorm.{part}"], qtype)
            back[f"lm_head.{part}"] = store(w, f"output.{part}", sd[f"lm_head.{part}"], qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        m = PhiForCausalLM(cfg).eval()
        missing = m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in back.items()}, strict=False)
        assert not missing.missing_keys, missing.missing_keys
        reference(m, os.path.join(out, f"phi2_{label}.json"), 1000, 64)


if __name__ == "__main__":
    out = sys.argv[1]
    which = sys.argv[2:] or ["llama", "gpt2", "phi2", "llama31", "yarn"]
    os.makedirs(out, exist_ok=True)
    if "llama" in which:
        llama(out)
    if "gpt2" in which:
        gpt2(out, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf_gpt2"))
    if "phi2" in which:
        phi2(out)
    if "llama31" in which:
        llama(out, "llama31", {"f16": T.F16}, scaling="llama3")
    if "yarn" in which:
        llama(out, "llama_yarn", {"f16": T.F16}, scaling="yarn")
