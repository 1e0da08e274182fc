//! The GPT of a checkpoint written by `smith train`: its `model.safetensors` read into
//! the model its `config.json` describes.

use super::{Gpt, GptConfig};
use crate::io::load_safetensors;
use crate::{Device, Error, Result, Rng};
use std::path::Path;

/// The GPT of the checkpoint in `dir` (one set of a run's folder) with `config`, the
/// model part of its `config.json`: the config checked against the tensors of
/// `model.safetensors` before anything of the config's size is allocated.
pub fn checkpoint_gpt(dir: &Path, config: &GptConfig, device: Device) -> Result<Gpt> {
    let weights = load_safetensors(&dir.join("model.safetensors"))?;
    crate::models::checks::check_gpt_shape(
        &dir.join("config.json"),
        config,
        |k| match k {
            "n_positions" => "model.block_size".to_string(),
            other => format!("model.{other}"),
        },
        |n| weights.get(n).map(|t| t.shape().to_vec()),
        weights.keys().map(String::as_str),
    )?;
    let model = Gpt::new(*config, &mut Rng::new(0), device)?;
    model
        .load_weights(&weights)
        .map_err(|e| Error::Checkpoint {
            path: dir.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok(model)
}
