//! Fused neural-network kernels over the last dimension: softmax and log-softmax with their
//! backward, layer norm and RMS norm with their backward, cross-entropy, rotary embeddings.
//!
//! Each works on rows of a contiguous copy of its input (made only when the input is not
//! contiguous already). Kernels that produce several outputs return them concatenated in
//! one buffer, split with [`CpuStorage::split`].

use super::real::Real;
use super::{contiguous_cow, map_float, map_float2, CpuStorage};
use crate::backend::RotaryStyle;
use crate::{Error, Layout, Result};
use rayon::prelude::*;

/// Rows smaller than this many elements in total are not worth a parallel split.
const PAR_MIN: usize = 1 << 13;

/// Rows per block in reductions across rows (fixed, so results are reproducible).
const ROWS_PER_BLOCK: usize = 64;

impl CpuStorage {
    /// Splits a buffer into consecutive pieces of the given lengths.
    pub fn split(self, sizes: &[usize]) -> Vec<CpuStorage> {
        macro_rules! go {
            ($v:expr, $variant:ident) => {{
                let mut rest = &$v[..];
                sizes
                    .iter()
                    .map(|&n| {
                        let (head, tail) = rest.split_at(n);
                        rest = tail;
                        CpuStorage::$variant(head.to_vec())
                    })
                    .collect()
            }};
        }
        match self {
            CpuStorage::F64(v) => go!(v, F64),
            CpuStorage::F32(v) => go!(v, F32),
            CpuStorage::F16(v) => go!(v, F16),
            CpuStorage::BF16(v) => go!(v, BF16),
            CpuStorage::I64(v) => go!(v, I64),
            CpuStorage::U32(v) => go!(v, U32),
            CpuStorage::U8(v) => go!(v, U8),
        }
    }
}

fn small_vec<T: Real>(s: &CpuStorage, l: &Layout) -> Vec<T> {
    s.to_f64s(l).into_iter().map(T::from_f64).collect()
}

/// Runs `f(row_index, in_row, out_row)` over rows of width `c`, in parallel when large.
fn for_rows<T: Real>(x: &[T], out: &mut [T], c: usize, f: impl Fn(usize, &[T], &mut [T]) + Sync) {
    if c == 0 {
        return;
    }
    if x.len() < PAR_MIN {
        for (i, (xi, oi)) in x.chunks(c).zip(out.chunks_mut(c)).enumerate() {
            f(i, xi, oi);
        }
    } else {
        x.par_chunks(c)
            .zip(out.par_chunks_mut(c))
            .enumerate()
            .for_each(|(i, (xi, oi))| f(i, xi, oi));
    }
}

fn softmax_typed<T: Real>(x: &[T], layout: &Layout, log: bool, causal: bool) -> Vec<T> {
    let c = *layout.shape().last().unwrap_or(&1);
    let rank = layout.rank();
    let queries = if rank >= 2 {
        layout.shape()[rank - 2]
    } else {
        1
    };
    let x = contiguous_cow(x, layout);
    let mut out = vec![T::ZERO; x.len()];
    for_rows(&x, &mut out, c, |i, xr, or| {
        // Causal: query q sees keys 0..=q + (keys - queries) (aligned to the last key);
        // the rest of the row stays exactly 0.
        let visible = if causal {
            ((i % queries) + 1 + c).saturating_sub(queries).min(c)
        } else {
            c
        };
        let (xr, or) = (&xr[..visible], &mut or[..visible]);
        let m = xr.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
        let m = if m == T::neg_infinity() { T::ZERO } else { m };
        let mut sum = T::ZERO;
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = (v - m).exp();
            sum += *o;
        }
        if log {
            let lse = sum.ln();
            for (o, &v) in or.iter_mut().zip(xr) {
                *o = v - m - lse;
            }
        } else {
            let inv = T::ONE / sum;
            for o in or.iter_mut() {
                *o = *o * inv;
            }
        }
    });
    out
}

/// Softmax (or log-softmax) over the last dimension; contiguous result. With `causal`
/// (softmax only), entries after each query's position are 0, as if masked with -inf.
pub fn softmax_last(
    s: &CpuStorage,
    layout: &Layout,
    log: bool,
    causal: bool,
) -> Result<CpuStorage> {
    Ok(map_float!("softmax", s, |v| softmax_typed(
        v, layout, log, causal
    )))
}

fn softmax_bwd_typed<T: Real>(y: &[T], ly: &Layout, g: &[T], lg: &Layout, log: bool) -> Vec<T> {
    let c = *ly.shape().last().unwrap_or(&1);
    let (y, g) = (contiguous_cow(y, ly), contiguous_cow(g, lg));
    let mut out = vec![T::ZERO; y.len()];
    for_rows(&y, &mut out, c, |i, yr, or| {
        let gr = &g[i * c..(i + 1) * c];
        if log {
            // d/dx of log-softmax: g - softmax * sum(g).
            let s = gr.iter().fold(T::ZERO, |a, &b| a + b);
            for ((o, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
                *o = gv - yv.exp() * s;
            }
        } else {
            // d/dx of softmax: y * (g - sum(g * y)).
            let s = yr.iter().zip(gr).fold(T::ZERO, |a, (&yv, &gv)| a + yv * gv);
            for ((o, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
                *o = yv * (gv - s);
            }
        }
    });
    out
}

/// Gradient of softmax (or log-softmax) from its output `y` and the output gradient `g`.
pub fn softmax_last_backward(
    y: &CpuStorage,
    ly: &Layout,
    g: &CpuStorage,
    lg: &Layout,
    log: bool,
) -> Result<CpuStorage> {
    Ok(map_float2!("softmax_backward", y, g, |a, b| {
        softmax_bwd_typed(a, ly, b, lg, log)
    }))
}

pub use crate::backend::NormKind;

/// Mean (0 for RMS norm) and reciprocal standard deviation of one row.
fn row_stats<T: Real>(xr: &[T], kind: NormKind, eps: f64) -> (T, T) {
    let n = xr.len() as f64;
    let mean = match kind {
        NormKind::Layer => xr.iter().map(|v| v.to_f64()).sum::<f64>() / n,
        NormKind::Rms => 0.0,
    };
    let var = xr
        .iter()
        .map(|v| {
            let d = v.to_f64() - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (T::from_f64(mean), T::from_f64(1.0 / (var + eps).sqrt()))
}

/// Affine parameters of a norm, as optional storages with their layouts.
pub type NormParams<'a> = (
    Option<(&'a CpuStorage, &'a Layout)>,
    Option<(&'a CpuStorage, &'a Layout)>,
);

fn norm_typed<T: Real>(
    x: &[T],
    lx: &Layout,
    params: NormParams<'_>,
    kind: NormKind,
    eps: f64,
) -> Vec<T> {
    let c = *lx.shape().last().unwrap_or(&1);
    let x = contiguous_cow(x, lx);
    let w: Option<Vec<T>> = params.0.map(|(s, l)| small_vec(s, l));
    let b: Option<Vec<T>> = params.1.map(|(s, l)| small_vec(s, l));
    let mut out = vec![T::ZERO; x.len()];
    for_rows(&x, &mut out, c, |_, xr, or| {
        let (mean, rstd) = row_stats(xr, kind, eps);
        for (j, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
            let mut y = (v - mean) * rstd;
            if let Some(w) = &w {
                y = y * w[j];
            }
            if let Some(b) = &b {
                y += b[j];
            }
            *o = y;
        }
    });
    out
}

/// Layer norm or RMS norm over the last dimension, with optional weight and bias.
pub fn norm(
    s: &CpuStorage,
    lx: &Layout,
    params: NormParams<'_>,
    kind: NormKind,
    eps: f64,
) -> Result<CpuStorage> {
    Ok(map_float!("norm", s, |v| norm_typed(
        v, lx, params, kind, eps
    )))
}

fn norm_bwd_typed<T: Real>(
    x: &[T],
    lx: &Layout,
    g: &[T],
    lg: &Layout,
    w: Option<(&CpuStorage, &Layout)>,
    kind: NormKind,
    eps: f64,
) -> Vec<T> {
    let c = *lx.shape().last().unwrap_or(&1);
    let (x, g) = (contiguous_cow(x, lx), contiguous_cow(g, lg));
    let w: Option<Vec<T>> = w.map(|(s, l)| small_vec(s, l));
    let mut dx = vec![T::ZERO; x.len()];
    for_rows(&x, &mut dx, c, |i, xr, dr| {
        let gr = &g[i * c..(i + 1) * c];
        let (mean, rstd) = row_stats(xr, kind, eps);
        let (mut sum_d, mut sum_dx) = (0f64, 0f64);
        for (j, (&xv, &gv)) in xr.iter().zip(gr).enumerate() {
            let d = match &w {
                Some(w) => gv * w[j],
                None => gv,
            };
            let xhat = (xv - mean) * rstd;
            sum_d += d.to_f64();
            sum_dx += (d * xhat).to_f64();
        }
        let n = c as f64;
        let mean_d = T::from_f64(if kind == NormKind::Layer {
            sum_d / n
        } else {
            0.0
        });
        let mean_dx = T::from_f64(sum_dx / n);
        for (j, (o, (&xv, &gv))) in dr.iter_mut().zip(xr.iter().zip(gr)).enumerate() {
            let d = match &w {
                Some(w) => gv * w[j],
                None => gv,
            };
            let xhat = (xv - mean) * rstd;
            *o = rstd * (d - mean_d - xhat * mean_dx);
        }
    });
    // Weight and bias gradients: sums over rows of g * xhat and g, in fixed row blocks
    // added in order, so the result does not depend on thread scheduling.
    let mut dw = vec![0f64; c];
    let mut db = vec![0f64; c];
    if c > 0 {
        let partials: Vec<(Vec<f64>, Vec<f64>)> = x
            .par_chunks(c * ROWS_PER_BLOCK)
            .zip(g.par_chunks(c * ROWS_PER_BLOCK))
            .map(|(xb, gb)| {
                let (mut pw, mut pb) = (vec![0f64; c], vec![0f64; c]);
                for (xr, gr) in xb.chunks(c).zip(gb.chunks(c)) {
                    let (mean, rstd) = row_stats(xr, kind, eps);
                    for j in 0..c {
                        let xhat = (xr[j] - mean) * rstd;
                        pw[j] += (gr[j] * xhat).to_f64();
                        pb[j] += gr[j].to_f64();
                    }
                }
                (pw, pb)
            })
            .collect();
        for (pw, pb) in partials {
            dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
    }
    dx.extend(dw.into_iter().map(T::from_f64));
    dx.extend(db.into_iter().map(T::from_f64));
    dx
}

/// Gradients of a norm over the last dimension: `dx`, `dweight`, `dbias` (the last two of
/// length C, in x's dtype), from the input `x` and the output gradient `g`.
pub fn norm_backward(
    x: &CpuStorage,
    lx: &Layout,
    g: &CpuStorage,
    lg: &Layout,
    weight: Option<(&CpuStorage, &Layout)>,
    kind: NormKind,
    eps: f64,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    let c = *lx.shape().last().unwrap_or(&1);
    let all = map_float2!("norm_backward", x, g, |a, b| norm_bwd_typed(
        a, lx, b, lg, weight, kind, eps
    ));
    let mut parts = all.split(&[lx.numel(), c, c]).into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(dx), Some(dw), Some(db)) => Ok((dx, dw, db)),
        _ => Err(Error::invalid("norm_backward", "internal split failed")),
    }
}

fn xent_typed<T: Real>(
    x: &[T],
    lx: &Layout,
    targets: &[i64],
    ignore: i64,
    grad_scale: Option<f64>,
) -> Vec<T> {
    let v = *lx.shape().last().unwrap_or(&1);
    let x = contiguous_cow(x, lx);
    let count = targets.iter().filter(|&&t| t != ignore).count() as f64;
    let lse_of = |xr: &[T]| {
        let m = xr.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b.to_f64()));
        m + xr.iter().map(|&b| (b.to_f64() - m).exp()).sum::<f64>().ln()
    };
    match grad_scale {
        None => {
            // Fixed blocks summed in order: deterministic whatever the thread count does.
            let partials: Vec<f64> = x
                .par_chunks(v * ROWS_PER_BLOCK)
                .zip(targets.par_chunks(ROWS_PER_BLOCK))
                .map(|(xb, tb)| {
                    xb.chunks(v)
                        .zip(tb)
                        .filter(|(_, &t)| t != ignore)
                        .map(|(xr, &t)| lse_of(xr) - xr[t as usize].to_f64())
                        .sum::<f64>()
                })
                .collect();
            let total: f64 = partials.iter().sum();
            vec![T::from_f64(total / count)]
        }
        Some(g) => {
            let scale = g / count;
            let mut out = vec![T::ZERO; x.len()];
            for_rows(&x, &mut out, v, |i, xr, or| {
                let t = targets[i];
                if t == ignore {
                    return;
                }
                let lse = lse_of(xr);
                for (j, (o, &xv)) in or.iter_mut().zip(xr).enumerate() {
                    let p = (xv.to_f64() - lse).exp();
                    let onehot = if j as i64 == t { 1.0 } else { 0.0 };
                    *o = T::from_f64((p - onehot) * scale);
                }
            });
            out
        }
    }
}

/// Mean cross-entropy of logits `[N, V]` against integer targets `[N]`, skipping targets
/// equal to `ignore`. Returns a one-element buffer (NaN when every target is ignored).
pub fn cross_entropy(
    x: &CpuStorage,
    lx: &Layout,
    targets: &[i64],
    ignore: i64,
) -> Result<CpuStorage> {
    check_targets(lx, targets, ignore)?;
    Ok(map_float!("cross_entropy", x, |v| xent_typed(
        v, lx, targets, ignore, None
    )))
}

/// Gradient of [`cross_entropy`] with respect to the logits, times the loss gradient `g`.
pub fn cross_entropy_backward(
    x: &CpuStorage,
    lx: &Layout,
    targets: &[i64],
    ignore: i64,
    g: f64,
) -> Result<CpuStorage> {
    check_targets(lx, targets, ignore)?;
    Ok(map_float!("cross_entropy_backward", x, |v| xent_typed(
        v,
        lx,
        targets,
        ignore,
        Some(g)
    )))
}

fn check_targets(lx: &Layout, targets: &[i64], ignore: i64) -> Result<()> {
    let v = *lx.shape().last().unwrap_or(&0) as i64;
    if let Some(&bad) = targets.iter().find(|&&t| t != ignore && (t < 0 || t >= v)) {
        return Err(Error::invalid(
            "cross_entropy",
            format!("target {bad} is outside the {v} classes"),
        ));
    }
    Ok(())
}

fn rotary_typed<T: Real>(
    x: &[T],
    lx: &Layout,
    cos: &[T],
    sin: &[T],
    style: RotaryStyle,
    inverse: bool,
) -> Vec<T> {
    let shape = lx.shape();
    let d = shape[shape.len() - 1];
    let t = shape[shape.len() - 2];
    let half = d / 2;
    let x = contiguous_cow(x, lx);
    let mut out = vec![T::ZERO; x.len()];
    for_rows(&x, &mut out, d, |row, xr, or| {
        let pos = row % t;
        for i in 0..half {
            let c = cos[pos * half + i];
            let s = if inverse {
                -sin[pos * half + i]
            } else {
                sin[pos * half + i]
            };
            let (a, b) = match style {
                RotaryStyle::Interleaved => (2 * i, 2 * i + 1),
                RotaryStyle::RotateHalf => (i, i + half),
            };
            or[a] = xr[a] * c - xr[b] * s;
            or[b] = xr[a] * s + xr[b] * c;
        }
    });
    out
}

/// Rotary position embedding of `x` `[.., T, D]` with tables `cos`, `sin` `[T, D/2]`;
/// `inverse` rotates the other way (the backward pass).
pub fn rotary(
    x: &CpuStorage,
    lx: &Layout,
    cos: (&CpuStorage, &Layout),
    sin: (&CpuStorage, &Layout),
    style: RotaryStyle,
    inverse: bool,
) -> Result<CpuStorage> {
    Ok(map_float!("rotary", x, |v| {
        let (c, s) = (small_vec(cos.0, cos.1), small_vec(sin.0, sin.1));
        rotary_typed(v, lx, &c, &s, style, inverse)
    }))
}
