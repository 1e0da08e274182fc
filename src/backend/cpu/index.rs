//! Indexing kernels: index_select (embedding), index_add, gather, scatter_add, concat.

use super::{contiguous_cow, map_any, map_float, map_float2, CpuStorage};
use crate::{Error, Layout, Result};

/// Checks every index against the size of the indexed dimension.
fn check_indices(op: &'static str, ids: &[i64], size: usize) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= size) {
        return Err(Error::invalid(
            op,
            format!("index {bad} is out of range for a dimension of size {size}"),
        ));
    }
    Ok(())
}

/// (outer, dim size, inner) of a shape split around `dim`.
fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    let outer = shape[..dim].iter().product();
    let inner = shape[dim + 1..].iter().product();
    (outer, shape[dim], inner)
}

/// Picks entries `ids` along `dim`: the output's `dim` has `ids.len()` entries.
pub fn index_select(
    s: &CpuStorage,
    layout: &Layout,
    dim: usize,
    ids: &[i64],
) -> Result<CpuStorage> {
    let (outer, size, inner) = split_at_dim(layout.shape(), dim);
    check_indices("index_select", ids, size)?;
    Ok(map_any!(s, |v| {
        let src = contiguous_cow(v, layout);
        let mut out = Vec::with_capacity(outer * ids.len() * inner);
        for o in 0..outer {
            for &i in ids {
                let start = (o * size + i as usize) * inner;
                out.extend_from_slice(&src[start..start + inner]);
            }
        }
        out
    }))
}

/// Adds rows of `src` (shape of the output with `dim` of size `ids.len()`) into a zero
/// buffer of `out_shape` at positions `ids` along `dim`; repeated ids accumulate.
pub fn index_add_zeros(
    src: &CpuStorage,
    src_layout: &Layout,
    out_shape: &[usize],
    dim: usize,
    ids: &[i64],
) -> Result<CpuStorage> {
    let (outer, size, inner) = split_at_dim(out_shape, dim);
    check_indices("index_add", ids, size)?;
    Ok(map_float!("index_add", src, |v| {
        let g = contiguous_cow(v, src_layout);
        let mut out = vec![Default::default(); outer * size * inner];
        for o in 0..outer {
            for (j, &i) in ids.iter().enumerate() {
                let dst = (o * size + i as usize) * inner;
                let from = (o * ids.len() + j) * inner;
                for (d, &x) in out[dst..dst + inner].iter_mut().zip(&g[from..from + inner]) {
                    *d += x;
                }
            }
        }
        out
    }))
}

/// Multi-index helpers for gather / scatter over contiguous row-major shapes.
fn position_to_src(
    pos: usize,
    shape: &[usize],
    dim: usize,
    idx: usize,
    src_shape: &[usize],
) -> usize {
    // Decompose `pos` in `shape`, replace coordinate `dim` by `idx`, recompose in `src_shape`.
    let mut rem = pos;
    let mut coords = vec![0usize; shape.len()];
    for d in (0..shape.len()).rev() {
        coords[d] = rem % shape[d];
        rem /= shape[d];
    }
    coords[dim] = idx;
    coords
        .iter()
        .zip(src_shape)
        .fold(0usize, |acc, (&c, &n)| acc * n + c)
}

/// `out[p] = src[p with coordinate dim replaced by index[p]]`; out has the index's shape.
pub fn gather(
    s: &CpuStorage,
    layout: &Layout,
    dim: usize,
    index: &[i64],
    index_shape: &[usize],
) -> Result<CpuStorage> {
    let size = layout.shape()[dim];
    check_indices("gather", index, size)?;
    Ok(map_any!(s, |v| {
        let src = contiguous_cow(v, layout);
        index
            .iter()
            .enumerate()
            .map(|(p, &i)| src[position_to_src(p, index_shape, dim, i as usize, layout.shape())])
            .collect()
    }))
}

/// A copy of `dst` with `src[p]` added at `p with coordinate dim replaced by index[p]`.
pub fn scatter_add(
    dst: &CpuStorage,
    dst_layout: &Layout,
    dim: usize,
    index: &[i64],
    index_shape: &[usize],
    src: &CpuStorage,
    src_layout: &Layout,
) -> Result<CpuStorage> {
    let size = dst_layout.shape()[dim];
    check_indices("scatter_add", index, size)?;
    Ok(map_float2!("scatter_add", dst, src, |d, s| {
        let mut out = contiguous_cow(d, dst_layout).into_owned();
        let s = contiguous_cow(s, src_layout);
        for (p, &i) in index.iter().enumerate() {
            out[position_to_src(p, index_shape, dim, i as usize, dst_layout.shape())] += s[p];
        }
        out
    }))
}

/// Concatenates inputs (same dtype, same shape except `dim`) along `dim`.
pub fn cat(
    parts: &[(&CpuStorage, &Layout)],
    dim: usize,
    out_shape: &[usize],
) -> Result<CpuStorage> {
    let (outer, total, inner) = split_at_dim(out_shape, dim);
    let first = parts[0].0;
    for (s, _) in parts {
        if s.dtype() != first.dtype() {
            return Err(Error::DTypeMismatch {
                op: "cat",
                lhs: first.dtype(),
                rhs: s.dtype(),
            });
        }
    }
    macro_rules! go {
        ($variant:ident) => {{
            let mut out = vec![Default::default(); outer * total * inner];
            let mut at = 0usize;
            for (s, l) in parts {
                let CpuStorage::$variant(v) = s else {
                    return Err(Error::invalid("cat", "inputs have different dtypes"));
                };
                let src = contiguous_cow(v, l);
                let width = l.shape()[dim] * inner;
                for o in 0..outer {
                    let dst = o * total * inner + at * inner;
                    out[dst..dst + width].copy_from_slice(&src[o * width..(o + 1) * width]);
                }
                at += l.shape()[dim];
            }
            CpuStorage::$variant(out)
        }};
    }
    Ok(match first {
        CpuStorage::F64(_) => go!(F64),
        CpuStorage::F32(_) => go!(F32),
        CpuStorage::F16(_) => go!(F16),
        CpuStorage::BF16(_) => go!(BF16),
        CpuStorage::I64(_) => go!(I64),
        CpuStorage::U32(_) => go!(U32),
        CpuStorage::U8(_) => go!(U8),
    })
}
