//! Elementwise ops on CUDA: unary, binary, comparisons, where, fill, copies and casts.

use super::storage::{suffix, Strided};
use super::{launch, CudaDevice, CudaStorage};
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{DType, Error, Layout, Result};
use std::sync::Arc;

/// The kernel's op code and parameters (codes from the one declaration in `op_kinds`).
fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    let (p0, p1) = op.params();
    (op.kind().code(), p0, p1)
}

fn binary_code(op: BinaryOp) -> i32 {
    op.code()
}

fn cmp_code(op: CmpOp) -> i32 {
    op.code()
}

fn check_float(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype })
    }
}

fn same_device(a: &CudaStorage, b: &CudaStorage) -> Result<()> {
    if Arc::ptr_eq(&a.dev, &b.dev) {
        Ok(())
    } else {
        Err(Error::invalid("cuda", "inputs are on different GPUs"))
    }
}

/// Whether an input can take the packed path (`*_vec_*` kernels, eight elements per
/// 16-byte move): f32, f16 or bf16, contiguous, starting on a 16-byte boundary.
fn vec_ok(s: &CudaStorage, layout: &Layout) -> bool {
    matches!(s.dtype, DType::F32 | DType::F16 | DType::BF16)
        && layout.is_contiguous()
        && (layout.offset() * s.dtype.size_in_bytes()).is_multiple_of(16)
        && layout.numel() > 0
}

/// A unary float op; contiguous result.
pub fn unary(s: &CudaStorage, layout: &Layout, op: UnaryOp) -> Result<CudaStorage> {
    check_float("unary", s.dtype)?;
    let n = layout.numel();
    let out = CudaStorage::alloc(&s.dev, s.dtype, n)?;
    if vec_ok(s, layout) {
        let (code, p0, p1) = unary_code(op);
        let (x, y, n64) = (s.ptr(layout.offset()), out.ptr(0), n as i64);
        launch!(
            s.dev,
            "elementwise",
            format!("unary_vec_{}", suffix(s.dtype)),
            n.div_ceil(8),
            &code,
            &x,
            &y,
            &n64,
            &p0,
            &p1
        );
    } else if n > 0 {
        let (code, p0, p1) = unary_code(op);
        let (x, lx, y, n64) = (
            s.ptr(layout.offset()),
            Strided::of(layout)?,
            out.ptr(0),
            n as i64,
        );
        launch!(
            s.dev,
            "elementwise",
            format!("unary_{}", suffix(s.dtype)),
            n,
            &code,
            &x,
            &lx,
            &y,
            &n64,
            &p0,
            &p1
        );
    }
    Ok(out)
}

/// Launches `{prefix}_{dtype}(op, a, la, b, lb, out, n)` over two same-shape inputs.
fn two_inputs(
    prefix: &str,
    code: i32,
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    out_dtype: DType,
) -> Result<CudaStorage> {
    same_device(a, b)?;
    let n = la.numel();
    let out = CudaStorage::alloc(&a.dev, out_dtype, n)?;
    if n > 0 {
        let (pa, sa, pb, sb) = (
            a.ptr(la.offset()),
            Strided::of(la)?,
            b.ptr(lb.offset()),
            Strided::of(lb)?,
        );
        let (y, n64) = (out.ptr(0), n as i64);
        launch!(
            a.dev,
            "elementwise",
            format!("{prefix}_{}", suffix(a.dtype)),
            n,
            &code,
            &pa,
            &sa,
            &pb,
            &sb,
            &y,
            &n64
        );
    }
    Ok(out)
}

/// A binary float op on same-shape inputs (any strides); contiguous result.
pub fn binary(
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    op: BinaryOp,
) -> Result<CudaStorage> {
    check_float("binary", a.dtype)?;
    if a.dtype == b.dtype && vec_ok(a, la) && vec_ok(b, lb) {
        same_device(a, b)?;
        let n = la.numel();
        let out = CudaStorage::alloc(&a.dev, a.dtype, n)?;
        let code = binary_code(op);
        let (pa, pb, y, n64) = (a.ptr(la.offset()), b.ptr(lb.offset()), out.ptr(0), n as i64);
        launch!(
            a.dev,
            "elementwise",
            format!("binary_vec_{}", suffix(a.dtype)),
            n.div_ceil(8),
            &code,
            &pa,
            &pb,
            &y,
            &n64
        );
        return Ok(out);
    }
    two_inputs("binary", binary_code(op), a, la, b, lb, a.dtype)
}

/// Elementwise comparison into a u8 mask.
pub fn cmp(
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    op: CmpOp,
) -> Result<CudaStorage> {
    two_inputs("cmp", cmp_code(op), a, la, b, lb, DType::U8)
}

/// `cond ? a : b` on same-shape inputs.
pub fn where_cond(
    c: &CudaStorage,
    lc: &Layout,
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
) -> Result<CudaStorage> {
    check_float("where_cond", a.dtype)?;
    same_device(a, b)?;
    same_device(a, c)?;
    if c.dtype != DType::U8 {
        return Err(Error::UnsupportedDType {
            op: "where_cond (condition must be u8)",
            dtype: c.dtype,
        });
    }
    let n = la.numel();
    let out = CudaStorage::alloc(&a.dev, a.dtype, n)?;
    if n > 0 {
        let (pc, sc) = (c.ptr(lc.offset()), Strided::of(lc)?);
        let (pa, sa, pb, sb, y, n64) = (
            a.ptr(la.offset()),
            Strided::of(la)?,
            b.ptr(lb.offset()),
            Strided::of(lb)?,
            out.ptr(0),
            n as i64,
        );
        launch!(
            a.dev,
            "elementwise",
            format!("where_{}", suffix(a.dtype)),
            n,
            &pc,
            &sc,
            &pa,
            &sa,
            &pb,
            &sb,
            &y,
            &n64
        );
    }
    Ok(out)
}

/// `n` copies of `value` (rounded to `dtype`): zeros really are zeros.
pub fn full(dev: &Arc<CudaDevice>, dtype: DType, n: usize, value: f64) -> Result<CudaStorage> {
    let out = CudaStorage::alloc(dev, dtype, n)?;
    if n > 0 {
        let (y, n64) = (out.ptr(0), n as i64);
        launch!(
            dev,
            "elementwise",
            format!("fill_{}", suffix(dtype)),
            n,
            &y,
            &n64,
            &value
        );
    }
    Ok(out)
}

/// The elements under `layout` converted to `dtype`, contiguous (a plain copy when the
/// dtype is unchanged).
pub fn cast(s: &CudaStorage, layout: &Layout, dtype: DType) -> Result<CudaStorage> {
    let n = layout.numel();
    let out = CudaStorage::alloc(&s.dev, dtype, n)?;
    if vec_ok(s, layout) && matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        let name = format!("cast_vec_{}_{}", suffix(s.dtype), suffix(dtype));
        let (x, y, n64) = (s.ptr(layout.offset()), out.ptr(0), n as i64);
        launch!(s.dev, "elementwise", name, n.div_ceil(8), &x, &y, &n64);
    } else if dtype == s.dtype && n > 0 && super::index::octets_ok(layout, dtype.size_in_bytes()) {
        super::index::assign(&out, &Layout::contiguous(layout.shape()), s, layout)?;
    } else if n > 0 {
        let name = if dtype == s.dtype {
            format!("copy_{}", suffix(dtype))
        } else {
            format!("cast_{}_{}", suffix(s.dtype), suffix(dtype))
        };
        let (x, lx, y, n64) = (
            s.ptr(layout.offset()),
            Strided::of(layout)?,
            out.ptr(0),
            n as i64,
        );
        launch!(s.dev, "elementwise", name, n, &x, &lx, &y, &n64);
    }
    Ok(out)
}

/// A contiguous copy of the elements under `layout`.
pub fn copy_contiguous(s: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
    cast(s, layout, s.dtype)
}

/// Host microseconds per kernel launch with nothing around it: `iters` launches of the fill
/// kernel on one element, the function looked up once. The floor under smith's per-op cost.
pub fn bare_launch_us(dev: &Arc<CudaDevice>, iters: usize) -> Result<f64> {
    use cudarc::driver::PushKernelArg;
    let out = CudaStorage::alloc(dev, DType::F32, 1)?;
    let f = dev.function("elementwise", "fill_f32")?;
    let (y, n64, value) = (out.ptr(0), 1i64, 0.0f64);
    let cfg = super::launch_config(1);
    dev.synchronize()?;
    let start = std::time::Instant::now();
    for _ in 0..iters {
        let mut builder = dev.stream.launch_builder(&f);
        builder.arg(&y).arg(&n64).arg(&value);
        // SAFETY: fill_f32(float* y, long long n, double value) on a one-element buffer.
        unsafe { builder.launch(cfg) }.map_err(|e| super::cuda_err("kernel launch", e))?;
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / iters.max(1) as f64;
    dev.synchronize()?;
    Ok(us)
}
