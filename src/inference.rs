//! Loading a model to run (a smith checkpoint or a Hugging Face GPT-2 folder) and scoring
//! text with it.

use crate::models::gguf_models::load_gguf_model;
use crate::models::{is_hf_gpt2, load_hf_gpt2, LanguageModel};
use crate::tokenizer::TextTokenizer;
use crate::train::load_for_inference;
use crate::{DType, Device, Error, Result, Tensor};
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
            crate::models::gguf_models::load_gguf_model_dense(path, device, dtype)?
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
pub fn chat_template(path: &Path) -> Result<Option<crate::chat::ChatTemplate>> {
    if !path.is_file() {
        return Ok(None);
    }
    let f = crate::io::gguf::GgufFile::open(path)?;
    let template = f.get("tokenizer.chat_template").and_then(|v| v.as_str());
    Ok(crate::chat::ChatTemplate::detect(
        template,
        f.architecture(),
    ))
}

/// Perplexity of `ids` under `model`, evaluated in windows of up to `ctx` tokens that
/// advance by `stride` (each token is scored once, with up to `ctx - 1` tokens of context;
/// the first token is never scored). Returns (perplexity, tokens scored).
pub fn perplexity(
    model: &dyn LanguageModel,
    ids: &[u32],
    ctx: usize,
    stride: usize,
    device: Device,
) -> Result<(f64, usize)> {
    let ctx = ctx.min(model.context());
    if ctx < 2 || stride == 0 || stride > ctx {
        return Err(Error::invalid(
            "perplexity",
            format!("need 2 <= ctx ({ctx}) and 1 <= stride <= ctx (stride {stride})"),
        ));
    }
    if ids.len() < 2 {
        return Err(Error::invalid(
            "perplexity",
            "the text needs at least two tokens",
        ));
    }
    let _guard = crate::no_grad();
    let (mut nll, mut count) = (0f64, 0usize);
    let mut scored_to = 1; // tokens before this index are scored (or never are)
    let mut begin = 0;
    loop {
        let end = (begin + ctx).min(ids.len());
        let input: Vec<i64> = ids[begin..end - 1].iter().map(|&t| t as i64).collect();
        // Target j predicts ids[begin + j + 1]; only tokens not scored yet count.
        let targets: Vec<i64> = (begin + 1..end)
            .map(|i| if i >= scored_to { ids[i] as i64 } else { -1 })
            .collect();
        let n_new = targets.iter().filter(|&&t| t >= 0).count();
        if n_new > 0 {
            let t = input.len();
            let x = Tensor::from_vec(input, &[1, t], device)?;
            let y = Tensor::from_vec(targets, &[1, t], device)?;
            let mean = model.forward(&x)?.cross_entropy(&y, -1)?.to_scalar()?;
            nll += mean * n_new as f64;
            count += n_new;
        }
        scored_to = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    Ok(((nll / count as f64).exp(), count))
}
