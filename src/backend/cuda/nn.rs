//! Fused row ops on CUDA: softmax (plain, log, causal) and backward, layer/RMS norm and
//! backward, cross-entropy and backward. Inputs are made contiguous first when needed.

use super::storage::suffix;
use super::{copy_contiguous, launch, row_config, CudaStorage};
use crate::backend::NormKind;
use crate::{DType, Error, Layout, Result};

/// A device pointer to the input's elements in contiguous order: the input itself when it
/// already is contiguous, else a copy (returned so that it lives as long as the pointer).
pub(crate) fn contiguous_ptr(s: &CudaStorage, l: &Layout) -> Result<(Option<CudaStorage>, u64)> {
    if l.is_contiguous() {
        Ok((None, s.ptr(l.offset())))
    } else {
        let c = copy_contiguous(s, l)?;
        let p = c.ptr(0);
        Ok((Some(c), p))
    }
}

/// Rows up to this long take the one-warp-per-row kernels (32 values per lane).
const WARP_ROW_MAX: usize = 1024;

/// Eight rows per 256-thread block, one per warp.
fn warp_rows_config(rows: usize) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (rows.div_ceil(8).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Whether a row length and the row pointers allow the 16-byte-pack row kernels.
fn vec_rows_ok(c: usize, dtype: DType, ptrs: &[u64]) -> bool {
    let pack = 16 / dtype.size_in_bytes();
    c <= WARP_ROW_MAX && c.is_multiple_of(pack) && ptrs.iter().all(|p| p % 16 == 0)
}

fn half_or_f32(op: &'static str, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::UnsupportedDType { op, dtype: other }),
    }
}

/// Rows per attention matrix (the second-to-last dim, 1 for vectors): the causal mask
/// aligns query `row % queries` to the last key.
fn queries_of(l: &Layout) -> usize {
    if l.rank() >= 2 {
        l.shape()[l.rank() - 2]
    } else {
        1
    }
}

fn last(l: &Layout) -> usize {
    *l.shape().last().unwrap_or(&1)
}

/// Softmax or log-softmax over the last dim; `causal` masks keys after each query.
pub fn softmax_last(
    s: &CudaStorage,
    layout: &Layout,
    log: bool,
    causal: bool,
) -> Result<CudaStorage> {
    half_or_f32("softmax", s.dtype)?;
    let (_keep, xp) = contiguous_ptr(s, layout)?;
    let n = layout.numel();
    let c = last(layout);
    let rows = n.checked_div(c).unwrap_or(0);
    let queries = queries_of(layout);
    let out = CudaStorage::alloc(&s.dev, s.dtype, n)?;
    if rows > 0 {
        let (yp, r64, c64, q64, lg, ca) = (
            out.ptr(0),
            rows as i64,
            c as i64,
            queries.max(1) as i64,
            log as i32,
            causal as i32,
        );
        if c <= WARP_ROW_MAX {
            let name = format!("softmax_warp_{}", suffix(s.dtype));
            launch!(@cfg s.dev, "nn", name, warp_rows_config(rows), &xp, &yp, &r64, &c64, &q64, &lg, &ca);
        } else {
            let name = format!("softmax_{}", suffix(s.dtype));
            launch!(@cfg s.dev, "nn", name, row_config(rows), &xp, &yp, &r64, &c64, &q64, &lg, &ca);
        }
    }
    Ok(out)
}

/// Gradient of softmax / log-softmax from its output `y` and the output gradient `g`.
pub fn softmax_last_backward(
    y: &CudaStorage,
    ly: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    log: bool,
    causal: bool,
) -> Result<CudaStorage> {
    half_or_f32("softmax_backward", y.dtype)?;
    let (_ky, yp) = contiguous_ptr(y, ly)?;
    let (_kg, gp) = contiguous_ptr(g, lg)?;
    let n = ly.numel();
    let c = last(ly);
    let rows = n.checked_div(c).unwrap_or(0);
    let queries = queries_of(ly);
    let out = CudaStorage::alloc(&y.dev, y.dtype, n)?;
    if rows > 0 {
        let (dp, r64, c64, lgf) = (out.ptr(0), rows as i64, c as i64, log as i32);
        if vec_rows_ok(c, y.dtype, &[yp, gp, dp]) {
            let (q64, ca) = (queries.max(1) as i64, causal as i32);
            let name = format!("softmax_bwd_vec_{}", suffix(y.dtype));
            launch!(@cfg y.dev, "nn", name, warp_rows_config(rows), &yp, &gp, &dp, &r64, &c64, &q64, &lgf, &ca);
        } else {
            // y is exactly 0 on masked keys, so the plain kernel needs no mask.
            launch!(@cfg y.dev, "nn", format!("softmax_bwd_{}", suffix(y.dtype)), row_config(rows), &yp, &gp, &dp, &r64, &c64, &lgf);
        }
    }
    Ok(out)
}

/// A 1-D parameter as a contiguous device pointer (0 when absent).
fn param_ptr(p: Option<(&CudaStorage, &Layout)>) -> Result<(Option<CudaStorage>, u64)> {
    match p {
        None => Ok((None, 0)),
        Some((s, l)) => contiguous_ptr(s, l),
    }
}

/// Layer norm or RMS norm over the last dim with optional weight and bias.
pub fn norm(
    x: &CudaStorage,
    lx: &Layout,
    weight: Option<(&CudaStorage, &Layout)>,
    bias: Option<(&CudaStorage, &Layout)>,
    kind: NormKind,
    eps: f64,
) -> Result<CudaStorage> {
    half_or_f32("norm", x.dtype)?;
    let (_kx, xp) = contiguous_ptr(x, lx)?;
    let (_wk, wp) = param_ptr(weight)?;
    let (_bk, bp) = param_ptr(bias)?;
    let n = lx.numel();
    let c = last(lx);
    let rows = n.checked_div(c).unwrap_or(0);
    let out = CudaStorage::alloc(&x.dev, x.dtype, n)?;
    if rows > 0 {
        let (yp, r64, c64, rms, e) = (
            out.ptr(0),
            rows as i64,
            c as i64,
            (kind == NormKind::Rms) as i32,
            eps as f32,
        );
        if vec_rows_ok(c, x.dtype, &[xp, wp, bp, yp]) {
            let name = format!("norm_vec_{}", suffix(x.dtype));
            launch!(@cfg x.dev, "nn", name, warp_rows_config(rows), &xp, &wp, &bp, &yp, &r64, &c64, &rms, &e);
        } else if c <= WARP_ROW_MAX {
            let name = format!("norm_warp_{}", suffix(x.dtype));
            launch!(@cfg x.dev, "nn", name, warp_rows_config(rows), &xp, &wp, &bp, &yp, &r64, &c64, &rms, &e);
        } else {
            let name = format!("norm_{}", suffix(x.dtype));
            launch!(@cfg x.dev, "nn", name, row_config(rows), &xp, &wp, &bp, &yp, &r64, &c64, &rms, &e);
        }
    }
    Ok(out)
}

/// Gradients of a norm: `dx`, `dweight`, `dbias` (the last two of length C, reduced over
/// rows on the GPU in a fixed order).
pub fn norm_backward(
    x: &CudaStorage,
    lx: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    weight: Option<(&CudaStorage, &Layout)>,
    kind: NormKind,
    eps: f64,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    half_or_f32("norm_backward", x.dtype)?;
    let (_kx, xp) = contiguous_ptr(x, lx)?;
    let (_kg, gp) = contiguous_ptr(g, lg)?;
    let (_wk, wp) = param_ptr(weight)?;
    let n = lx.numel();
    let c = last(lx);
    let rows = n.checked_div(c).unwrap_or(0);
    let dx = CudaStorage::alloc(&x.dev, x.dtype, n)?;
    let stats = CudaStorage::alloc(&x.dev, DType::F32, 2 * rows)?;
    let dw = CudaStorage::alloc(&x.dev, x.dtype, c)?;
    let db = CudaStorage::alloc(&x.dev, x.dtype, c)?;
    if rows > 0 {
        let (dp, sp) = (dx.ptr(0), stats.ptr(0));
        let (r64, c64, rms, e) = (
            rows as i64,
            c as i64,
            (kind == NormKind::Rms) as i32,
            eps as f32,
        );
        if vec_rows_ok(c, x.dtype, &[xp, wp, gp, dp]) {
            let name = format!("norm_bwd_vec_{}", suffix(x.dtype));
            launch!(@cfg x.dev, "nn", name, warp_rows_config(rows), &xp, &wp, &gp, &dp, &sp, &r64, &c64, &rms, &e);
        } else {
            launch!(@cfg x.dev, "nn", format!("norm_bwd_{}", suffix(x.dtype)), row_config(rows), &xp, &wp, &gp, &dp, &sp, &r64, &c64, &rms, &e);
        }
        let (dwp, dbp) = (dw.ptr(0), db.ptr(0));
        // Rows split into chunks of 256 (fixed, so the sum order never changes).
        let chunks = rows.div_ceil(256);
        let partials = CudaStorage::alloc(&x.dev, DType::F32, 2 * chunks * c)?;
        let (pp, rpc, ch64) = (partials.ptr(0), 256i64, chunks as i64);
        let grid = cudarc::driver::LaunchConfig {
            grid_dim: (c.div_ceil(32) as u32, chunks as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = format!("norm_wgrad_partial_{}", suffix(x.dtype));
        launch!(@cfg x.dev, "nn", name, grid, &xp, &gp, &sp, &pp, &r64, &c64, &rpc);
        let name = format!("norm_wgrad_finish_{}", suffix(x.dtype));
        launch!(x.dev, "nn", name, c, &pp, &dwp, &dbp, &ch64, &c64);
    }
    Ok((dx, dw, db))
}

/// Per-row losses and the (mean, count) pair of a cross-entropy, in f32.
fn xent_parts(
    x: &CudaStorage,
    lx: &Layout,
    t: &CudaStorage,
    lt: &Layout,
    ignore: i64,
) -> Result<CudaStorage> {
    half_or_f32("cross_entropy", x.dtype)?;
    let v = last(lx);
    let rows = lx.numel().checked_div(v).unwrap_or(0);
    let (_kx, xp) = contiguous_ptr(x, lx)?;
    let targets = super::cast(t, lt, DType::I64)?;
    let loss = CudaStorage::alloc(&x.dev, DType::F32, rows.max(1))?;
    let valid = CudaStorage::alloc(&x.dev, DType::F32, rows.max(1))?;
    let out = CudaStorage::alloc(&x.dev, DType::F32, 2)?;
    let (lp, vp, op, r64) = (loss.ptr(0), valid.ptr(0), out.ptr(0), rows as i64);
    if rows > 0 {
        let (tp, v64) = (targets.ptr(0), v as i64);
        launch!(@cfg x.dev, "nn", format!("xent_{}", suffix(x.dtype)), row_config(rows), &xp, &tp, &lp, &vp, &r64, &v64, &ignore);
    }
    launch!(@cfg x.dev, "nn", "xent_finish", row_config(1), &lp, &vp, &r64, &op);
    Ok(out)
}

/// Mean cross-entropy of logits `[N, V]` against i64 targets `[N]`; a one-element buffer in
/// `out_dtype` (NaN when every target is ignored or one is out of range). The rows are
/// accumulated in f32 whatever the logits' dtype.
pub fn cross_entropy(
    x: &CudaStorage,
    lx: &Layout,
    t: &CudaStorage,
    lt: &Layout,
    ignore: i64,
    out_dtype: DType,
) -> Result<CudaStorage> {
    let out = xent_parts(x, lx, t, lt, ignore)?;
    super::cast(&out, &Layout::new(vec![1], vec![1], 0), out_dtype)
}

/// Gradient of [`cross_entropy`] with respect to the logits, times the loss gradient `g`
/// (a one-element device buffer: no host round trip).
pub fn cross_entropy_backward(
    x: &CudaStorage,
    lx: &Layout,
    t: &CudaStorage,
    lt: &Layout,
    ignore: i64,
    g: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    half_or_f32("cross_entropy", x.dtype)?;
    let v = last(lx);
    let rows = lx.numel().checked_div(v).unwrap_or(0);
    let (_kx, xp) = contiguous_ptr(x, lx)?;
    let targets = super::cast(t, lt, DType::I64)?;
    let grad = super::cast(g.0, g.1, DType::F32)?;
    let dx = CudaStorage::alloc(&x.dev, x.dtype, lx.numel())?;
    if rows > 0 {
        let count = CudaStorage::alloc(&x.dev, DType::F32, 1)?;
        let (tp, cp, r64) = (targets.ptr(0), count.ptr(0), rows as i64);
        launch!(@cfg x.dev, "nn", "xent_count", row_config(1), &tp, &r64, &ignore, &cp);
        let (tp, gp, cp, dp, r64, v64) = (
            targets.ptr(0),
            grad.ptr(0),
            count.ptr(0),
            dx.ptr(0),
            rows as i64,
            v as i64,
        );
        launch!(@cfg x.dev, "nn", format!("xent_bwd_{}", suffix(x.dtype)), row_config(rows), &xp, &tp, &gp, &cp, &dp, &r64, &v64, &ignore);
    }
    Ok(dx)
}

/// Rotary position embedding of `[.., T, D]` with tables `[T, D/2]`; `inverse` rotates back.
pub fn rotary(
    x: &CudaStorage,
    lx: &Layout,
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
    style: crate::backend::RotaryStyle,
    inverse: bool,
) -> Result<CudaStorage> {
    half_or_f32("rotary", x.dtype)?;
    if cos.0.dtype != x.dtype || sin.0.dtype != x.dtype {
        return Err(Error::DTypeMismatch {
            op: "rotary",
            lhs: x.dtype,
            rhs: cos.0.dtype,
        });
    }
    let (_kx, xp) = contiguous_ptr(x, lx)?;
    let (_kc, cp) = contiguous_ptr(cos.0, cos.1)?;
    let (_ks, sp) = contiguous_ptr(sin.0, sin.1)?;
    let shape = lx.shape();
    let (t, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let rows = lx.numel().checked_div(d).unwrap_or(0);
    let out = CudaStorage::alloc(&x.dev, x.dtype, lx.numel())?;
    let pairs = rows * (d / 2);
    if pairs > 0 {
        let (yp, r64, t64, d64) = (out.ptr(0), rows as i64, t as i64, d as i64);
        let (inter, inv) = (
            (style == crate::backend::RotaryStyle::Interleaved) as i32,
            inverse as i32,
        );
        launch!(
            x.dev,
            "nn",
            format!("rotary_{}", suffix(x.dtype)),
            pairs,
            &xp,
            &cp,
            &sp,
            &yp,
            &r64,
            &t64,
            &d64,
            &inter,
            &inv
        );
    }
    Ok(out)
}
