//! Reductions on CUDA: sum, max, min over dims, argmax and argmin.

use super::storage::{suffix, Strided};
use super::{launch, CudaStorage};
use crate::backend::ReduceOp;
use crate::{DType, Error, Layout, Result};

fn float_only(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype })
    }
}

/// Reduces over `dims` (sorted, unique); contiguous result with the kept dims in order.
pub fn reduce(
    s: &CudaStorage,
    layout: &Layout,
    dims: &[usize],
    op: ReduceOp,
) -> Result<CudaStorage> {
    float_only("reduce", s.dtype)?;
    let is_prefix = !dims.is_empty() && dims.iter().enumerate().all(|(i, &d)| i == d);
    if op == ReduceOp::Sum && is_prefix && layout.is_contiguous() {
        return column_sums(s, layout, dims.len());
    }
    let (view, outs, r) = layout.reduced_view(dims)?;
    if r == 0 && op != ReduceOp::Sum {
        return Err(Error::invalid(
            "reduce",
            format!(
                "cannot take max/min over an empty dim of shape {:?}",
                layout.shape()
            ),
        ));
    }
    launch_over_view("reduce", op.code(), s, layout, &view, outs, r, s.dtype)
}

/// Sum over the first `k` dims of a contiguous tensor: coalesced column sums in two
/// deterministic passes (the bias-gradient shape).
fn column_sums(s: &CudaStorage, layout: &Layout, k: usize) -> Result<CudaStorage> {
    let rows: usize = layout.shape()[..k].iter().product();
    let cols: usize = layout.shape()[k..].iter().product();
    let out = CudaStorage::alloc(&s.dev, s.dtype, cols)?;
    if cols == 0 {
        return Ok(out);
    }
    let acc = if s.dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    // Chunks of at least 256 rows, and at most 65535 of them (the grid's y limit).
    let per_chunk = rows.div_ceil(65535).max(256);
    let chunks = rows.div_ceil(per_chunk).max(1);
    let partials = super::full(&s.dev, acc, chunks * cols, 0.0)?;
    let (x, pp, r64, c64, rpc, ch64) = (
        s.ptr(layout.offset()),
        partials.ptr(0),
        rows as i64,
        cols as i64,
        per_chunk as i64,
        chunks as i64,
    );
    if rows > 0 {
        let grid = cudarc::driver::LaunchConfig {
            grid_dim: (cols.div_ceil(32) as u32, chunks as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(@cfg s.dev, "reduce", format!("colsum_partial_{}", suffix(s.dtype)), grid, &x, &pp, &r64, &c64, &rpc);
    }
    let y = out.ptr(0);
    launch!(
        s.dev,
        "reduce",
        format!("colsum_finish_{}", suffix(s.dtype)),
        cols,
        &pp,
        &y,
        &ch64,
        &c64
    );
    Ok(out)
}

/// Index (i64) of the largest or smallest element along `dim`.
pub fn arg_reduce(s: &CudaStorage, layout: &Layout, dim: usize, max: bool) -> Result<CudaStorage> {
    float_only("argmax", s.dtype)?;
    let (view, outs, r) = layout.reduced_view(&[dim])?;
    if r == 0 {
        return Err(Error::invalid(
            "argmax",
            format!("dim {dim} of shape {:?} is empty", layout.shape()),
        ));
    }
    launch_over_view(
        "argreduce",
        max as i32,
        s,
        layout,
        &view,
        outs,
        r,
        DType::I64,
    )
}

/// Rows at most this long are arg-reduced by one thread each.
const SHORT_ROW: usize = 16;

/// Launches `{prefix}_{dtype}(code, x, view, y, outs, r)`: one warp per output.
#[allow(clippy::too_many_arguments)]
fn launch_over_view(
    prefix: &str,
    code: i32,
    s: &CudaStorage,
    layout: &Layout,
    view: &Layout,
    outs: usize,
    r: usize,
    out_dtype: DType,
) -> Result<CudaStorage> {
    let out = CudaStorage::alloc(&s.dev, out_dtype, outs)?;
    if outs > 0 {
        let (x, v, y, o64, r64) = (
            s.ptr(layout.offset()),
            Strided::of(view)?,
            out.ptr(0),
            outs as i64,
            r as i64,
        );
        // A few long rows: a block of 1024 threads per output instead of one warp.
        if r >= 4096 && outs <= 1024 {
            let cfg = cudarc::driver::LaunchConfig {
                grid_dim: (outs as u32, 1, 1),
                block_dim: (1024, 1, 1),
                shared_mem_bytes: 0,
            };
            let name = format!("{prefix}_block_{}", suffix(s.dtype));
            launch!(@cfg s.dev, "reduce", name, cfg, &code, &x, &v, &y, &o64, &r64);
            return Ok(out);
        }
        // Short rows of an arg-reduction (pooling windows): a thread per output.
        if prefix == "argreduce" && r <= SHORT_ROW {
            let name = format!("{prefix}_short_{}", suffix(s.dtype));
            launch!(s.dev, "reduce", name, outs, &code, &x, &v, &y, &o64, &r64);
            return Ok(out);
        }
        launch!(
            s.dev,
            "reduce",
            format!("{prefix}_{}", suffix(s.dtype)),
            outs * 32,
            &code,
            &x,
            &v,
            &y,
            &o64,
            &r64
        );
    }
    Ok(out)
}
