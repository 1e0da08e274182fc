#!/usr/bin/env python3
"""transformers' Gemma 3 (Gemma3ForCausalLM) on the weights of a Gemma 3 GGUF file, for
tests/real_models.rs: greedy continuations of a few prompts, 32 tokens each, as JSON.

transformers 5.17 can load a gemma3 GGUF by itself (`from_pretrained(dir, gguf_file=...)`),
but the model it builds answers garbage ("The capital of France is is is is ..."), so this
script builds the model from the file's hyper-parameters and fills it with the file's
tensors, dequantized by the `gguf` package, taking back the `1 +` that llama.cpp's converter
folds into every Gemma norm weight. Prompt ids come from transformers' tokenizer for the
GGUF file. It also prints what the `gguf_file=` model says, for comparison.

transformers' tokenizer for the file is wrong as well (no BOS, words split into small
pieces), so prompt ids come from SentencePiece itself (the `sentencepiece` package, on a
model built from the file's pieces, scores and types: BPE, byte fallback, no dummy prefix,
no normalization), with BOS first.
Usage: python3 tools/make_gemma3_reference.py DIR FILE.gguf OUT.json
"""
import json
import sys

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
]


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.parts[f.data[0]][0].item()


def build(path):
    r = GGUFReader(path)
    a = "gemma3"
    tensors = {t.name: t for t in r.tensors}
    vocab = int(tensors["token_embd.weight"].shape[1])
    kw = dict(
        vocab_size=vocab,
        hidden_size=field(r, f"{a}.embedding_length"),
        intermediate_size=field(r, f"{a}.feed_forward_length"),
        num_hidden_layers=field(r, f"{a}.block_count"),
        num_attention_heads=field(r, f"{a}.attention.head_count"),
        num_key_value_heads=field(r, f"{a}.attention.head_count_kv"),
        head_dim=field(r, f"{a}.attention.key_length"),
        max_position_embeddings=field(r, f"{a}.context_length"),
        rms_norm_eps=field(r, f"{a}.attention.layer_norm_rms_epsilon"),
        sliding_window=field(r, f"{a}.attention.sliding_window"),
        query_pre_attn_scalar=field(r, f"{a}.attention.key_length"),
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    n = kw["num_hidden_layers"]
    kw["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                         for i in range(n)]
    theta = field(r, f"{a}.rope.freq_base", 1e6)
    cfg = Gemma3TextConfig(**kw, rope_theta=theta, rope_local_base_freq=10000.0)
    if hasattr(cfg, "rope_parameters"):
        cfg.rope_parameters = {
            "full_attention": {"rope_type": "default", "rope_theta": theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        }
    print("config:", cfg)
    model = Gemma3ForCausalLM(cfg).to(torch.float32).eval()
    names = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
        "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
        "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
        "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    }
    state = {}
    for name, t in tensors.items():
        w = dequantize(t.data, t.tensor_type).reshape(list(reversed(t.shape.tolist())))
        w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        if name == "token_embd.weight":
            state["model.embed_tokens.weight"] = w
            continue
        if name == "output_norm.weight":
            state["model.norm.weight"] = w - 1.0
            continue
        _, i, kind, _ = name.split(".")
        ours = f"model.layers.{i}.{names[kind]}.weight"
        state[ours] = w - 1.0 if kind.endswith("norm") else w
    missing, unexpected = model.load_state_dict(state, strict=False)
    print("missing:", missing, "unexpected:", unexpected)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    model.tie_weights()
    return model


def spm_tokenizer(path):
    """A SentencePiece processor built from the GGUF vocabulary."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    r = GGUFReader(path)
    f = r.fields
    tokens = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode() for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.vocab_size = len(tokens)
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    ids = {k: int(field(r, f"tokenizer.ggml.{k}_token_id", -1))
           for k in ["unknown", "bos", "eos", "padding"]}
    m.trainer_spec.unk_id, m.trainer_spec.bos_id = ids["unknown"], ids["bos"]
    m.trainer_spec.eos_id, m.trainer_spec.pad_id = ids["eos"], ids["padding"]
    kinds = {1: pb.ModelProto.SentencePiece.NORMAL, 2: pb.ModelProto.SentencePiece.UNKNOWN,
             3: pb.ModelProto.SentencePiece.CONTROL, 4: pb.ModelProto.SentencePiece.USER_DEFINED,
             5: pb.ModelProto.SentencePiece.UNUSED, 6: pb.ModelProto.SentencePiece.BYTE}
    for i, (t, s, k) in enumerate(zip(tokens, scores, types)):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, s, kinds.get(k, pb.ModelProto.SentencePiece.NORMAL)
        if i == ids["unknown"]:
            p.type = pb.ModelProto.SentencePiece.UNKNOWN
        elif i in (ids["bos"], ids["eos"], ids["padding"]):
            p.type = pb.ModelProto.SentencePiece.CONTROL
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp


def greedy(model, tok, p, pad, ids=None):
    if ids is None:
        ids = tok(p, return_tensors="pt", add_special_tokens=True).input_ids
    else:
        ids = torch.tensor([ids])
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=32, do_sample=False,
                             attention_mask=torch.ones_like(ids), pad_token_id=pad)
    return ids[0].tolist(), gen[0, ids.shape[1]:].tolist()


def main():
    d, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = build(d + "/" + name)
    sp = spm_tokenizer(d + "/" + name)
    cases = []
    for p in PROMPTS:
        print("transformers' tokenizer:", tok(p, add_special_tokens=True).input_ids)
        prompt_ids, source = [2] + sp.encode(p), "sentencepiece"
        ids, new = greedy(model, tok, p, 0, prompt_ids)
        cases.append({"prompt": p, "bos": True, "ids": ids, "ids_from": source, "greedy": new})
        print("reference:", source, ids, repr(p + tok.decode(new)))
    with open(out, "w") as f:
        json.dump(cases, f, indent=1)
    loaded = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    for p in PROMPTS[:2]:
        _, new = greedy(loaded, tok, p, 0)
        print("gguf_file= model:", repr(p + tok.decode(new)))


if __name__ == "__main__":
    main()
