//! AdamW: Adam with bias correction and decoupled weight decay (Loshchilov & Hutter).

use crate::backend::interface::{AdamWSlot, AdamWStep};
use crate::nn::Param;
use crate::storage::Storage;
use crate::{DType, Device, Error, GradStore, Result, Tensor};
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

/// First and second moments (f32) of one parameter, kept where the parameter lives.
struct Moments(Tensor, Tensor);

/// AdamW over a fixed list of f32 parameters, updated in place: a few multi-tensor
/// launches where the backend has them (the GPU), else one loop per parameter (the CPU).
pub struct AdamW {
    pub cfg: AdamWConfig,
    params: Vec<Param>,
    /// One pair of moments per parameter, in parameter order.
    moments: Vec<Moments>,
    step: u64,
}

impl AdamW {
    /// An optimizer for `params` (all f32) with zero moments on the parameters' devices.
    pub fn new(params: Vec<Param>, cfg: AdamWConfig) -> Result<Self> {
        let mut moments = Vec::with_capacity(params.len());
        for p in &params {
            if p.tensor.dtype() != DType::F32 {
                return Err(Error::UnsupportedDType {
                    op: "AdamW (master weights must be f32)",
                    dtype: p.tensor.dtype(),
                });
            }
            let (shape, device) = (p.tensor.shape(), p.tensor.device());
            moments.push(Moments(
                Tensor::zeros(shape, DType::F32, device)?,
                Tensor::zeros(shape, DType::F32, device)?,
            ));
        }
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
        let k = AdamWStep {
            beta1: self.cfg.beta1 as f32,
            beta2: self.cfg.beta2 as f32,
            eps: self.cfg.eps as f32,
            decay: 1.0,
            step_size: (lr / (1.0 - self.cfg.beta1.powi(t))) as f32,
            bc2_sqrt: (1.0 - self.cfg.beta2.powi(t)).sqrt() as f32,
        };
        let mut items = Vec::new();
        for (p, moments) in self.params.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(&p.tensor) else {
                continue;
            };
            let decay = if p.decay {
                (1.0 - lr * self.cfg.weight_decay) as f32
            } else {
                1.0
            };
            items.push((&p.tensor, g, &moments.0, &moments.1, decay));
        }
        update(&items, k)
    }

    /// The optimizer state as named tensors (`m.NAME`, `v.NAME`) on the CPU, plus the
    /// step count.
    pub fn state(&self) -> Result<(HashMap<String, Tensor>, u64)> {
        let mut out = HashMap::new();
        for (p, Moments(m, v)) in self.params.iter().zip(&self.moments) {
            let (m, v) = (m.to_device(Device::Cpu)?, v.to_device(Device::Cpu)?);
            out.insert(format!("m.{}", p.name), m);
            out.insert(format!("v.{}", p.name), v);
        }
        Ok((out, self.step))
    }

    /// Restores state saved by [`AdamW::state`]; every moment must be present with the
    /// parameter's shape.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for (p, Moments(m, v)) in self.params.iter().zip(&self.moments) {
            let (mk, vk) = (format!("m.{}", p.name), format!("v.{}", p.name));
            let mut loaded = Vec::with_capacity(2);
            for key in [&mk, &vk] {
                let t = state.get(key).ok_or_else(|| {
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
                loaded.push(t.to_dtype(DType::F32)?);
            }
            m.assign(&loaded[0])?;
            v.assign(&loaded[1])?;
        }
        self.step = step;
        Ok(())
    }
}

/// The AdamW update of one parameter, one element at a time on the host: the path of a
/// backend without a fused one (the CPU).
fn host_step(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, k: AdamWStep) -> Result<()> {
    let g = g.to_dtype(DType::F32)?.contiguous()?.to_vec::<f32>()?;
    // Three storages written at once: each closure returns the one inside it.
    let updated = m.with_f32_mut(|m| {
        v.with_f32_mut(|v| {
            p.with_f32_mut(|w| {
                for i in 0..w.len() {
                    let gi = g[i];
                    m[i] = k.beta1 * m[i] + (1.0 - k.beta1) * gi;
                    v[i] = k.beta2 * v[i] + (1.0 - k.beta2) * gi * gi;
                    let denom = v[i].sqrt() / k.bc2_sqrt + k.eps;
                    w[i] = w[i] * k.decay - k.step_size * m[i] / denom;
                }
            })
        })
    });
    updated???;
    Ok(())
}

/// One parameter's step inputs: parameter, gradient, moments, decay factor.
type Item<'a> = (&'a Tensor, &'a Tensor, &'a Tensor, &'a Tensor, f32);

/// The AdamW update of every parameter: a few multi-tensor launches per device through
/// the backend's fused path, or [`host_step`] per parameter where it has none.
fn update(items: &[Item], k: AdamWStep) -> Result<()> {
    let mut by_device: std::collections::HashMap<Device, Vec<usize>> = Default::default();
    for (i, (p, g, ..)) in items.iter().enumerate() {
        if !p.is_contiguous() || g.device() != p.device() {
            return Err(Error::invalid(
                "AdamW",
                "parameters must be contiguous and on their gradients' device",
            ));
        }
        by_device.entry(p.device()).or_default().push(i);
    }
    for indices in by_device.values() {
        if !fused_update(items, indices, k)? {
            for &i in indices {
                let (p, g, m, v, decay) = items[i];
                host_step(p, g, m, v, AdamWStep { decay, ..k })?;
            }
        }
    }
    Ok(())
}

/// The backend's multi-tensor AdamW over `items[indices]` (one device); `false` (nothing
/// done) where it has none.
fn fused_update(items: &[Item], indices: &[usize], k: AdamWStep) -> Result<bool> {
    let guards: Vec<_> = indices
        .iter()
        .map(|&i| {
            let (p, g, m, v, _) = &items[i];
            (
                p.read_storage(),
                g.read_storage(),
                m.read_storage(),
                v.read_storage(),
            )
        })
        .collect();
    let slots: Vec<_> = indices
        .iter()
        .zip(&guards)
        .map(|(&i, (ps, gs, ms, vs))| {
            let (p, g, _, _, decay) = &items[i];
            AdamWSlot {
                param: (&**ps, p.layout().offset()),
                grad: (&**gs, g.layout()),
                m: &**ms,
                v: &**vs,
                n: p.numel(),
                decay: *decay,
            }
        })
        .collect();
    Storage::adamw_multi(&slots, k)
}
