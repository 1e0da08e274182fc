//! The tokenizers GGUF files embed, rebuilt as `tokenizers` tokenizers: `gpt2`-style
//! byte-level BPE (vocabulary, merges, control tokens) with the pre-tokenizer the file
//! names in `tokenizer.ggml.pre`.

use crate::io::gguf::{GgufFile, Value};
use crate::text::tokenizer::TextTokenizer;
use crate::{Error, Result};
use serde_json::json;

/// GPT-2's split, built into the byte-level pre-tokenizer.
const GPT2: &str = "gpt2";
/// StarCoder's (and SmolLM's): every digit apart, then GPT-2's split.
const DIGITS_GPT2: &str = "digits+gpt2";
/// Qwen2's split: single digits.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split: digits in runs of up to three.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn bad(f: &GgufFile, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: f.path.clone(),
        msg: msg.into(),
    }
}

fn strings(f: &GgufFile, key: &str) -> Result<Vec<String>> {
    match f.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(f, format!("`{key}` holds a non-string")))
            })
            .collect(),
        _ => Err(bad(
            f,
            format!("metadata `{key}` is missing or not an array"),
        )),
    }
}

impl TextTokenizer {
    /// The tokenizer a GGUF file embeds; an unsupported kind or pre-tokenizer is an error
    /// that names it.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let kind = f
            .get("tokenizer.ggml.model")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(f, "metadata `tokenizer.ggml.model` is missing"))?;
        if kind == "llama" {
            return spm(f);
        }
        if kind != "gpt2" {
            return Err(bad(
                f,
                format!("tokenizer kind `{kind}` is not supported yet (gpt2 and llama are)"),
            ));
        }
        let pre = f
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        // (split, NFC normalisation, whole words found in the vocabulary skip the merges)
        let (split, nfc, ignore_merges) = match pre {
            "default" | "gpt-2" | "gpt2" => (GPT2, false, false),
            "starcoder" | "smollm" => (DIGITS_GPT2, false, false),
            "qwen2" => (QWEN2, true, false),
            "llama-bpe" | "llama3" => (LLAMA3, false, true),
            other => {
                return Err(bad(
                    f,
                    format!(
                    "pre-tokenizer `{other}` is not supported yet (gpt-2, qwen2, llama-bpe are)"
                ),
                ))
            }
        };
        let tokens = strings(f, "tokenizer.ggml.tokens")?;
        let merges = strings(f, "tokenizer.ggml.merges")?;
        let types: Vec<u64> = match f.get("tokenizer.ggml.token_type") {
            Some(Value::Array(v)) => v.iter().map(|x| x.as_u64().unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        // Control tokens (type 3) are special: matched whole, skipped when decoding.
        let added: Vec<serde_json::Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, &ty))| ty == 3)
            .map(|(i, (t, _))| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        // BOS and EOS as the file says, with llama.cpp's defaults where it is silent (BOS
        // for Llama 3's pre-tokenizer, none for the others).
        let flag = |key: &str, default: bool| match f.get(key) {
            Some(Value::Bool(b)) => *b,
            _ => default,
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match f.get(key).map(|v| v.as_u64()) {
                None => Ok(None),
                Some(Some(i)) if (i as usize) < tokens.len() => Ok(Some(i as u32)),
                Some(v) => Err(bad(
                    f,
                    format!(
                        "`{key}` = {v:?} is not a token of the {} in the vocabulary",
                        tokens.len()
                    ),
                )),
            }
        };
        let add_bos = flag("tokenizer.ggml.add_bos_token", split == LLAMA3);
        let add_eos = flag("tokenizer.ggml.add_eos_token", false);
        let bos = id("tokenizer.ggml.bos_token_id")?.filter(|_| add_bos);
        let eos = id("tokenizer.ggml.eos_token_id")?.filter(|_| add_eos);
        let post_processor = post_processor(&tokens, bos, eos);
        let byte_level = |regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                   "use_regex": regex})
        };
        let pre_tokenizer = if split == GPT2 {
            byte_level(true)
        } else if split == DIGITS_GPT2 {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true)
            ]})
        } else {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated",
                 "invert": false},
                byte_level(false)
            ]})
        };
        let spec = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": if nfc { json!({"type": "NFC"}) } else { json!(null) },
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": byte_level(true),
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                      "vocab": vocab, "merges": merges}
        });
        let tok: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| bad(f, format!("cannot build its tokenizer: {e}")))?;
        Ok(TextTokenizer::Hf(Box::new(tok)))
    }
}

/// A template that puts `bos` before and `eos` after every encoded text (`null` when
/// neither is added).
fn post_processor(tokens: &[String], bos: Option<u32>, eos: Option<u32>) -> serde_json::Value {
    if bos.is_none() && eos.is_none() {
        return json!(null);
    }
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    let special = |id: u32| {
        let t = tokens[id as usize].clone();
        (json!({"SpecialToken": {"id": t, "type_id": 0}}), t, id)
    };
    if let Some(b) = bos {
        let (piece, t, id) = special(b);
        single.push(piece.clone());
        pair.push(piece);
        specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    if let Some(e) = eos {
        let (piece, t, id) = special(e);
        single.push(piece.clone());
        pair.push(piece);
        specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair,
           "special_tokens": specials})
}

/// A Llama-style SentencePiece tokenizer from `tokenizer.ggml.{tokens,scores,token_type}`.
fn spm(f: &GgufFile) -> Result<TextTokenizer> {
    let pieces = strings(f, "tokenizer.ggml.tokens")?;
    let scores: Vec<f32> = match f.get("tokenizer.ggml.scores") {
        Some(Value::Array(v)) => v.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect(),
        _ => return Err(bad(f, "metadata `tokenizer.ggml.scores` is missing")),
    };
    let types: Vec<u64> = match f.get("tokenizer.ggml.token_type") {
        Some(Value::Array(v)) => v.iter().map(|x| x.as_u64().unwrap_or(1)).collect(),
        _ => vec![1; pieces.len()],
    };
    let flag = |key: &str, default: bool| match f.get(key) {
        Some(Value::Bool(b)) => *b,
        _ => default,
    };
    let bos = f
        .get("tokenizer.ggml.bos_token_id")
        .and_then(|v| v.as_u64())
        .map(|v| v as u32);
    let t = crate::text::sentencepiece::SpmTokenizer::new(
        pieces,
        scores,
        types,
        bos,
        flag("tokenizer.ggml.add_bos_token", true),
        flag("tokenizer.ggml.add_space_prefix", true),
    )
    .map_err(|e| bad(f, e.to_string()))?;
    Ok(TextTokenizer::Spm(Box::new(t)))
}
