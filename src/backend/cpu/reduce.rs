//! Reductions over dimensions: sum, max, min, argmax, argmin.

use super::real::Real;
use super::{map_float, par_fill, CpuStorage};
use crate::backend::ReduceOp;
use crate::{Error, Layout, Result};

fn reduce_typed<T: Real>(src: &[T], view: &Layout, outs: usize, r: usize, op: ReduceOp) -> Vec<T> {
    let mut out = vec![T::ZERO; outs];
    par_fill(&mut out, |start, chunk| {
        for (i, o) in chunk.iter_mut().enumerate() {
            let base = (start + i) * r;
            *o = match op {
                ReduceOp::Sum => {
                    // Accumulate in f64: exact enough for any size we reduce.
                    let mut acc = 0f64;
                    view.for_each_offset_in(base, r, |off| acc += src[off].to_f64());
                    T::from_f64(acc)
                }
                ReduceOp::Max => {
                    let mut acc = T::neg_infinity();
                    view.for_each_offset_in(base, r, |off| acc = acc.max(src[off]));
                    acc
                }
                ReduceOp::Min => {
                    let mut acc = T::infinity();
                    view.for_each_offset_in(base, r, |off| acc = acc.min(src[off]));
                    acc
                }
            };
        }
    });
    out
}

/// Reduces over `dims` (sorted, unique); the result is contiguous with the kept dims in
/// order (callers reshape to keepdim or squeezed shapes).
pub fn reduce(s: &CpuStorage, layout: &Layout, dims: &[usize], op: ReduceOp) -> Result<CpuStorage> {
    let is_prefix = dims.iter().enumerate().all(|(i, &d)| i == d);
    if op == ReduceOp::Sum && is_prefix && layout.is_contiguous() && !dims.is_empty() {
        return Ok(map_float!("reduce", s, |v| sum_leading(
            v,
            layout,
            dims.len()
        )));
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
    Ok(map_float!("reduce", s, |v| reduce_typed(
        v, &view, outs, r, op
    )))
}

/// Sum over the first `k` dims of a contiguous tensor: adds whole rows, in f64.
fn sum_leading<T: Real>(src: &[T], layout: &Layout, k: usize) -> Vec<T> {
    let cols: usize = layout.shape()[k..].iter().product();
    let rows: usize = layout.shape()[..k].iter().product();
    let data = &src[layout.offset()..layout.offset() + rows * cols];
    let mut acc = vec![0f64; cols];
    if cols > 0 {
        for row in data.chunks_exact(cols) {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += x.to_f64();
            }
        }
    }
    acc.into_iter().map(T::from_f64).collect()
}

fn arg_typed<T: Real>(src: &[T], view: &Layout, outs: usize, r: usize, max: bool) -> Vec<i64> {
    let mut out = vec![0i64; outs];
    par_fill(&mut out, |start, chunk| {
        for (i, o) in chunk.iter_mut().enumerate() {
            let mut best = if max {
                T::neg_infinity()
            } else {
                T::infinity()
            };
            let mut best_j = 0i64;
            let mut j = 0i64;
            let mut found_nan = false;
            view.for_each_offset_in((start + i) * r, r, |off| {
                let x = src[off];
                if !found_nan && (x.is_nan() || (max && x > best) || (!max && x < best)) {
                    best = x;
                    best_j = j;
                    found_nan = x.is_nan();
                }
                j += 1;
            });
            *o = best_j;
        }
    });
    out
}

/// Index of the largest (or smallest) element along `dim`, as i64; the first one wins ties
/// and a NaN counts as the extreme.
pub fn arg_reduce(s: &CpuStorage, layout: &Layout, dim: usize, max: bool) -> Result<CpuStorage> {
    let (view, outs, r) = layout.reduced_view(&[dim])?;
    if r == 0 {
        return Err(Error::invalid(
            "argmax",
            format!("dim {dim} of shape {:?} is empty", layout.shape()),
        ));
    }
    let idx = match s {
        CpuStorage::F64(v) => arg_typed(v, &view, outs, r, max),
        CpuStorage::F32(v) => arg_typed(v, &view, outs, r, max),
        CpuStorage::F16(v) => arg_typed(&super::widen(v), &view, outs, r, max),
        CpuStorage::BF16(v) => arg_typed(&super::widen(v), &view, outs, r, max),
        other => {
            return Err(Error::UnsupportedDType {
                op: "argmax",
                dtype: other.dtype(),
            })
        }
    };
    Ok(CpuStorage::I64(idx))
}
