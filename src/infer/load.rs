//! Loading a model to run: a smith checkpoint, a Hugging Face GPT-2 folder or a GGUF
//! file, with its tokenizer.

use crate::io::checkpoint::current_checkpoint;
use crate::models::from_gguf::load_gguf_model;
use crate::models::{checkpoint_gpt, is_hf_gpt2, load_hf_gpt2, Gpt, GptConfig, LanguageModel};
use crate::text::{CharTokenizer, TextTokenizer};
use crate::{DType, Device, Error, Result};
use std::path::Path;

/// A model and its tokenizer, from `path`: a folder written by `smith train`, a Hugging
/// Face GPT-2 folder (`config.json`, `model.safetensors`, `tokenizer.json`), or a GGUF file
/// (quantized matrices kept quantized, everything else and the activations in f32 on the
/// CPU and bf16 on a GPU; its embedded tokenizer).
pub fn load_model(path: &Path, device: Device) -> Result<(Box<dyn LanguageModel>, TextTokenizer)> {
    load_model_as(path, device, None)
}

/// [`load_model`] computing in `dtype` when given (GGUF files; other formats load in f32).
pub fn load_model_as(
    path: &Path,
    device: Device,
    dtype: Option<DType>,
) -> Result<(Box<dyn LanguageModel>, TextTokenizer)> {
    load_model_with(path, device, dtype, false)
}

/// [`load_model_as`], with `dense` dequantizing every GGUF matrix at load time instead of
/// keeping it quantized (more memory; faster for long prompts).
pub fn load_model_with(
    path: &Path,
    device: Device,
    dtype: Option<DType>,
    dense: bool,
) -> Result<(Box<dyn LanguageModel>, TextTokenizer)> {
    if path.is_file() {
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .map(|_| &magic == b"GGUF")
            .unwrap_or(false);
        if !is_gguf {
            return Err(Error::invalid(
                "load model",
                format!(
                    "{}: expected a GGUF file or a model folder (a smith checkpoint or a Hugging Face GPT-2 folder)",
                    path.display()
                ),
            ));
        }
        let dtype = dtype.unwrap_or(if device == Device::Cpu {
            DType::F32
        } else {
            DType::BF16
        });
        let (model, file) = if dense {
            crate::models::from_gguf::load_gguf_model_dense(path, device, dtype)?
        } else {
            load_gguf_model(path, device, dtype)?
        };
        let tok = TextTokenizer::from_gguf(&file)?;
        return Ok((Box::new(model), tok));
    }
    if is_hf_gpt2(path) {
        let model = load_hf_gpt2(path, device)?;
        let tok_path = path.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(Error::invalid(
                "load model",
                format!("{} has no tokenizer.json", path.display()),
            ));
        }
        return Ok((Box::new(model), TextTokenizer::from_file(&tok_path)?));
    }
    let (model, chars) = load_for_inference(path, device)?;
    Ok((Box::new(model), TextTokenizer::Chars(chars)))
}

/// The chat layout of the model at `path`: from a GGUF file's `tokenizer.chat_template`,
/// or its architecture when it has none; `None` for other formats or unknown templates.
pub fn chat_template(path: &Path) -> Result<Option<crate::text::chat::ChatTemplate>> {
    if !path.is_file() {
        return Ok(None);
    }
    let f = crate::io::gguf::GgufFile::open(path)?;
    let template = f.get("tokenizer.chat_template").and_then(|v| v.as_str());
    Ok(crate::text::chat::ChatTemplate::detect(
        template,
        f.architecture(),
    ))
}

/// What inference reads of a checkpoint's `config.json`: the model, the characters of
/// its tokenizer and whether the run trained on token ids instead.
#[derive(serde::Deserialize)]
struct SavedRun {
    model: GptConfig,
    vocab: String,
    train: SavedTraining,
}

#[derive(serde::Deserialize)]
struct SavedTraining {
    #[serde(default)]
    vocab_size: Option<usize>,
}

/// Loads a checkpoint's model and tokenizer for generation.
pub fn load_for_inference(dir: &Path, device: Device) -> Result<(Gpt, CharTokenizer)> {
    let dir = &current_checkpoint(dir)?;
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let config: SavedRun = crate::io::parse_json(&bytes).map_err(|msg| Error::Checkpoint {
        path: path.clone(),
        msg,
    })?;
    if config.train.vocab_size.is_some() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            msg: "this run trained on token ids and has no character tokenizer; `smith train --resume DIR --steps N --export-hf OUT --tokenizer tokenizer.json` writes a GPT-2 folder to generate from".into(),
        });
    }
    let model = checkpoint_gpt(dir, &config.model, device)?;
    Ok((
        model,
        CharTokenizer::from_chars(config.vocab.chars().collect()),
    ))
}
