//! Sampling the next token and autoregressive generation.

use crate::models::LanguageModel;
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
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f64>,
    /// Divide positive logits (multiply negative ones) of tokens already in the context by
    /// this factor (1 = off), as in the CTRL paper and Hugging Face's `generate`.
    pub repetition_penalty: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
        }
    }
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
        for (name, v) in [("top-p", self.top_p), ("min-p", self.min_p)] {
            if let Some(p) = v {
                if !(p > 0.0 && p <= 1.0) {
                    return Err(Error::invalid(
                        "sampling",
                        format!("{name} {p} must be in (0, 1]"),
                    ));
                }
            }
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::invalid(
                "sampling",
                format!(
                    "repetition penalty {} must be positive",
                    self.repetition_penalty
                ),
            ));
        }
        Ok(())
    }
}

/// Applies the repetition penalty for the tokens of `context` to `logits`, in place.
pub fn penalize_repeats(logits: &mut [f32], context: &[u32], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for &t in context {
        if let Some(l) = logits.get_mut(t as usize) {
            if seen.insert(t) {
                *l = if *l > 0.0 {
                    (*l as f64 / penalty) as f32
                } else {
                    (*l as f64 * penalty) as f32
                };
            }
        }
    }
}

/// Picks a token id from one row of logits (after any repetition penalty).
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
    if let Some(m) = s.min_p {
        // probs[0] is the most likely token's (unnormalised) probability, exp(0) = 1.
        let keep = probs.iter().take_while(|&&q| q >= m).count().max(1);
        probs.truncate(keep);
        order.truncate(keep);
    }
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

/// Greedy decoding steps queued on the device before their tokens are read back.
const RUN_AHEAD: usize = 16;

/// Continues each prompt of a batch (all of one length) with a key/value cache: the
/// prompts are prefilled in one pass, then one position at a time. `on_token(row, id)` is
/// called with each new token as it comes and returns whether that row goes on; a row
/// stops at one of `stop_ids` too (which is kept in its output). When the context fills
/// up, the cache is rebuilt from the latest half of the context.
#[allow(clippy::too_many_arguments)]
pub fn generate_batch(
    model: &dyn LanguageModel,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    sampling: &Sampling,
    stop_ids: &[u32],
    rng: &mut Rng,
    device: Device,
    mut on_token: impl FnMut(usize, u32) -> Result<bool>,
) -> Result<Vec<Vec<u32>>> {
    sampling.validate()?;
    let Some(first) = prompts.first() else {
        return Ok(Vec::new());
    };
    let len = first.len();
    if len == 0 || prompts.iter().any(|p| p.len() != len) {
        return Err(Error::invalid(
            "generate",
            "every prompt of a batch needs the same, non-zero number of tokens",
        ));
    }
    let vocab = model.vocab_size();
    if let Some(bad) = prompts.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::invalid(
            "generate",
            format!("token id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let _guard = crate::no_grad();
    // No kernel writes a weight while generating: the decoding kernels may overlap.
    let _early = crate::backend::weights_frozen();
    // The cache holds what this call can reach, not the context a file claims.
    let reach = len.saturating_add(max_tokens).max(1);
    let (batch, block) = (prompts.len(), model.context().min(reach));
    let mut context: Vec<Vec<u32>> = prompts.to_vec();
    let mut out = vec![Vec::new(); batch];
    let mut live = vec![true; batch];
    let mut caches = model.new_caches(batch, block)?;
    // Tokens to feed next: the prompt (cropped to the context) at first.
    let mut feed: Vec<Vec<u32>> = context
        .iter()
        .map(|c| c[c.len().saturating_sub(block)..].to_vec())
        .collect();
    let greedy = sampling.temperature == 0.0 && sampling.repetition_penalty == 1.0;
    let mut produced = 0;
    while produced < max_tokens && live.iter().any(|&l| l) {
        if caches[0].len() + feed[0].len() > block {
            // Full: start again from the latest half of each context.
            caches.iter_mut().for_each(|c| c.clear());
            let keep = (block / 2).max(1);
            feed = context
                .iter()
                .map(|c| c[c.len().saturating_sub(keep)..].to_vec())
                .collect();
        }
        let t = feed[0].len();
        let ids: Vec<i64> = feed.iter().flatten().map(|&x| x as i64).collect();
        let mut x = Tensor::from_vec(ids, &[batch, t], device)?;
        // Greedy decoding runs ahead: each step's picks, still on the device, are the next
        // step's input, and the picks of up to RUN_AHEAD steps cross to the host in one
        // read, so the host queues kernels while the device computes instead of waiting
        // for every token. Steps past a stop are discarded.
        let room = block - caches[0].len() - t + 1;
        let steps = if greedy {
            (max_tokens - produced).min(RUN_AHEAD).min(room)
        } else {
            1
        };
        let mut picks = Vec::with_capacity(steps);
        let mut logits = Vec::new();
        for _ in 0..steps {
            let out = model.forward_cached(&x, &mut caches)?;
            if greedy {
                // Greedy picks are made on the device: B ids cross to the host, not B x
                // vocab logits.
                x = out.argmax(1, true)?;
                picks.push(x.clone());
            } else {
                logits = out.to_dtype(DType::F32)?.to_vec::<f32>()?;
            }
        }
        // [batch, steps] picks, row-major.
        let picks = if greedy {
            Tensor::cat(&picks, 1)?.to_vec::<i64>()?
        } else {
            Vec::new()
        };
        for step in 0..steps {
            for row in 0..batch {
                let next = if live[row] {
                    let next = if greedy {
                        picks[row * steps + step] as u32
                    } else {
                        let mut l = logits[row * vocab..(row + 1) * vocab].to_vec();
                        penalize_repeats(&mut l, &context[row], sampling.repetition_penalty);
                        sample_next(&l, sampling, rng)
                    };
                    out[row].push(next);
                    live[row] = on_token(row, next)? && !stop_ids.contains(&next);
                    next
                } else {
                    // A finished row keeps a place in the batch until every row is done.
                    *context[row].last().unwrap_or(&0)
                };
                context[row].push(next);
                feed[row] = vec![next];
            }
            produced += 1;
            if !live.iter().any(|&l| l) {
                break;
            }
        }
    }
    Ok(out)
}

/// Continues one prompt by up to `max_tokens` tokens (see [`generate_batch`]), calling
/// `on_token` with each as it comes.
pub fn generate(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    rng: &mut Rng,
    device: Device,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::invalid(
            "generate",
            "the prompt must contain at least one token",
        ));
    }
    let out = generate_batch(
        model,
        &[prompt.to_vec()],
        max_tokens,
        sampling,
        &[],
        rng,
        device,
        |_, t| on_token(t),
    )?;
    Ok(out.into_iter().next().unwrap_or_default())
}

/// The same continuation computed without a cache (the whole context each step): the
/// reference the cached path is tested against.
pub fn generate_uncached(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_tokens: usize,
    device: Device,
) -> Result<Vec<u32>> {
    let _guard = crate::no_grad();
    let mut ids = prompt.to_vec();
    for _ in 0..max_tokens {
        let start = ids.len().saturating_sub(model.context());
        let window: Vec<i64> = ids[start..].iter().map(|&t| t as i64).collect();
        let t = window.len();
        let x = Tensor::from_vec(window, &[1, t], device)?;
        let logits = model
            .forward(&x)?
            .narrow(1, t - 1, 1)?
            .to_dtype(DType::F32)?;
        ids.push(sample_next(
            &logits.to_vec::<f32>()?,
            &Sampling::default(),
            &mut Rng::new(0),
        ));
    }
    Ok(ids[prompt.len()..].to_vec())
}
