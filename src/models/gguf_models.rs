//! Models from GGUF files: `llama` (GQA, rope base), `qwen2` (QKV biases) and `gpt2`, with
//! hyper-parameters from the metadata and weights dequantized to the requested dtype.

use super::{Gpt, GptConfig, LanguageModel, Llama, LlamaConfig};
use crate::io::gguf::GgufFile;
use crate::nn::{KvCache, Param};
use crate::{DType, Device, Error, Result, Rng, RotaryStyle, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A model read from a GGUF file.
pub enum GgufModel {
    Gpt(Gpt),
    Llama(Llama),
}

impl LanguageModel for GgufModel {
    fn vocab_size(&self) -> usize {
        match self {
            GgufModel::Gpt(m) => m.vocab_size(),
            GgufModel::Llama(m) => m.vocab_size(),
        }
    }
    fn context(&self) -> usize {
        match self {
            GgufModel::Gpt(m) => LanguageModel::context(m),
            GgufModel::Llama(m) => m.context(),
        }
    }
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        match self {
            GgufModel::Gpt(m) => LanguageModel::forward(m, idx),
            GgufModel::Llama(m) => m.forward(idx),
        }
    }
    fn new_caches(&self, batch: usize, max_len: usize) -> Result<Vec<KvCache>> {
        match self {
            GgufModel::Gpt(m) => LanguageModel::new_caches(m, batch, max_len),
            GgufModel::Llama(m) => m.new_caches(batch, max_len),
        }
    }
    fn forward_cached(&self, idx: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        match self {
            GgufModel::Gpt(m) => LanguageModel::forward_cached(m, idx, caches),
            GgufModel::Llama(m) => m.forward_cached(idx, caches),
        }
    }
}

fn bad(f: &GgufFile, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: f.path.clone(),
        msg: msg.into(),
    }
}

/// A required unsigned metadata value `{arch}.{key}`.
fn hyper(f: &GgufFile, arch: &str, key: &str) -> Result<usize> {
    f.get(&format!("{arch}.{key}"))
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .ok_or_else(|| {
            bad(
                f,
                format!("metadata `{arch}.{key}` is missing or not an integer"),
            )
        })
}

fn hyper_f(f: &GgufFile, arch: &str, key: &str, default: f64) -> f64 {
    f.get(&format!("{arch}.{key}"))
        .and_then(|v| v.as_f64())
        .unwrap_or(default)
}

/// Overwrites every parameter from `weights`, naming the file in any error.
fn load_params(f: &GgufFile, params: &[Param], weights: &HashMap<String, Tensor>) -> Result<()> {
    crate::nn::assign_params(params, weights).map_err(|e| bad(f, e.to_string()))
}

/// Loads the model of a GGUF file onto `device` with weights in `dtype` (dequantized).
pub fn load_gguf_model(path: &Path, device: Device, dtype: DType) -> Result<(GgufModel, GgufFile)> {
    let f = GgufFile::open(path)?;
    let arch = f
        .architecture()
        .ok_or_else(|| bad(&f, "metadata `general.architecture` is missing"))?
        .to_string();
    let model = match arch.as_str() {
        "llama" | "qwen2" => GgufModel::Llama(load_llama(&f, &arch, device, dtype)?),
        "gpt2" => GgufModel::Gpt(load_gpt2(&f, device, dtype)?),
        other => {
            return Err(bad(
                &f,
                format!("architecture `{other}` is not supported (llama, qwen2 and gpt2 are)"),
            ))
        }
    };
    Ok((model, f))
}

fn tensor(f: &GgufFile, name: &str) -> Result<Tensor> {
    f.dequantize(name)
}

fn load_llama(f: &GgufFile, arch: &str, device: Device, dtype: DType) -> Result<Llama> {
    if let Some(kind) = f
        .get(&format!("{arch}.rope.scaling.type"))
        .and_then(|v| v.as_str())
    {
        if kind != "none" {
            return Err(bad(
                f,
                format!("rope scaling `{kind}` is not supported yet"),
            ));
        }
    }
    let embed = f
        .tensor_info("token_embd.weight")
        .ok_or_else(|| bad(f, "missing tensor `token_embd.weight`"))?;
    let n_head = hyper(f, arch, "attention.head_count")?;
    let cfg = LlamaConfig {
        vocab_size: embed.shape[0],
        context: hyper(f, arch, "context_length")?,
        n_layer: hyper(f, arch, "block_count")?,
        n_head,
        n_kv_head: hyper(f, arch, "attention.head_count_kv").unwrap_or(n_head),
        dim: hyper(f, arch, "embedding_length")?,
        hidden: hyper(f, arch, "feed_forward_length")?,
        rope_base: hyper_f(f, arch, "rope.freq_base", 10000.0),
        // llama.cpp's converter permutes Llama's Q/K rows to adjacent rotary pairs; Qwen2
        // keeps Hugging Face's rotate-half layout.
        rope_style: if arch == "llama" {
            RotaryStyle::Interleaved
        } else {
            RotaryStyle::RotateHalf
        },
        norm_eps: hyper_f(f, arch, "attention.layer_norm_rms_epsilon", 1e-5),
        qkv_bias: f.tensor_info("blk.0.attn_q.bias").is_some(),
        tied: f.tensor_info("output.weight").is_none(),
    };
    let model = Llama::new(cfg, &mut Rng::new(0), device)?.to_dtype(dtype)?;
    let mut w = HashMap::new();
    w.insert("embed.weight".to_string(), tensor(f, "token_embd.weight")?);
    w.insert("norm.weight".to_string(), tensor(f, "output_norm.weight")?);
    if !cfg.tied {
        w.insert("head.weight".to_string(), tensor(f, "output.weight")?);
    }
    for i in 0..cfg.n_layer {
        let g = |n: &str| tensor(f, &format!("blk.{i}.{n}"));
        let p = |n: &str| format!("h.{i}.{n}");
        w.insert(p("norm1.weight"), g("attn_norm.weight")?);
        w.insert(p("norm2.weight"), g("ffn_norm.weight")?);
        // Q, K and V stacked into the fused projection.
        let qkv = Tensor::cat(
            &[
                g("attn_q.weight")?,
                g("attn_k.weight")?,
                g("attn_v.weight")?,
            ],
            0,
        )?;
        w.insert(p("attn.qkv.weight"), qkv);
        if cfg.qkv_bias {
            let b = Tensor::cat(
                &[g("attn_q.bias")?, g("attn_k.bias")?, g("attn_v.bias")?],
                0,
            )?;
            w.insert(p("attn.qkv.bias"), b);
        }
        w.insert(p("attn.proj.weight"), g("attn_output.weight")?);
        w.insert(p("mlp.gate.weight"), g("ffn_gate.weight")?);
        w.insert(p("mlp.up.weight"), g("ffn_up.weight")?);
        w.insert(p("mlp.down.weight"), g("ffn_down.weight")?);
    }
    load_params(f, &model.params(), &w)?;
    Ok(model)
}

fn load_gpt2(f: &GgufFile, device: Device, dtype: DType) -> Result<Gpt> {
    let embed = f
        .tensor_info("token_embd.weight")
        .ok_or_else(|| bad(f, "missing tensor `token_embd.weight`"))?;
    let eps = hyper_f(f, "gpt2", "attention.layer_norm_epsilon", 1e-5);
    if (eps - 1e-5).abs() > 1e-9 {
        return Err(bad(
            f,
            format!("layer norm epsilon {eps} is not supported (1e-5 only)"),
        ));
    }
    let cfg = GptConfig {
        vocab_size: embed.shape[0],
        block_size: hyper(f, "gpt2", "context_length")?,
        n_layer: hyper(f, "gpt2", "block_count")?,
        n_head: hyper(f, "gpt2", "attention.head_count")?,
        n_embd: hyper(f, "gpt2", "embedding_length")?,
        dropout: 0.0,
    };
    let model = Gpt::new(cfg, &mut Rng::new(0), device)?.to_dtype(dtype)?;
    let mut w = HashMap::new();
    let names = [
        ("wte.weight", "token_embd.weight"),
        ("wpe.weight", "position_embd.weight"),
        ("ln_f.weight", "output_norm.weight"),
        ("ln_f.bias", "output_norm.bias"),
    ];
    for (ours, theirs) in names {
        w.insert(ours.to_string(), tensor(f, theirs)?);
    }
    for i in 0..cfg.n_layer {
        let map = [
            ("norm1", "attn_norm"),
            ("attn.qkv", "attn_qkv"),
            ("attn.proj", "attn_output"),
            ("norm2", "ffn_norm"),
            ("mlp.fc", "ffn_up"),
            ("mlp.proj", "ffn_down"),
        ];
        for (ours, theirs) in map {
            for part in ["weight", "bias"] {
                w.insert(
                    format!("h.{i}.{ours}.{part}"),
                    tensor(f, &format!("blk.{i}.{theirs}.{part}"))?,
                );
            }
        }
    }
    if f.tensor_info("output.weight").is_some() {
        let head = tensor(f, "output.weight")?.to_vec::<f32>()?;
        if head != w["wte.weight"].to_vec::<f32>()? {
            return Err(bad(
                f,
                "an untied `output.weight` is not supported for gpt2",
            ));
        }
    }
    load_params(f, &model.params(), &w)?;
    Ok(model)
}
