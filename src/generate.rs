//! Sampling the next token and autoregressive generation.

use crate::models::Gpt;
use crate::{DType, Device, Error, Result, Rng, Tensor};

/// How the next token is chosen from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (nucleus sampling).
    pub top_p: Option<f64>,
}

impl Sampling {
    /// Checks the ranges of the settings.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid(
                "sampling",
                format!("temperature {} must be >= 0", self.temperature),
            ));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("sampling", "top-k must be at least 1"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid(
                    "sampling",
                    format!("top-p {p} must be in (0, 1]"),
                ));
            }
        }
        Ok(())
    }
}

/// Picks a token id from one row of logits.
pub fn sample_next(logits: &[f32], s: &Sampling, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if s.temperature == 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = s.top_k {
        order.truncate(k.max(1));
    }
    let top = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - top) / s.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(p) = s.top_p {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|&q| {
                acc += q;
                acc >= p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut r = rng.uniform() * total;
    for (i, &p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return order[i] as u32;
        }
    }
    order[probs.len() - 1] as u32
}

/// Continues `prompt` by `max_tokens` tokens, calling `on_token` with each as it comes.
/// The context is cropped to the model's block size.
pub fn generate(
    model: &Gpt,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    rng: &mut Rng,
    device: Device,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    sampling.validate()?;
    if prompt.is_empty() {
        return Err(Error::invalid(
            "generate",
            "the prompt must contain at least one token",
        ));
    }
    let _guard = crate::no_grad();
    let mut ids = prompt.to_vec();
    for _ in 0..max_tokens {
        let start = ids.len().saturating_sub(model.cfg.block_size);
        let window: Vec<i64> = ids[start..].iter().map(|&t| t as i64).collect();
        let t = window.len();
        let x = Tensor::from_vec(window, &[1, t], device)?;
        let logits = model
            .forward(&x, None)?
            .narrow(1, t - 1, 1)?
            .to_dtype(DType::F32)?;
        let next = sample_next(&logits.to_vec::<f32>()?, sampling, rng);
        ids.push(next);
        on_token(next)?;
    }
    Ok(ids[prompt.len()..].to_vec())
}
