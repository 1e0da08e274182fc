//! Global-norm gradient clipping.

use crate::nn::Param;
use crate::{DType, Device, GradStore, Result, Tensor};

/// Scales every gradient by `max_norm / (norm + 1e-6)` when the global L2 norm over all
/// of `params`' gradients exceeds `max_norm`. Returns the norm before clipping.
///
/// On a GPU the sums of squares accumulate on the device, so the only host round trip is
/// the final scalar.
pub fn clip_grad_norm(grads: &mut GradStore, params: &[Param], max_norm: f64) -> Result<f64> {
    clip_grad_norm_scaled(grads, params, max_norm, 1.0)
}

/// [`clip_grad_norm`] for gradients of a loss multiplied by `loss_scale` (f16 training):
/// the norm and the clipping are those of the unscaled gradients, and the division by
/// `loss_scale` happens in the same single pass over the gradients. Returns the unscaled
/// norm (inf or NaN when the scaled gradients overflowed).
pub fn clip_grad_norm_scaled(
    grads: &mut GradStore,
    params: &[Param],
    max_norm: f64,
    loss_scale: f64,
) -> Result<f64> {
    let mut sum_sq = 0f64;
    // One accumulator per device, in the order the devices first appear (a fixed order,
    // so the final sum rounds the same way every run).
    let mut device_acc: Vec<(Device, Tensor)> = Vec::new();
    for p in params {
        let Some(g) = grads.get(&p.tensor) else {
            continue;
        };
        // A device accumulator where the backend sums on the device; the host otherwise.
        let acc = match device_acc.iter().find(|(d, _)| *d == g.device()) {
            Some((_, a)) => a.clone(),
            None => {
                let a = Tensor::zeros(&[1], DType::F64, g.device())?;
                device_acc.push((g.device(), a.clone()));
                a
            }
        };
        let summed = g
            .read_storage()
            .sum_squares_into(g.layout(), &acc.read_storage())?;
        if !summed {
            sum_sq += g.to_vec_f64()?.iter().map(|x| x * x).sum::<f64>();
        }
    }
    for (_, acc) in &device_acc {
        sum_sq += acc.to_scalar()?;
    }
    let norm = sum_sq.sqrt() / loss_scale;
    let coef = (max_norm / (norm + 1e-6)).min(1.0) / loss_scale;
    if coef != 1.0 {
        for p in params {
            if let Some(g) = grads.remove(&p.tensor) {
                grads.insert(&p.tensor, g.mul_scalar(coef)?);
            }
        }
    }
    Ok(norm)
}
