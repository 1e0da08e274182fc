//! Indexing on CUDA: index_select (embedding) and its scatter-add backward, strided
//! assignment (concat, in-place loads).

use super::storage::{suffix, Strided};
use super::{cast, launch, CudaStorage};
use crate::{DType, Error, Layout, Result};

fn split_at_dim(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

/// Entries `ids` (any integer dtype, on this GPU) along `dim`; an id out of range reads
/// as NaN instead of touching memory outside the tensor.
pub fn index_select(
    s: &CudaStorage,
    layout: &Layout,
    dim: usize,
    ids: &CudaStorage,
    ids_layout: &Layout,
) -> Result<CudaStorage> {
    let (outer, size, inner) = split_at_dim(layout.shape(), dim);
    let k = ids_layout.numel();
    // Contiguous i64 ids are read in place; anything else is converted first.
    let converted = if ids.dtype == DType::I64 && ids_layout.is_contiguous() {
        None
    } else {
        Some(cast(ids, ids_layout, DType::I64)?)
    };
    let ids_ptr = match &converted {
        Some(c) => c.ptr(0),
        None => ids.ptr(ids_layout.offset()),
    };
    let n = outer * k * inner;
    let out = CudaStorage::alloc(&s.dev, s.dtype, n)?;
    if n > 0 {
        let (sp, ls, ip, op) = (
            s.ptr(layout.offset()),
            Strided::of(layout)?,
            ids_ptr,
            out.ptr(0),
        );
        let (o64, s64, k64, i64_) = (outer as i64, size as i64, k as i64, inner as i64);
        launch!(
            s.dev,
            "index",
            format!("index_select_{}", suffix(s.dtype)),
            n,
            &sp,
            &ls,
            &ip,
            &op,
            &o64,
            &s64,
            &k64,
            &i64_
        );
    }
    Ok(out)
}

/// Adds the rows of `g` into zeros of `out_shape` at positions `ids` along `dim`
/// (f32 atomics; repeated ids accumulate).
pub fn index_add_zeros(
    g: &CudaStorage,
    lg: &Layout,
    out_shape: &[usize],
    dim: usize,
    ids: &CudaStorage,
    ids_layout: &Layout,
) -> Result<CudaStorage> {
    if !matches!(g.dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            op: "index_add",
            dtype: g.dtype,
        });
    }
    let (outer, size, inner) = split_at_dim(out_shape, dim);
    let k = ids_layout.numel();
    let ids = cast(ids, ids_layout, DType::I64)?;
    let acc = super::full(&g.dev, DType::F32, outer * size * inner, 0.0)?;
    let n = outer * k * inner;
    if n > 0 {
        let (gp, lgs, ip, ap) = (g.ptr(lg.offset()), Strided::of(lg)?, ids.ptr(0), acc.ptr(0));
        let (o64, s64, k64, i64_) = (outer as i64, size as i64, k as i64, inner as i64);
        launch!(
            g.dev,
            "index",
            format!("index_add_{}", suffix(g.dtype)),
            n,
            &gp,
            &lgs,
            &ip,
            &ap,
            &o64,
            &s64,
            &k64,
            &i64_
        );
    }
    if g.dtype == DType::F32 {
        Ok(acc)
    } else {
        cast(&acc, &Layout::contiguous(&[outer * size * inner]), g.dtype)
    }
}

/// Whether `layout` can be copied in groups of eight elements of `size` bytes
/// (`assign_oct_b*`): 2-, 4- or 8-byte elements, the innermost dim contiguous and a
/// multiple of eight long, and every group starting on a 16-byte boundary.
pub(crate) fn octets_ok(layout: &Layout, size: usize) -> bool {
    let (shape, strides) = (layout.shape(), layout.strides());
    let Some((&inner, outer)) = shape.split_last() else {
        return false;
    };
    matches!(size, 2 | 4 | 8)
        && strides.last() == Some(&1)
        && inner.is_multiple_of(8)
        && (layout.offset() * size).is_multiple_of(16)
        && outer
            .iter()
            .zip(strides)
            .all(|(&n, &s)| n == 1 || (s * size).is_multiple_of(16))
}

/// Copies the elements under `ls` of `src` into the elements under `ld` of `dst`.
pub fn assign(dst: &CudaStorage, ld: &Layout, src: &CudaStorage, ls: &Layout) -> Result<()> {
    if dst.dtype != src.dtype {
        return Err(Error::DTypeMismatch {
            op: "assign",
            lhs: dst.dtype,
            rhs: src.dtype,
        });
    }
    let n = ld.numel();
    if n > 0 {
        let (sp, lss, dp, lds, n64) = (
            src.ptr(ls.offset()),
            Strided::of(ls)?,
            dst.ptr(ld.offset()),
            Strided::of(ld)?,
            n as i64,
        );
        let size = dst.dtype.size_in_bytes();
        let (name, threads) = if octets_ok(ls, size) && octets_ok(ld, size) {
            (format!("assign_oct_b{size}"), n / 8)
        } else {
            (format!("assign_{}", suffix(dst.dtype)), n)
        };
        launch!(dst.dev, "index", name, threads, &sp, &lss, &dp, &lds, &n64);
    }
    Ok(())
}

/// Concatenates inputs along `dim` into a new contiguous buffer of `out_shape`.
pub fn cat(
    parts: &[(&CudaStorage, &Layout)],
    dim: usize,
    out_shape: &[usize],
) -> Result<CudaStorage> {
    let first = parts[0].0;
    let out = CudaStorage::alloc(&first.dev, first.dtype, out_shape.iter().product())?;
    let whole = Layout::contiguous(out_shape);
    let mut at = 0;
    for (s, l) in parts {
        let len = l.shape()[dim];
        assign(&out, &whole.narrow(dim, at, len)?, s, l)?;
        at += len;
    }
    Ok(out)
}

/// Index shape, strides of the data it addresses, and the sizes around `dim`.
fn gather_geometry(
    index_shape: &[usize],
    strides: Vec<usize>,
    dim: usize,
) -> Result<(Strided, i64, i64)> {
    let view = Strided::of(&Layout::new(index_shape.to_vec(), strides, 0))?;
    let inner: usize = index_shape[dim + 1..].iter().product();
    Ok((view, inner as i64, index_shape[dim] as i64))
}

/// `out[p] = src[p with coordinate dim replaced by index[p]]`; out has the index's shape
/// (an index out of range reads as NaN, never outside the buffer).
pub fn gather(
    s: &CudaStorage,
    layout: &Layout,
    dim: usize,
    index: &CudaStorage,
    index_layout: &Layout,
) -> Result<CudaStorage> {
    if !s.dtype.is_float() {
        return Err(Error::UnsupportedDType {
            op: "gather",
            dtype: s.dtype,
        });
    }
    let idx = cast(index, index_layout, DType::I64)?;
    let n = index_layout.numel();
    let out = CudaStorage::alloc(&s.dev, s.dtype, n)?;
    if n > 0 {
        let (view, inner, dim_len) =
            gather_geometry(index_layout.shape(), layout.strides().to_vec(), dim)?;
        let (sp, ip, op, n64) = (s.ptr(layout.offset()), idx.ptr(0), out.ptr(0), n as i64);
        let (src_len, src_stride) = (layout.shape()[dim] as i64, layout.strides()[dim] as i64);
        launch!(
            s.dev,
            "index",
            format!("gather_{}", suffix(s.dtype)),
            n,
            &sp,
            &view,
            &ip,
            &op,
            &n64,
            &inner,
            &dim_len,
            &src_len,
            &src_stride
        );
    }
    Ok(out)
}

/// A copy of `dst` with `src[p]` added at `p with coordinate dim replaced by index[p]`
/// (accumulated in f32, or f64 for f64 data).
pub fn scatter_add(
    dst: &CudaStorage,
    ld: &Layout,
    dim: usize,
    index: &CudaStorage,
    index_layout: &Layout,
    src: &CudaStorage,
    ls: &Layout,
) -> Result<CudaStorage> {
    let acc_dtype = match dst.dtype {
        DType::F64 => DType::F64,
        DType::F32 | DType::F16 | DType::BF16 => DType::F32,
        other => {
            return Err(Error::UnsupportedDType {
                op: "scatter_add",
                dtype: other,
            })
        }
    };
    let acc = cast(dst, ld, acc_dtype)?;
    let idx = cast(index, index_layout, DType::I64)?;
    let n = index_layout.numel();
    if n > 0 {
        let dst_strides = crate::layout::contiguous_strides(ld.shape());
        let (view, inner, dim_len) =
            gather_geometry(index_layout.shape(), dst_strides.clone(), dim)?;
        let (sp, lss, ip, ap, n64) = (
            src.ptr(ls.offset()),
            Strided::of(ls)?,
            idx.ptr(0),
            acc.ptr(0),
            n as i64,
        );
        let (dst_len, dst_stride) = (ld.shape()[dim] as i64, dst_strides[dim] as i64);
        launch!(
            dst.dev,
            "index",
            format!("scatter_add_{}", suffix(src.dtype)),
            n,
            &sp,
            &lss,
            &ip,
            &ap,
            &view,
            &n64,
            &inner,
            &dim_len,
            &dst_len,
            &dst_stride
        );
    }
    if acc_dtype == dst.dtype {
        Ok(acc)
    } else {
        cast(&acc, &Layout::contiguous(ld.shape()), dst.dtype)
    }
}
