//! Reductions on CUDA: sum, max, min over dims, argmax and argmin.

use super::storage::{suffix, Strided};
use super::{launch, CudaStorage};
use crate::backend::ReduceOp;
use crate::{DType, Error, Layout, Result};

/// Kept dims first, reduced dims last: (view, outputs, elements per output).
fn reduced_view(layout: &Layout, dims: &[usize]) -> Result<(Layout, usize, usize)> {
    let mut perm: Vec<usize> = (0..layout.rank()).filter(|d| !dims.contains(d)).collect();
    perm.extend_from_slice(dims);
    let view = layout.permute(&perm)?;
    let r: usize = dims.iter().map(|&d| layout.shape()[d]).product();
    let outs: usize = (0..layout.rank())
        .filter(|d| !dims.contains(d))
        .map(|d| layout.shape()[d])
        .product();
    Ok((view, outs, r))
}

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
    let (view, outs, r) = reduced_view(layout, dims)?;
    if r == 0 && op != ReduceOp::Sum {
        return Err(Error::invalid(
            "reduce",
            format!(
                "cannot take max/min over an empty dim of shape {:?}",
                layout.shape()
            ),
        ));
    }
    let out = CudaStorage::alloc(&s.dev, s.dtype, outs)?;
    if outs > 0 {
        let code: i32 = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        let (x, v, y, o64, r64) = (
            s.ptr(layout.offset()),
            Strided::of(&view)?,
            out.ptr(0),
            outs as i64,
            r as i64,
        );
        launch!(
            s.dev,
            "reduce",
            format!("reduce_{}", suffix(s.dtype)),
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

/// Index (i64) of the largest or smallest element along `dim`.
pub fn arg_reduce(s: &CudaStorage, layout: &Layout, dim: usize, max: bool) -> Result<CudaStorage> {
    float_only("argmax", s.dtype)?;
    let (view, outs, r) = reduced_view(layout, &[dim])?;
    if r == 0 {
        return Err(Error::invalid(
            "argmax",
            format!("dim {dim} of shape {:?} is empty", layout.shape()),
        ));
    }
    let out = CudaStorage::alloc(&s.dev, DType::I64, outs)?;
    if outs > 0 {
        let code = max as i32;
        let (x, v, y, o64, r64) = (
            s.ptr(layout.offset()),
            Strided::of(&view)?,
            out.ptr(0),
            outs as i64,
            r as i64,
        );
        launch!(
            s.dev,
            "reduce",
            format!("argreduce_{}", suffix(s.dtype)),
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
