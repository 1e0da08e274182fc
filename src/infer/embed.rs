//! CLIP embeddings of images and texts from a model folder, and zero-shot classification:
//! the image × text similarity table with softmax probabilities over the texts.

use crate::models::clip::{l2_normalize, Clip};
use crate::text::ClipTokenizer;
use crate::vision::{ClipPreprocess, RgbImage};
use crate::{DType, Device, Result, Tensor};
use std::path::Path;

/// A CLIP model with its tokenizer (where the folder has one) and image preprocessing.
pub struct ClipEmbedder {
    pub model: Clip,
    pub tokenizer: Option<ClipTokenizer>,
    pub preprocess: ClipPreprocess,
}

/// Embeddings of a batch of texts.
pub struct TextEmbeddings {
    /// `[N, projection_dim]` f32, L2-normalised.
    pub embeds: Tensor,
    /// Which texts were cut to the model's context.
    pub truncated: Vec<usize>,
}

impl ClipEmbedder {
    /// Reads a CLIP folder (`config.json`, `model.safetensors`, and for text
    /// `tokenizer.json`; `preprocessor_config.json` where present).
    pub fn load(dir: &Path, device: Device, dtype: DType) -> Result<Self> {
        let model = Clip::load(dir, device, dtype)?;
        let t = &model.cfg.text_config;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.exists() {
            Some(ClipTokenizer::from_file(
                &tok_path,
                t.max_position_embeddings,
                t.pad_token_id,
            )?)
        } else {
            None
        };
        let preprocess = ClipPreprocess::for_model(dir, model.cfg.vision_config.image_size)?;
        Ok(ClipEmbedder {
            model,
            tokenizer,
            preprocess,
        })
    }

    /// L2-normalised embeddings `[N, projection_dim]` (f32) of `images`, run as one batch.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor> {
        let pixels = self.preprocess.batch(images, self.model.device())?;
        l2_normalize(&self.model.image_features(&pixels)?)
    }

    /// L2-normalised embeddings of `texts`, tokenized and padded into one batch.
    pub fn embed_texts(&self, texts: &[String]) -> Result<TextEmbeddings> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            crate::Error::invalid(
                "clip",
                "this model folder has no tokenizer.json, so it cannot embed text",
            )
        })?;
        let batch = tok.batch(texts)?;
        Ok(TextEmbeddings {
            embeds: l2_normalize(&self.model.text_features(&batch.ids)?)?,
            truncated: batch.truncated,
        })
    }

    /// `[N_images, N_texts]` probabilities: the softmax over texts of the scaled cosine
    /// similarities (CLIP's zero-shot classification).
    pub fn probabilities(&self, images: &Tensor, texts: &Tensor) -> Result<Tensor> {
        self.model.logits(images, texts)?.softmax(1)
    }
}

/// Writes embeddings to `path`: `.safetensors` (tensors `image_embeds` and `text_embeds`,
/// f32) or `.json` (`{"images": [...], "image_embeds": [[...]], "texts": [...],
/// "text_embeds": [[...]]}`), atomically.
pub fn write_embeddings(
    path: &Path,
    images: &[std::path::PathBuf],
    image_embeds: Option<&Tensor>,
    texts: &[String],
    text_embeds: Option<&Tensor>,
) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("safetensors") => {
            let mut tensors = Vec::new();
            if let Some(t) = image_embeds {
                tensors.push(("image_embeds".to_string(), t.to_device(Device::Cpu)?));
            }
            if let Some(t) = text_embeds {
                tensors.push(("text_embeds".to_string(), t.to_device(Device::Cpu)?));
            }
            crate::io::save_safetensors(path, &tensors)
        }
        Some("json") => {
            let rows = |t: Option<&Tensor>| -> Result<Vec<Vec<f32>>> {
                let Some(t) = t else {
                    return Ok(Vec::new());
                };
                let d = t.shape()[1];
                Ok(t.to_vec_f32()?.chunks(d).map(<[f32]>::to_vec).collect())
            };
            let doc = serde_json::json!({
                "images": images.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "image_embeds": rows(image_embeds)?,
                "texts": texts,
                "text_embeds": rows(text_embeds)?,
            });
            let bytes = serde_json::to_vec(&doc)
                .map_err(|e| crate::Error::invalid("embed", e.to_string()))?;
            crate::io::write_atomic(path, &bytes)
        }
        _ => Err(crate::Error::invalid(
            "embed",
            format!(
                "cannot tell the format of {}: name it .safetensors or .json",
                path.display()
            ),
        )),
    }
}
