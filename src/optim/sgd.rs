//! Stochastic gradient descent with momentum (PyTorch semantics: no dampening).

use crate::nn::Param;
use crate::{DType, Error, GradStore, Result, Tensor};

/// SGD with momentum and optional (coupled, L2) weight decay, on any device (the update
/// is made of tensor ops, so it runs where the parameters live).
pub struct Sgd {
    params: Vec<Param>,
    momentum: f64,
    weight_decay: f64,
    velocity: Vec<Option<Tensor>>,
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

    /// The momentum buffers by parameter name (those not yet made are left out), for a
    /// checkpoint.
    pub fn velocities(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.velocity)
            .filter_map(|(p, v)| v.as_ref().map(|v| (p.name.clone(), v.clone())))
            .collect()
    }

    /// Restores the momentum buffers [`Sgd::velocities`] saved; a buffer whose shape
    /// differs from its parameter's is an error naming it.
    pub fn load_velocities(
        &mut self,
        saved: &std::collections::HashMap<String, Tensor>,
    ) -> Result<()> {
        for (p, v) in self.params.iter().zip(self.velocity.iter_mut()) {
            if let Some(t) = saved.get(&p.name) {
                if t.shape() != p.tensor.shape() {
                    return Err(Error::invalid(
                        "SGD",
                        format!(
                            "momentum of `{}` has shape {:?}, the parameter {:?}",
                            p.name,
                            t.shape(),
                            p.tensor.shape()
                        ),
                    ));
                }
                *v = Some(t.to_dtype(DType::F32)?.to_device(p.tensor.device())?);
            }
        }
        Ok(())
    }

    /// `v = momentum * v + g (+ wd * w)` (`v = g` on the first step), `w -= lr * v`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let _guard = crate::no_grad();
        for (p, vel) in self.params.iter().zip(self.velocity.iter_mut()) {
            let Some(g) = grads.get(&p.tensor) else {
                continue;
            };
            let w = &p.tensor;
            if w.dtype() != DType::F32 || g.device() != w.device() {
                return Err(Error::invalid(
                    "SGD",
                    "parameters must be f32 and on their gradients' device",
                ));
            }
            let mut d = g.to_dtype(DType::F32)?;
            if p.decay && self.weight_decay != 0.0 {
                d = d.add(&w.mul_scalar(self.weight_decay)?)?;
            }
            let v = match vel.take() {
                Some(v) => v.mul_scalar(self.momentum)?.add(&d)?,
                None => d.contiguous()?,
            };
            w.assign(&w.sub(&v.mul_scalar(lr)?)?)?;
            *vel = Some(v);
        }
        Ok(())
    }
}
