//! Hugging Face GPT-2 folders (`config.json`, `model.safetensors`, `tokenizer.json`): read
//! into a [`Gpt`] and written back in the layout `transformers` loads.
//!
//! GPT-2's linear layers are `Conv1D`, stored `[in, out]`; smith's are `[out, in]`, so each
//! is transposed once here. The fused `c_attn` (queries, keys, values) maps onto smith's
//! fused QKV projection as it is, and the head is tied to the token embedding.

use super::{Gpt, GptConfig};
use crate::io::{load_safetensors, save_safetensors, write_atomic};
use crate::{Device, Error, Result, Rng, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The fields of GPT-2's `config.json` that shape the model.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct HfGpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
}

fn yes() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

impl HfGpt2Config {
    /// Reads and checks `config.json`: what smith's GPT cannot represent is an error.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let cfg: HfGpt2Config = crate::io::parse_json(&bytes).map_err(|e| bad(path, e))?;
        if let Some(t) = &cfg.model_type {
            if t != "gpt2" {
                return Err(bad(path, format!("model_type `{t}` is not gpt2")));
            }
        }
        if !matches!(
            cfg.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast"
        ) {
            return Err(bad(
                path,
                format!(
                    "activation `{}` is not supported (tanh-approximated GELU only)",
                    cfg.activation_function
                ),
            ));
        }
        if (cfg.layer_norm_epsilon - 1e-5).abs() > 1e-12 {
            return Err(bad(
                path,
                format!(
                    "layer_norm_epsilon {} is not supported (1e-5 only)",
                    cfg.layer_norm_epsilon
                ),
            ));
        }
        if !cfg.scale_attn_weights || cfg.scale_attn_by_inverse_layer_idx {
            return Err(bad(
                path,
                "only attention scaled by 1/sqrt(head_dim) is supported",
            ));
        }
        if cfg.n_inner.is_some_and(|n| n != 4 * cfg.n_embd) {
            return Err(bad(path, "n_inner other than 4 * n_embd is not supported"));
        }
        Ok(cfg)
    }

    /// smith's shape for this model.
    pub fn gpt(&self) -> GptConfig {
        GptConfig {
            vocab_size: self.vocab_size,
            block_size: self.n_positions,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            dropout: 0.0,
        }
    }
}

/// Whether `dir` holds a Hugging Face GPT-2 (its `config.json` names `model_type: gpt2`
/// or has GPT-2's fields).
/// The folder is judged by the config's fields, not by whether it reads cleanly, so that a
/// damaged GPT-2 config is reported as such rather than as some other kind of folder.
pub fn is_hf_gpt2(dir: &Path) -> bool {
    let Ok(bytes) = std::fs::read(dir.join("config.json")) else {
        return false;
    };
    let Ok(serde_json::Value::Object(cfg)) = serde_json::from_slice(&bytes) else {
        return false;
    };
    match cfg.get("model_type") {
        Some(t) => t == "gpt2",
        // A smith checkpoint's config has `model` and `train`; GPT-2's has its own fields.
        None => cfg.contains_key("n_embd") && !cfg.contains_key("train"),
    }
}

/// (smith name, transposed) for a GPT-2 tensor name without its `transformer.` prefix;
/// `None` for buffers that carry no weights (`attn.bias`, `attn.masked_bias`).
fn smith_name(hf: &str) -> Option<(String, bool)> {
    let map = [
        (".ln_1.", ".norm1.", false),
        (".ln_2.", ".norm2.", false),
        (".attn.c_attn.weight", ".attn.qkv.weight", true),
        (".attn.c_attn.bias", ".attn.qkv.bias", false),
        (".attn.c_proj.weight", ".attn.proj.weight", true),
        (".attn.c_proj.bias", ".attn.proj.bias", false),
        (".mlp.c_fc.weight", ".mlp.fc.weight", true),
        (".mlp.c_fc.bias", ".mlp.fc.bias", false),
        (".mlp.c_proj.weight", ".mlp.proj.weight", true),
        (".mlp.c_proj.bias", ".mlp.proj.bias", false),
    ];
    if hf.ends_with(".attn.bias") || hf.ends_with(".attn.masked_bias") {
        return None;
    }
    if hf.starts_with("h.") {
        for (from, to, t) in map {
            if hf.contains(from) {
                return Some((hf.replacen(from, to, 1), t));
            }
        }
    }
    Some((hf.to_string(), false))
}

/// Loads a Hugging Face GPT-2 folder onto `device`: names with or without the
/// `transformer.` prefix, Conv1D weights transposed once, the head tied to `wte` (an
/// `lm_head.weight` that differs from it is an error).
pub fn load_hf_gpt2(dir: &Path, device: Device) -> Result<Gpt> {
    let cfg = HfGpt2Config::read(&dir.join("config.json"))?;
    let path = dir.join("model.safetensors");
    let raw = load_safetensors(&path)?;
    let mut weights = HashMap::new();
    let mut head = None;
    for (name, t) in raw {
        let bare = name.strip_prefix("transformer.").unwrap_or(&name);
        if bare == "lm_head.weight" {
            head = Some(t);
            continue;
        }
        let Some((smith, transpose)) = smith_name(bare) else {
            continue;
        };
        let t = if transpose {
            if t.rank() != 2 {
                return Err(bad(
                    &path,
                    format!("`{name}` should be a matrix, is {:?}", t.shape()),
                ));
            }
            t.t()?.contiguous()?
        } else {
            t
        };
        weights.insert(smith, t);
    }
    super::checks::check_gpt_shape(
        &dir.join("config.json"),
        &cfg.gpt(),
        |k| k.to_string(),
        |n| weights.get(n).map(|t| t.shape().to_vec()),
        weights.keys().map(String::as_str),
    )?;
    let model = Gpt::new(cfg.gpt(), &mut Rng::new(0), device)?;
    model
        .load_weights(&weights)
        .map_err(|e| bad(&path, e.to_string()))?;
    if let Some(h) = head {
        let wte = weights
            .get("wte.weight")
            .ok_or_else(|| bad(&path, "missing `wte.weight`"))?;
        let same = h.shape() == wte.shape()
            && h.to_vec_f64()?
                .iter()
                .zip(wte.to_vec_f64()?)
                .all(|(a, b)| *a == b);
        if !same {
            return Err(bad(
                &path,
                "`lm_head.weight` differs from `wte.weight`: untied heads are not supported",
            ));
        }
    }
    Ok(model)
}

/// Writes `model` as a Hugging Face GPT-2 folder (`config.json`, `model.safetensors` with
/// `transformer.`-prefixed names and Conv1D layouts), atomically per file; copies
/// `tokenizer` (a `tokenizer.json`) in when given.
pub fn save_hf_gpt2(model: &Gpt, dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let c = model.cfg;
    let config = serde_json::json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "tie_word_embeddings": true,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    });
    let text = serde_json::to_string_pretty(&config)?;
    write_atomic(&dir.join("config.json"), text.as_bytes())?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let reverse = [
        (".norm1.", ".ln_1."),
        (".norm2.", ".ln_2."),
        (".attn.qkv.", ".attn.c_attn."),
        (".attn.proj.", ".attn.c_proj."),
        (".mlp.fc.", ".mlp.c_fc."),
        (".mlp.proj.", ".mlp.c_proj."),
    ];
    for p in model.params() {
        let mut name = p.name.clone();
        for (from, to) in reverse {
            if name.contains(from) {
                name = name.replacen(from, to, 1);
                break;
            }
        }
        let conv = name.starts_with("h.") && name.ends_with(".weight") && p.tensor.rank() == 2;
        let t = if conv {
            p.tensor.t()?.contiguous()?
        } else {
            p.tensor.clone()
        };
        tensors.push((format!("transformer.{name}"), t));
    }
    save_safetensors(&dir.join("model.safetensors"), &tensors)?;
    if let Some(src) = tokenizer {
        let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
        write_atomic(&dir.join("tokenizer.json"), &bytes)?;
    }
    Ok(())
}
