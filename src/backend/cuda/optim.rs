//! Optimizer kernels on CUDA: the fused AdamW update and sums of squares for clipping.

use super::storage::suffix;
use super::{launch, CudaStorage};
use crate::{DType, Error, Layout, Result};

/// AdamW's per-step constants.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 - lr * weight_decay` (1 without decay).
    pub decay: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
}

/// Updates parameter `p` and moments `m`, `v` (all contiguous f32 of one length) in place
/// from gradient `g`.
pub fn adamw_update(
    p: (&CudaStorage, usize),
    g: &CudaStorage,
    gl: &Layout,
    m: &CudaStorage,
    v: &CudaStorage,
    n: usize,
    k: AdamWStep,
) -> Result<()> {
    if p.0.dtype != DType::F32 || m.dtype != DType::F32 || v.dtype != DType::F32 {
        return Err(Error::UnsupportedDType {
            op: "AdamW (f32 master weights)",
            dtype: p.0.dtype,
        });
    }
    let g32 = super::cast(g, gl, DType::F32)?;
    if n > 0 {
        let (pp, gp, mp, vp, n64) = (p.0.ptr(p.1), g32.ptr(0), m.ptr(0), v.ptr(0), n as i64);
        launch!(
            p.0.dev,
            "optim",
            "adamw_f32",
            n,
            &pp,
            &gp,
            &mp,
            &vp,
            &n64,
            &k.beta1,
            &k.beta2,
            &k.eps,
            &k.decay,
            &k.step_size,
            &k.bc2_sqrt
        );
    }
    Ok(())
}

/// Adds the sum of squares of the elements under `l` into the f64 slot `acc` (device).
pub fn sum_squares_into(s: &CudaStorage, l: &Layout, acc: &CudaStorage) -> Result<()> {
    let (_keep, p) = super::nn::contiguous_ptr(s, l)?;
    let n = l.numel();
    if n > 0 {
        let (ap, n64) = (acc.ptr(0), n as i64);
        launch!(
            s.dev,
            "optim",
            format!("sumsq_{}", suffix(s.dtype)),
            n,
            &p,
            &n64,
            &ap
        );
    }
    Ok(())
}
