//! Scoring text: a model's perplexity over a token sequence in sliding windows.

use crate::models::LanguageModel;
use crate::{Device, Error, Result, Tensor};

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
