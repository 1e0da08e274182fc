//! Stochastic gradient descent with momentum (PyTorch semantics: no dampening).

use crate::nn::Param;
use crate::{DType, GradStore, Result};

/// SGD with momentum and optional (coupled, L2) weight decay.
pub struct Sgd {
    params: Vec<Param>,
    momentum: f64,
    weight_decay: f64,
    velocity: Vec<Option<Vec<f32>>>,
}

impl Sgd {
    /// An optimizer for f32 `params`.
    pub fn new(params: Vec<Param>, momentum: f64, weight_decay: f64) -> Self {
        let velocity = vec![None; params.len()];
        Sgd {
            params,
            momentum,
            weight_decay,
            velocity,
        }
    }

    /// `v = momentum * v + g (+ wd * w)`, `w -= lr * v`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let (mu, lr) = (self.momentum as f32, lr as f32);
        for (p, vel) in self.params.iter().zip(self.velocity.iter_mut()) {
            let Some(g) = grads.get(&p.tensor) else {
                continue;
            };
            let g = g.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
            let wd = if p.decay {
                self.weight_decay as f32
            } else {
                0.0
            };
            p.tensor.with_f32_mut(|w| {
                let first = vel.is_none();
                let v = vel.get_or_insert_with(|| vec![0.0; w.len()]);
                for i in 0..w.len() {
                    let gi = g[i] + wd * w[i];
                    v[i] = if first { gi } else { mu * v[i] + gi };
                    w[i] -= lr * v[i];
                }
            })?;
        }
        Ok(())
    }
}
