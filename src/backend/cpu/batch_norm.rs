//! Batch normalisation's fused passes on the host (the reference for the GPU's): the
//! per-channel sums and the per-channel affine map over `[M, C]` images held
//! channels-last, in f64, stored in the compute dtype (f32, or f64 for f64 inputs).

use super::CpuStorage;
use crate::backend::View;
use crate::{DType, Layout, Result};

/// The dtype the sums and channel vectors of `dtype` are kept in.
fn compute(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// `(M, C)` of a contiguous float `[M, C]` operand.
fn rows(s: &CpuStorage, l: &Layout) -> Option<(usize, usize)> {
    let ok = s.dtype().is_float() && l.rank() == 2 && l.is_contiguous();
    ok.then(|| (l.shape()[0], l.shape()[1]))
}

/// The `[channels]` vector `v` in f64, when it is one in the compute dtype of `dtype`.
fn channel_vector(
    (v, l): (&CpuStorage, &Layout),
    channels: usize,
    dtype: DType,
) -> Option<Vec<f64>> {
    (v.dtype() == compute(dtype) && l.shape() == [channels]).then(|| v.to_f64s(l))
}

/// See [`crate::backend::BackendStorage::channel_sums`]: one split.
pub fn channel_sums(
    x: &CpuStorage,
    lx: &Layout,
    grad: Option<(&CpuStorage, &Layout)>,
    center: (&CpuStorage, &Layout),
) -> Result<Option<(CpuStorage, Layout)>> {
    let Some((m, c)) = rows(x, lx) else {
        return Ok(None);
    };
    let Some(k) = channel_vector(center, c, x.dtype()) else {
        return Ok(None);
    };
    let g = match grad {
        Some((g, lg)) if g.dtype() == x.dtype() && lg.shape() == lx.shape() => Some(g.to_f64s(lg)),
        Some(_) => return Ok(None),
        None => None,
    };
    let xs = x.to_f64s(lx);
    let mut sums = vec![0.0f64; 2 * c];
    for row in 0..m {
        for ch in 0..c {
            let i = row * c + ch;
            let d = xs[i] - k[ch];
            let v = g.as_ref().map_or(d, |g| g[i]);
            sums[ch] += v;
            sums[c + ch] += v * d;
        }
    }
    Ok(Some((
        CpuStorage::from_f64s(compute(x.dtype()), &sums),
        Layout::contiguous(&[2, 1, c]),
    )))
}

/// See [`crate::backend::BackendStorage::channel_affine`].
pub fn channel_affine(
    x: &CpuStorage,
    lx: &Layout,
    grad: Option<(View<'_, CpuStorage>, View<'_, CpuStorage>)>,
    mean: (&CpuStorage, &Layout),
    beta: (&CpuStorage, &Layout),
    gamma: (&CpuStorage, &Layout),
) -> Result<Option<CpuStorage>> {
    let Some((m, c)) = rows(x, lx) else {
        return Ok(None);
    };
    let dt = x.dtype();
    let (Some(mean), Some(beta), Some(gamma)) = (
        channel_vector(mean, c, dt),
        channel_vector(beta, c, dt),
        channel_vector(gamma, c, dt),
    ) else {
        return Ok(None);
    };
    let grad = match grad {
        Some(((g, lg), alpha)) => match channel_vector(alpha, c, dt) {
            Some(alpha) if g.dtype() == dt && lg.shape() == lx.shape() => {
                Some((g.to_f64s(lg), alpha))
            }
            _ => return Ok(None),
        },
        None => None,
    };
    let xs = x.to_f64s(lx);
    let out: Vec<f64> = (0..m * c)
        .map(|i| {
            let ch = i % c;
            let v = (xs[i] - mean[ch]) * beta[ch] + gamma[ch];
            grad.as_ref().map_or(v, |(g, a)| v + g[i] * a[ch])
        })
        .collect();
    Ok(Some(CpuStorage::from_f64s(dt, &out)))
}
