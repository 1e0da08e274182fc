//! `smith info`: what a model file holds, without loading its weights.

use smith::io::gguf::GgufFile;
use smith::io::load_safetensors;
use smith::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// A description of a GGUF file, a safetensors file, or a model folder: architecture,
/// parameter count, tensor types with counts, context length, heads, tokenizer kind; with
/// `all`, every metadata entry too.
pub fn describe(path: &Path, all: bool) -> Result<String> {
    let is_gguf = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut magic = [0u8; 4];
            std::io::Read::read_exact(&mut f, &mut magic).map(|_| magic == *b"GGUF")
        })
        .unwrap_or(false);
    if is_gguf {
        return describe_gguf(&GgufFile::open(path)?, all);
    }
    if path.is_file() && path.extension().is_some_and(|e| e == "pth" || e == "pt") {
        return describe_pth(path, all);
    }
    // A run folder of `smith train` keeps its current checkpoint in a subfolder.
    let resolved = if path.is_dir() {
        smith::io::checkpoint::current_checkpoint(path)?
    } else {
        path.to_path_buf()
    };
    let path = resolved.as_path();
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    if !file.exists() {
        return Err(Error::invalid(
            "info",
            format!(
                "{}: not a GGUF file, a safetensors file or a model folder",
                path.display()
            ),
        ));
    }
    let tensors = load_safetensors(&file)?;
    let mut out = String::new();
    let _ = writeln!(out, "file: {}", file.display());
    let config = path
        .is_dir()
        .then(|| path.join("config.json"))
        .filter(|c| c.exists());
    if let Some(c) = &config {
        let text = std::fs::read_to_string(c).map_err(|e| Error::io(c, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let get = |k: &str| {
            v.get(k)
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(out, "architecture: {}", get("model_type"));
        let _ = writeln!(out, "context length: {}", get("n_positions"));
        let _ = writeln!(out, "heads: {}", get("n_head"));
    }
    let params: usize = tensors.values().map(|t| t.numel()).sum();
    let _ = writeln!(out, "parameters: {params} ({:.1}M)", params as f64 / 1e6);
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for t in tensors.values() {
        *types.entry(t.dtype().to_string()).or_default() += 1;
    }
    let _ = writeln!(out, "tensors: {} ({})", tensors.len(), counts(&types));
    let tok = path.is_dir() && path.join("tokenizer.json").exists();
    let _ = writeln!(
        out,
        "tokenizer: {}",
        if tok { "tokenizer.json" } else { "none" }
    );
    Ok(out)
}

/// A `.pth` file: its tensors by dtype, the plain values saved beside them, and the
/// architecture where the state dict is a ResNet's.
fn describe_pth(path: &Path, all: bool) -> Result<String> {
    let pth = smith::io::load_pth(path)?;
    let mut out = String::new();
    let _ = writeln!(out, "file: {} (PyTorch, torch.save)", path.display());
    let state = pth.state_dict();
    if let Ok(cfg) = smith::models::ResNetConfig::infer(&state) {
        let name = cfg.torchvision_name().unwrap_or("ResNet");
        let _ = writeln!(
            out,
            "architecture: {name} ({:?} blocks {:?}, widths {:?}, {:?} stem, {} classes)",
            cfg.block, cfg.layers, cfg.widths, cfg.stem, cfg.num_classes
        );
    }
    let params: usize = pth.tensors.iter().map(|(_, t)| t.numel()).sum();
    let _ = writeln!(out, "parameters: {params} ({:.1}M)", params as f64 / 1e6);
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t) in &pth.tensors {
        *types.entry(t.dtype().to_string()).or_default() += 1;
    }
    let _ = writeln!(out, "tensors: {} ({})", pth.tensors.len(), counts(&types));
    let shown = if all { pth.values.len() } else { 20 };
    for (k, v) in pth.values.iter().take(shown) {
        let _ = writeln!(out, "{k}: {v}");
    }
    if pth.values.len() > shown {
        let _ = writeln!(out, "... {} more values (--all)", pth.values.len() - shown);
    }
    if all {
        for (k, t) in &pth.tensors {
            let _ = writeln!(out, "{k}: {} {:?}", t.dtype(), t.shape());
        }
    }
    Ok(out)
}

fn counts(types: &BTreeMap<String, usize>) -> String {
    types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_gguf(f: &GgufFile, all: bool) -> Result<String> {
    let mut out = String::new();
    let arch = f.architecture().unwrap_or("-").to_string();
    let key = |k: &str| f.get(&format!("{arch}.{k}")).map(|v| v.summary());
    let _ = writeln!(out, "file: {} (GGUF v{})", f.path.display(), f.version);
    let _ = writeln!(out, "architecture: {arch}");
    if let Some(name) = f.get("general.name") {
        let _ = writeln!(out, "name: {}", name.summary());
    }
    let params: usize = f.tensors.iter().map(|t| t.numel()).sum();
    let _ = writeln!(out, "parameters: {params} ({:.1}M)", params as f64 / 1e6);
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for t in &f.tensors {
        *types.entry(t.ty.name().to_string()).or_default() += 1;
    }
    let bytes: usize = f.tensors.iter().map(|t| t.len).sum();
    let _ = writeln!(
        out,
        "tensors: {} ({}), {:.1} MiB of weights",
        f.tensors.len(),
        counts(&types),
        bytes as f64 / (1 << 20) as f64
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "context length: {}", or_dash(key("context_length")));
    let _ = writeln!(
        out,
        "heads: {} (key/value heads: {})",
        or_dash(key("attention.head_count")),
        or_dash(key("attention.head_count_kv"))
    );
    let tok = f.get("tokenizer.ggml.model").map(|v| v.summary());
    let _ = writeln!(out, "tokenizer: {}", or_dash(tok));
    if all {
        let _ = writeln!(out, "metadata:");
        for (k, v) in &f.metadata {
            let _ = writeln!(out, "  {k} = {}", v.summary());
        }
        let _ = writeln!(out, "tensors:");
        for t in &f.tensors {
            let _ = writeln!(out, "  {} {:?} {}", t.name, t.shape, t.ty.name());
        }
    }
    Ok(out)
}
