//! Global-norm gradient clipping.

use crate::nn::Param;
use crate::{GradStore, Result};

/// Scales every gradient by `max_norm / (norm + 1e-6)` when the global L2 norm over all
/// of `params`' gradients exceeds `max_norm`. Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Param], max_norm: f64) -> Result<f64> {
    let mut sum_sq = 0f64;
    for p in params {
        if let Some(g) = grads.get(&p.tensor) {
            sum_sq += g.to_vec_f64()?.iter().map(|x| x * x).sum::<f64>();
        }
    }
    let norm = sum_sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for p in params {
            if let Some(g) = grads.remove(&p.tensor) {
                grads.insert(&p.tensor, g.mul_scalar(coef)?);
            }
        }
    }
    Ok(norm)
}
