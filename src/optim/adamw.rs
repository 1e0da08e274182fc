//! AdamW: Adam with bias correction and decoupled weight decay (Loshchilov & Hutter).

use crate::nn::Param;
use crate::{DType, Error, GradStore, Result, Tensor};
use std::collections::HashMap;

/// AdamW hyper-parameters (the learning rate is given per step, so schedules stay outside).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled decay, applied only to parameters marked `decay`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// AdamW over a fixed list of f32 parameters, updated in place in one fused loop each.
pub struct AdamW {
    pub cfg: AdamWConfig,
    params: Vec<Param>,
    /// First and second moments, one pair per parameter, in parameter order.
    moments: Vec<(Vec<f32>, Vec<f32>)>,
    step: u64,
}

impl AdamW {
    /// An optimizer for `params` (all f32) with zero moments.
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        for p in &params {
            if p.tensor.dtype() != DType::F32 {
                return Err(Error::UnsupportedDType {
                    op: "AdamW (master weights must be f32)",
                    dtype: p.tensor.dtype(),
                });
            }
        }
        let moments = params
            .iter()
            .map(|p| (vec![0.0; p.tensor.numel()], vec![0.0; p.tensor.numel()]))
            .collect();
        Ok(AdamW {
            cfg,
            params,
            moments,
            step: 0,
        })
    }

    /// Number of steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The parameters being optimized.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let (b1f, b2f, eps) = (b1 as f32, b2 as f32, self.cfg.eps as f32);
        for (p, (m, v)) in self.params.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(&p.tensor) else {
                continue;
            };
            let g = g.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
            let decay = if p.decay {
                (1.0 - lr * self.cfg.weight_decay) as f32
            } else {
                1.0
            };
            p.tensor.with_f32_mut(|w| {
                for i in 0..w.len() {
                    let gi = g[i];
                    m[i] = b1f * m[i] + (1.0 - b1f) * gi;
                    v[i] = b2f * v[i] + (1.0 - b2f) * gi * gi;
                    let denom = v[i].sqrt() / bc2_sqrt + eps;
                    w[i] = w[i] * decay - step_size * m[i] / denom;
                }
            })?;
        }
        Ok(())
    }

    /// The optimizer state as named tensors (`m.NAME`, `v.NAME`) plus the step count.
    pub fn state(&self) -> Result<(HashMap<String, Tensor>, u64)> {
        let mut out = HashMap::new();
        for (p, (m, v)) in self.params.iter().zip(&self.moments) {
            let shape = p.tensor.shape();
            out.insert(
                format!("m.{}", p.name),
                Tensor::from_slice(m, shape, crate::Device::Cpu)?,
            );
            out.insert(
                format!("v.{}", p.name),
                Tensor::from_slice(v, shape, crate::Device::Cpu)?,
            );
        }
        Ok((out, self.step))
    }

    /// Restores state saved by [`AdamW::state`]; every moment must be present with the
    /// parameter's shape.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (p, (m, v)) in self.params.iter().zip(self.moments.iter_mut()) {
            for (key, slot) in [(format!("m.{}", p.name), m), (format!("v.{}", p.name), v)] {
                let t = state.get(&key).ok_or_else(|| {
                    Error::invalid("AdamW::load_state", format!("missing `{key}`"))
                })?;
                if t.shape() != p.tensor.shape() {
                    return Err(Error::invalid(
                        "AdamW::load_state",
                        format!(
                            "`{key}` has shape {:?}, parameter has {:?}",
                            t.shape(),
                            p.tensor.shape()
                        ),
                    ));
                }
                *slot = t.to_dtype(DType::F32)?.to_vec::<f32>()?;
            }
        }
        self.step = step;
        Ok(())
    }
}
