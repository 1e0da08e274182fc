//! Models from GGUF files: `llama` (GQA, rope base and scaling), `qwen2` (QKV biases),
//! `gemma3`, `phi2`, `phi3` and `gpt2`, with
//! hyper-parameters from the metadata. Quantized matrices stay quantized (their products
//! and lookups dequantize in the kernel); everything else is converted to the requested
//! dtype.

use super::checks::{expect_layers, expect_shape, hyper_error, layers_present, mul, positive};
use super::llama::SlidingWindow;
use super::{Gpt, GptConfig, LanguageModel, Llama, LlamaConfig};
use crate::io::gguf::GgufFile;
use crate::nn::{Embedding, KvCache, Linear, Param};
use crate::quantized::is_quantized;
use crate::{DType, Device, Error, QMatrix, Result, Rng, RotaryStyle, Tensor};
use std::collections::{HashMap, HashSet};
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

pub(super) fn bad(f: &GgufFile, msg: impl Into<String>) -> Error {
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

/// A required size `{arch}.{key}`: an unsigned integer above zero.
fn size(f: &GgufFile, arch: &str, key: &str) -> Result<usize> {
    let v = hyper(f, arch, key)?;
    positive(&f.path, &format!("{arch}.{key}"), v)?;
    Ok(v)
}

pub(super) fn hyper_f(f: &GgufFile, arch: &str, key: &str, default: f64) -> f64 {
    f.get(&format!("{arch}.{key}"))
        .and_then(|v| v.as_f64())
        .unwrap_or(default)
}

/// Overwrites every parameter from `weights`, naming the file in any error.
fn load_params(f: &GgufFile, params: &[Param], weights: &HashMap<String, Tensor>) -> Result<()> {
    crate::nn::assign_params(params, weights).map_err(|e| bad(f, e.to_string()))
}

/// Loads the model of a GGUF file onto `device`, computing in `dtype`. Quantized matrices
/// stay quantized in memory ([`QMatrix`]); the other tensors are converted to `dtype`.
pub fn load_gguf_model(path: &Path, device: Device, dtype: DType) -> Result<(GgufModel, GgufFile)> {
    load(path, device, dtype, true)
}

/// Loads the model of a GGUF file with every tensor dequantized to `dtype` (trainable, and
/// faster for long prompts, at several times the memory).
pub fn load_gguf_model_dense(
    path: &Path,
    device: Device,
    dtype: DType,
) -> Result<(GgufModel, GgufFile)> {
    load(path, device, dtype, false)
}

fn load(path: &Path, device: Device, dtype: DType, quant: bool) -> Result<(GgufModel, GgufFile)> {
    let f = GgufFile::open(path)?;
    let arch = f
        .architecture()
        .ok_or_else(|| bad(&f, "metadata `general.architecture` is missing"))?
        .to_string();
    let model = match arch.as_str() {
        "llama" | "qwen2" | "gemma3" | "phi2" | "phi3" => {
            GgufModel::Llama(load_llama(&f, &arch, device, dtype, quant)?)
        }
        "gpt2" => GgufModel::Gpt(load_gpt2(&f, device, dtype, quant)?),
        other => {
            return Err(bad(
                &f,
                format!(
                    "architecture `{other}` is not supported \
                     (llama, qwen2, gemma3, phi2, phi3 and gpt2 are)"
                ),
            ))
        }
    };
    Ok((model, f))
}

fn tensor(f: &GgufFile, name: &str) -> Result<Tensor> {
    f.dequantize(name)
}

/// The named tensors stacked into one quantized matrix on `device`, or `None` when any of
/// them is not of a quantized type (it is then loaded dense).
fn qmatrix(f: &GgufFile, names: &[String], device: Device) -> Result<Option<QMatrix>> {
    let mut parts = Vec::with_capacity(names.len());
    let mut cols = None;
    for name in names {
        let info = f
            .tensor_info(name)
            .ok_or_else(|| bad(f, format!("missing tensor `{name}`")))?;
        if info.shape.len() != 2 || !is_quantized(info.ty) {
            return Ok(None);
        }
        if *cols.get_or_insert(info.shape[1]) != info.shape[1] {
            return Err(bad(
                f,
                format!("`{name}` is {:?}, unlike its siblings", info.shape),
            ));
        }
        parts.push((info.ty, info.shape[0], f.tensor_bytes(info)));
    }
    let cols = cols.ok_or_else(|| bad(f, "no tensors to stack"))?;
    QMatrix::from_parts(cols, &parts, device)
        .map(Some)
        .map_err(|e| bad(f, format!("{}: {e}", names.join("+"))))
}

/// Rows `start..start + rows` of a quantized 2-D tensor as a matrix on `device`, or `None`
/// when the tensor is not quantized.
fn qmatrix_rows(
    f: &GgufFile,
    name: &str,
    start: usize,
    rows: usize,
    device: Device,
) -> Result<Option<QMatrix>> {
    let info = f
        .tensor_info(name)
        .ok_or_else(|| bad(f, format!("missing tensor `{name}`")))?;
    if info.shape.len() != 2 || !is_quantized(info.ty) {
        return Ok(None);
    }
    if start + rows > info.shape[0] {
        return Err(bad(
            f,
            format!("`{name}` has {} rows, not {}", info.shape[0], start + rows),
        ));
    }
    let row_bytes = f.tensor_bytes(info).len() / info.shape[0];
    let bytes = &f.tensor_bytes(info)[start * row_bytes..(start + rows) * row_bytes];
    QMatrix::from_bytes(info.ty, rows, info.shape[1], bytes, device)
        .map(Some)
        .map_err(|e| bad(f, format!("{name}: {e}")))
}

/// Replaces `layer` by the quantized stack of `names` when they are all quantized; the
/// bias, if the layer has one, is the concatenation of `biases`.
fn quantize_linear(
    f: &GgufFile,
    layer: &mut Linear,
    names: &[String],
    biases: &[String],
    dtype: DType,
) -> Result<()> {
    let Some(q) = qmatrix(f, names, layer.weight.device())? else {
        return Ok(());
    };
    let bias = if layer.bias.is_some() {
        let parts = biases
            .iter()
            .map(|n| tensor(f, n))
            .collect::<Result<Vec<_>>>()?;
        Some(Tensor::cat(&parts, 0)?)
    } else {
        None
    };
    *layer = Linear::quantized(q, bias, dtype)?;
    Ok(())
}

/// Replaces an embedding table by its quantized form when the file stores it quantized.
fn quantize_embedding(f: &GgufFile, e: &mut Embedding, name: &str, dtype: DType) -> Result<()> {
    if let Some(q) = qmatrix(f, &[name.to_string()], e.weight.device())? {
        *e = Embedding::quantized(q, dtype)?;
    }
    Ok(())
}

/// Dense tensors for the parameters still in `params`, from `(ours, loader)` pairs.
struct DenseWeights {
    wanted: HashSet<String>,
    map: HashMap<String, Tensor>,
}

impl DenseWeights {
    fn new(params: &[Param]) -> Self {
        DenseWeights {
            wanted: params.iter().map(|p| p.name.clone()).collect(),
            map: HashMap::new(),
        }
    }

    /// Loads `ours` with `load` when the model still has it as a dense parameter.
    fn put(&mut self, ours: String, load: impl FnOnce() -> Result<Tensor>) -> Result<()> {
        if self.wanted.contains(&ours) {
            self.map.insert(ours, load()?);
        }
        Ok(())
    }
}

fn load_llama(
    f: &GgufFile,
    arch: &str,
    device: Device,
    dtype: DType,
    quant: bool,
) -> Result<Llama> {
    let embed = f
        .tensor_info("token_embd.weight")
        .ok_or_else(|| bad(f, "missing tensor `token_embd.weight`"))?;
    let n_head = size(f, arch, "attention.head_count")?;
    let dim = size(f, arch, "embedding_length")?;
    let mut cfg = LlamaConfig::llama(
        embed.shape[0],
        size(f, arch, "context_length")?,
        size(f, arch, "block_count")?,
        n_head,
        match f.get(&format!("{arch}.attention.head_count_kv")) {
            None => n_head,
            Some(_) => size(f, arch, "attention.head_count_kv")?,
        },
        dim,
        size(f, arch, "feed_forward_length")?,
        hyper_f(f, arch, "rope.freq_base", 10000.0),
    );
    // llama.cpp's converter permutes Llama's Q/K rows to adjacent rotary pairs; Qwen2 and
    // Gemma keep Hugging Face's rotate-half layout.
    if arch == "llama" {
        cfg.rope_style = RotaryStyle::Interleaved;
    }
    cfg.norm_eps = hyper_f(f, arch, "attention.layer_norm_rms_epsilon", 1e-5);
    // Q, K and V in one tensor (Phi-3, and Phi-2 as some converters write it).
    let fused_qkv = f.tensor_info("blk.0.attn_qkv.weight").is_some();
    cfg.qkv_bias = f.tensor_info("blk.0.attn_q.bias").is_some()
        || f.tensor_info("blk.0.attn_qkv.bias").is_some();
    cfg.tied = f.tensor_info("output.weight").is_none();
    if f.get(&format!("{arch}.attention.key_length")).is_some() {
        let kl = size(f, arch, "attention.key_length")?;
        if kl != dim / n_head {
            cfg.head_dim = Some(kl);
        }
    }
    let head_dim = cfg.head_dim.unwrap_or(dim / n_head);
    // Phi-3 keeps gate and up in one tensor; Phi-2's MLP has no gate.
    let fused_up = arch == "phi3";
    check_llama_shape(f, arch, &cfg, fused_qkv, fused_up, arch != "phi2")?;
    if let Ok(rot) = hyper(f, arch, "rope.dimension_count") {
        if rot == 0 || rot > head_dim || rot % 2 != 0 {
            return Err(bad(
                f,
                format!("{rot} rotary dims do not fit heads of {head_dim}"),
            ));
        }
        cfg.rope_dims = (rot != head_dim).then_some(rot);
    }
    let rope =
        super::gguf_rope::rope_settings(f, arch, cfg.rope_dims.unwrap_or(head_dim), cfg.rope_base)?;
    cfg.rope_scale = rope.scale;
    if arch == "phi2" {
        cfg.norm = crate::nn::NormKind::Layer;
        cfg.norm_eps = hyper_f(f, arch, "attention.layer_norm_epsilon", 1e-5);
        cfg.parallel = true;
        cfg.dense_bias = true;
        cfg.mlp = crate::nn::MlpKind::Gelu;
        if cfg.tied {
            return Err(bad(f, "phi2 needs its biased `output.weight` head"));
        }
    }
    if arch == "phi3" && f.get(&format!("{arch}.attention.sliding_window")).is_some() {
        cfg.sliding = Some(SlidingWindow {
            size: size(f, arch, "attention.sliding_window")?,
            global_every: 0,
            rope_base: cfg.rope_base,
        });
    }
    if arch == "gemma3" {
        // Norm weights in Gemma GGUF files already include Gemma's `1 +`.
        cfg.mlp = crate::nn::MlpKind::GeGlu;
        cfg.qk_norm = true;
        cfg.post_norms = true;
        cfg.embed_scale = true;
        cfg.sliding = Some(SlidingWindow {
            size: size(f, arch, "attention.sliding_window")?,
            // Five local layers to one global one, and a local rotary base of 10000
            // (Gemma 3's fixed choices, which the metadata may override).
            global_every: hyper(f, arch, "attention.sliding_window_pattern").unwrap_or(6),
            rope_base: hyper_f(f, arch, "rope.freq_base_swa", 10000.0),
        });
    }
    let mut model = Llama::with_init_std(cfg, 0.0, &mut Rng::new(0), device)?.to_dtype(dtype)?;
    // Scaling belongs to the full-attention layers; Gemma's local ones keep plain tables.
    let interleaved = cfg.sliding.is_some_and(|s| s.global_every > 0);
    for b in &mut model.blocks {
        if !(interleaved && b.cfg.attn.window.is_some()) {
            b.attn.rope_adjust = rope.adjust.clone();
        }
    }
    let qkv_names: &[&str] = if fused_qkv {
        &["attn_qkv"]
    } else {
        &["attn_q", "attn_k", "attn_v"]
    };
    let part_names = |i: usize, part: &str| -> Vec<String> {
        qkv_names
            .iter()
            .map(|n| format!("blk.{i}.{n}.{part}"))
            .collect()
    };
    let names = |i: usize, ns: &[&str]| -> Vec<String> {
        ns.iter().map(|n| format!("blk.{i}.{n}")).collect()
    };
    if quant {
        quantize_embedding(f, &mut model.embed, "token_embd.weight", dtype)?;
        if let Some(head) = &mut model.head {
            quantize_linear(
                f,
                head,
                &["output.weight".into()],
                &["output.bias".into()],
                dtype,
            )?;
        }
        for (i, b) in model.blocks.iter_mut().enumerate() {
            quantize_linear(
                f,
                &mut b.attn.qkv,
                &part_names(i, "weight"),
                &part_names(i, "bias"),
                dtype,
            )?;
            quantize_linear(
                f,
                &mut b.attn.proj,
                &names(i, &["attn_output.weight"]),
                &names(i, &["attn_output.bias"]),
                dtype,
            )?;
            if let crate::nn::Mlp::Gelu { fc, proj } = &mut b.mlp {
                for (layer, theirs) in [(fc, "ffn_up"), (proj, "ffn_down")] {
                    let name = |part: &str| vec![format!("blk.{i}.{theirs}.{part}")];
                    quantize_linear(f, layer, &name("weight"), &name("bias"), dtype)?;
                }
                continue;
            }
            let Some([gate, up, down]) = b.mlp.gated_mut() else {
                return Err(bad(f, "llama-style blocks have a gated MLP"));
            };
            if fused_up {
                // Phi-3 stores gate and up as one matrix, gate rows first.
                let name = format!("blk.{i}.ffn_up.weight");
                for (layer, half) in [(gate, 0), (up, 1)] {
                    let dev = layer.weight.device();
                    if let Some(q) = qmatrix_rows(f, &name, half * cfg.hidden, cfg.hidden, dev)? {
                        *layer = Linear::quantized(q, None, dtype)?;
                    }
                }
            } else {
                quantize_linear(f, gate, &names(i, &["ffn_gate.weight"]), &[], dtype)?;
                quantize_linear(f, up, &names(i, &["ffn_up.weight"]), &[], dtype)?;
            }
            quantize_linear(f, down, &names(i, &["ffn_down.weight"]), &[], dtype)?;
        }
    }
    let params = model.params();
    let mut w = DenseWeights::new(&params);
    w.put("embed.weight".into(), || tensor(f, "token_embd.weight"))?;
    w.put("norm.weight".into(), || tensor(f, "output_norm.weight"))?;
    w.put("norm.bias".into(), || tensor(f, "output_norm.bias"))?;
    w.put("head.weight".into(), || tensor(f, "output.weight"))?;
    w.put("head.bias".into(), || tensor(f, "output.bias"))?;
    for i in 0..cfg.n_layer {
        let g = |n: &str| tensor(f, &format!("blk.{i}.{n}"));
        let p = |n: &str| format!("h.{i}.{n}");
        w.put(p("norm1.weight"), || g("attn_norm.weight"))?;
        w.put(p("norm1.bias"), || g("attn_norm.bias"))?;
        w.put(p("norm2.weight"), || g("ffn_norm.weight"))?;
        w.put(p("attn.q_norm.weight"), || g("attn_q_norm.weight"))?;
        w.put(p("attn.k_norm.weight"), || g("attn_k_norm.weight"))?;
        w.put(p("post_attn_norm.weight"), || {
            g("post_attention_norm.weight")
        })?;
        w.put(p("post_mlp_norm.weight"), || g("post_ffw_norm.weight"))?;
        // Q, K and V stacked into the fused projection (unless the file has them fused).
        for part in ["weight", "bias"] {
            w.put(p(&format!("attn.qkv.{part}")), || {
                let parts = part_names(i, part)
                    .iter()
                    .map(|n| tensor(f, n))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)
            })?;
            w.put(p(&format!("attn.proj.{part}")), || {
                g(&format!("attn_output.{part}"))
            })?;
            w.put(p(&format!("mlp.fc.{part}")), || {
                g(&format!("ffn_up.{part}"))
            })?;
            w.put(p(&format!("mlp.proj.{part}")), || {
                g(&format!("ffn_down.{part}"))
            })?;
        }
        let h = cfg.hidden;
        w.put(p("mlp.gate.weight"), || match fused_up {
            true => g("ffn_up.weight")?.narrow(0, 0, h)?.contiguous(),
            false => g("ffn_gate.weight"),
        })?;
        w.put(p("mlp.up.weight"), || match fused_up {
            true => g("ffn_up.weight")?.narrow(0, h, h)?.contiguous(),
            false => g("ffn_up.weight"),
        })?;
        w.put(p("mlp.down.weight"), || g("ffn_down.weight"))?;
    }
    load_params(f, &params, &w.map)?;
    Ok(model)
}

fn load_gpt2(f: &GgufFile, device: Device, dtype: DType, quant: bool) -> Result<Gpt> {
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
        block_size: size(f, "gpt2", "context_length")?,
        n_layer: size(f, "gpt2", "block_count")?,
        n_head: size(f, "gpt2", "attention.head_count")?,
        n_embd: size(f, "gpt2", "embedding_length")?,
        dropout: 0.0,
    };
    if let Some(out) = f.tensor_info("output.weight") {
        let embed = f
            .tensor_info("token_embd.weight")
            .ok_or_else(|| bad(f, "missing tensor `token_embd.weight`"))?;
        if f.tensor_bytes(out) != f.tensor_bytes(embed) || out.ty != embed.ty {
            return Err(bad(
                f,
                "an untied `output.weight` is not supported for gpt2",
            ));
        }
    }
    check_gpt2_shape(f, &cfg)?;
    let mut model = Gpt::new(cfg, &mut Rng::new(0), device)?.to_dtype(dtype)?;
    let layers = [
        ("norm1", "attn_norm"),
        ("attn.qkv", "attn_qkv"),
        ("attn.proj", "attn_output"),
        ("norm2", "ffn_norm"),
        ("mlp.fc", "ffn_up"),
        ("mlp.proj", "ffn_down"),
    ];
    if quant {
        quantize_embedding(f, &mut model.wte, "token_embd.weight", dtype)?;
        for (i, b) in model.blocks.iter_mut().enumerate() {
            let crate::nn::Mlp::Gelu { fc, proj } = &mut b.mlp else {
                return Err(bad(f, "gpt2 blocks have a GELU MLP"));
            };
            let linears = [
                (&mut b.attn.qkv, "attn_qkv"),
                (&mut b.attn.proj, "attn_output"),
                (fc, "ffn_up"),
                (proj, "ffn_down"),
            ];
            for (layer, theirs) in linears {
                let name = |part: &str| vec![format!("blk.{i}.{theirs}.{part}")];
                quantize_linear(f, layer, &name("weight"), &name("bias"), dtype)?;
            }
        }
    }
    let params = model.params();
    let mut w = DenseWeights::new(&params);
    let names = [
        ("wte.weight", "token_embd.weight"),
        ("wpe.weight", "position_embd.weight"),
        ("ln_f.weight", "output_norm.weight"),
        ("ln_f.bias", "output_norm.bias"),
    ];
    for (ours, theirs) in names {
        w.put(ours.to_string(), || tensor(f, theirs))?;
    }
    for i in 0..cfg.n_layer {
        for (ours, theirs) in layers {
            for part in ["weight", "bias"] {
                w.put(format!("h.{i}.{ours}.{part}"), || {
                    tensor(f, &format!("blk.{i}.{theirs}.{part}"))
                })?;
            }
        }
    }
    load_params(f, &params, &w.map)?;
    Ok(model)
}

/// The shape of tensor `name`, if the file has it.
fn shape_of<'a>(f: &'a GgufFile, name: &str) -> Option<&'a [usize]> {
    f.tensor_info(name).map(|t| t.shape.as_slice())
}

/// Requires `token_embd.weight` to be `[vocab > 0, dim]`, the width named by `dim_key`.
fn check_embedding(f: &GgufFile, dim_key: &str, dim: usize) -> Result<()> {
    match shape_of(f, "token_embd.weight") {
        Some(&[rows, cols]) if cols == dim && rows > 0 => Ok(()),
        Some(&[0, _]) => Err(bad(f, "tensor `token_embd.weight` has no rows")),
        Some(s) => Err(hyper_error(
            &f.path,
            dim_key,
            dim,
            &format!("tensor `token_embd.weight` is {s:?}"),
        )),
        None => Err(bad(f, "missing tensor `token_embd.weight`")),
    }
}

/// Every size a Llama-family file claims, checked against the others and against the
/// tensors present before the model is built (see [`super::checks`]).
fn check_llama_shape(
    f: &GgufFile,
    arch: &str,
    cfg: &LlamaConfig,
    fused_qkv: bool,
    fused_up: bool,
    gated: bool,
) -> Result<()> {
    let p = f.path.as_path();
    let k = |key: &str| format!("{arch}.{key}");
    positive(p, &k("context_length"), cfg.context)?;
    positive(p, &k("embedding_length"), cfg.dim)?;
    positive(p, &k("block_count"), cfg.n_layer)?;
    positive(p, &k("attention.head_count"), cfg.n_head)?;
    positive(p, &k("attention.head_count_kv"), cfg.n_kv_head)?;
    positive(p, &k("feed_forward_length"), cfg.hidden)?;
    if !cfg.n_head.is_multiple_of(cfg.n_kv_head) {
        return Err(hyper_error(
            p,
            &k("attention.head_count_kv"),
            cfg.n_kv_head,
            &format!("does not divide the {} query heads", cfg.n_head),
        ));
    }
    let head_dim = match cfg.head_dim {
        Some(d) => {
            positive(p, &k("attention.key_length"), d)?;
            d
        }
        None if cfg.dim.is_multiple_of(cfg.n_head) => cfg.dim / cfg.n_head,
        None => {
            return Err(hyper_error(
                p,
                &k("attention.head_count"),
                cfg.n_head,
                &format!("does not divide the width {}", cfg.dim),
            ))
        }
    };
    check_embedding(f, &k("embedding_length"), cfg.dim)?;
    if !cfg.tied {
        let want = [cfg.vocab_size, cfg.dim];
        if shape_of(f, "output.weight") != Some(&want[..]) {
            return Err(bad(
                f,
                format!(
                    "tensor `output.weight` is {:?}, not the {want:?} of the embedding",
                    shape_of(f, "output.weight").unwrap_or(&[])
                ),
            ));
        }
    }
    let present = layers_present(f.tensors.iter().map(|t| t.name.as_str()), "blk.");
    expect_layers(p, &k("block_count"), cfg.n_layer, present)?;
    let q_rows = mul(p, &k("attention.head_count"), cfg.n_head, head_dim)?;
    let kv_rows = mul(p, &k("attention.head_count_kv"), cfg.n_kv_head, head_dim)?;
    let (heads, kv_heads, ffn) = (
        k("attention.head_count"),
        k("attention.head_count_kv"),
        k("feed_forward_length"),
    );
    for i in 0..cfg.n_layer {
        let t = |n: &str| format!("blk.{i}.{n}.weight");
        let mut want: Vec<(&str, usize, String, Vec<usize>)> = Vec::new();
        if fused_qkv {
            want.push((
                &heads,
                cfg.n_head,
                t("attn_qkv"),
                vec![q_rows + 2 * kv_rows, cfg.dim],
            ));
        } else {
            want.push((&heads, cfg.n_head, t("attn_q"), vec![q_rows, cfg.dim]));
            want.push((
                &kv_heads,
                cfg.n_kv_head,
                t("attn_k"),
                vec![kv_rows, cfg.dim],
            ));
            want.push((
                &kv_heads,
                cfg.n_kv_head,
                t("attn_v"),
                vec![kv_rows, cfg.dim],
            ));
        }
        want.push((&heads, cfg.n_head, t("attn_output"), vec![cfg.dim, q_rows]));
        let up_rows = if fused_up { 2 * cfg.hidden } else { cfg.hidden };
        want.push((&ffn, cfg.hidden, t("ffn_up"), vec![up_rows, cfg.dim]));
        if gated && !fused_up {
            want.push((&ffn, cfg.hidden, t("ffn_gate"), vec![cfg.hidden, cfg.dim]));
        }
        want.push((&ffn, cfg.hidden, t("ffn_down"), vec![cfg.dim, cfg.hidden]));
        for (key, value, name, shape) in &want {
            expect_shape(p, key, *value, name, shape_of(f, name), shape)?;
        }
    }
    Ok(())
}

/// Every size a GPT-2 file claims, checked against the tensors present.
fn check_gpt2_shape(f: &GgufFile, cfg: &GptConfig) -> Result<()> {
    let p = f.path.as_path();
    positive(p, "gpt2.context_length", cfg.block_size)?;
    positive(p, "gpt2.embedding_length", cfg.n_embd)?;
    positive(p, "gpt2.block_count", cfg.n_layer)?;
    positive(p, "gpt2.attention.head_count", cfg.n_head)?;
    if !cfg.n_embd.is_multiple_of(cfg.n_head) {
        return Err(hyper_error(
            p,
            "gpt2.attention.head_count",
            cfg.n_head,
            &format!("does not divide the width {}", cfg.n_embd),
        ));
    }
    check_embedding(f, "gpt2.embedding_length", cfg.n_embd)?;
    let name = "position_embd.weight";
    let want = [cfg.block_size, cfg.n_embd];
    expect_shape(
        p,
        "gpt2.context_length",
        cfg.block_size,
        name,
        shape_of(f, name),
        &want,
    )?;
    let present = layers_present(f.tensors.iter().map(|t| t.name.as_str()), "blk.");
    expect_layers(p, "gpt2.block_count", cfg.n_layer, present)?;
    let c = cfg.n_embd;
    for i in 0..cfg.n_layer {
        let key = "gpt2.embedding_length";
        for (n, want) in [
            ("attn_qkv", [3 * c, c]),
            ("attn_output", [c, c]),
            ("ffn_up", [4 * c, c]),
            ("ffn_down", [c, 4 * c]),
        ] {
            let name = format!("blk.{i}.{n}.weight");
            expect_shape(p, key, c, &name, shape_of(f, &name), &want)?;
        }
    }
    Ok(())
}
