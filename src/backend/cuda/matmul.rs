//! Batched matrix multiply through cuBLAS, reading transposed views without copies.

use super::{cuda_err, CudaStorage};
use crate::{DType, Error, Layout, Result};
use cudarc::cublas::sys::{
    cublasComputeType_t as Compute, cublasGemmAlgo_t, cublasOperation_t as Op, cudaDataType as Dt,
};
use std::sync::atomic::{AtomicBool, Ordering};

static TF32: AtomicBool = AtomicBool::new(true);

/// At most this many strided-batched calls per matmul; beyond it operands are copied.
const MAX_OUTER_CALLS: usize = 64;

/// Whether f32 matmuls may use TF32 tensor cores (on by default, as in PyTorch's
/// `allow_tf32` for convolutions; turn it off for full f32 products).
pub fn set_tf32(enabled: bool) {
    TF32.store(enabled, Ordering::Relaxed);
}

/// See [`set_tf32`].
pub fn tf32_enabled() -> bool {
    TF32.load(Ordering::Relaxed)
}

/// How cuBLAS (column-major) can read one row-major matrix operand: `(transposed, ld)`,
/// or `None` when its strides fit neither layout.
fn operand(rows: usize, cols: usize, s_row: usize, s_col: usize) -> Option<(bool, usize)> {
    if cols == 1 || s_col == 1 {
        let ld = if rows == 1 { cols } else { s_row };
        (ld >= cols.max(1)).then_some((false, ld.max(1)))
    } else if rows == 1 || s_row == 1 {
        let ld = if cols == 1 { rows } else { s_col };
        (ld >= rows.max(1)).then_some((true, ld.max(1)))
    } else {
        None
    }
}

/// The single stride between consecutive matrices over the batch dims from `from` on,
/// when there is one.
fn batch_stride(layout: &Layout, from: usize) -> Option<usize> {
    let r = layout.rank();
    let dims: Vec<(usize, usize)> = (from..r - 2)
        .map(|d| (layout.shape()[d], layout.strides()[d]))
        .filter(|(n, _)| *n != 1)
        .collect();
    match dims.as_slice() {
        [] => Some(0),
        [(_, s)] => Some(*s),
        many => {
            for w in many.windows(2) {
                if w[0].1 != w[1].1 * w[1].0 {
                    return None;
                }
            }
            many.last().map(|(_, s)| *s)
        }
    }
}

/// `a @ b` for `[batch.., m, k]` and `[batch.., k, n]` layouts with identical batch dims;
/// the result is contiguous `[batch.., m, n]`. f32 uses TF32 when enabled; f16 and bf16
/// accumulate in f32.
pub fn matmul(a: &CudaStorage, la: &Layout, b: &CudaStorage, lb: &Layout) -> Result<CudaStorage> {
    if a.dtype != b.dtype {
        return Err(Error::DTypeMismatch {
            op: "matmul",
            lhs: a.dtype,
            rhs: b.dtype,
        });
    }
    let r = la.rank();
    let (m, k, n) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
    let batches: usize = la.shape()[..r - 2].iter().product();
    // Operands whose matrix strides cuBLAS cannot express are made contiguous first; so
    // are those whose batch dims need more than MAX_OUTER_CALLS calls (see `split`).
    let outer_calls = |from: usize| la.shape()[..from].iter().product::<usize>();
    let joint = |la: &Layout, lb: &Layout| {
        (0..=r - 2).find(|&from| {
            outer_calls(from) <= MAX_OUTER_CALLS
                && batch_stride(la, from).is_some()
                && batch_stride(lb, from).is_some()
        })
    };
    let fits = |l: &Layout, rows: usize, cols: usize| {
        operand(rows, cols, l.strides()[r - 2], l.strides()[r - 1]).is_some()
    };
    let (mut a_copy, mut b_copy) = (None, None);
    let (mut la, mut lb) = (la.clone(), lb.clone());
    let make_contiguous = |s: &CudaStorage, l: &mut Layout| -> Result<Option<CudaStorage>> {
        let c = super::copy_contiguous(s, l)?;
        *l = Layout::contiguous(l.shape());
        Ok(Some(c))
    };
    if !fits(&la, m, k) {
        a_copy = make_contiguous(a, &mut la)?;
    }
    if !fits(&lb, k, n) {
        b_copy = make_contiguous(b, &mut lb)?;
    }
    if joint(&la, &lb).is_none() {
        if batch_stride(&la, 0).is_none() {
            a_copy = make_contiguous(a_copy.as_ref().unwrap_or(a), &mut la)?;
        }
        if batch_stride(&lb, 0).is_none() {
            b_copy = make_contiguous(b_copy.as_ref().unwrap_or(b), &mut lb)?;
        }
    }
    let a = a_copy.as_ref().unwrap_or(a);
    let b = b_copy.as_ref().unwrap_or(b);
    let out = CudaStorage::alloc(&a.dev, a.dtype, batches * m * n)?;
    if batches * m * n == 0 {
        return Ok(out);
    }
    if k == 0 {
        return super::full(&a.dev, a.dtype, batches * m * n, 0.0);
    }
    let too_big = |v: usize| v > i32::MAX as usize;
    if [m, n, k, batches].into_iter().any(too_big) {
        return Err(Error::invalid(
            "matmul",
            format!("dims {m}x{k}x{n} (batch {batches}) exceed cuBLAS's 32-bit sizes"),
        ));
    }
    let bad = || Error::invalid("matmul", "internal: operand layout not expressible");
    let (ta, lda) = operand(m, k, la.strides()[r - 2], la.strides()[r - 1]).ok_or_else(bad)?;
    let (tb, ldb) = operand(k, n, lb.strides()[r - 2], lb.strides()[r - 1]).ok_or_else(bad)?;
    // Batch dims before `split` are looped over on the host (one strided-batched call
    // each); those from `split` on collapse into one stride. A [B, H, T, d] view of a
    // fused QKV projection needs one call per B instead of a copy.
    let split = joint(&la, &lb).ok_or_else(bad)?;
    let (sa, sb) = (
        batch_stride(&la, split).ok_or_else(bad)?,
        batch_stride(&lb, split).ok_or_else(bad)?,
    );
    let outer_shape = &la.shape()[..split];
    let outer: usize = outer_shape.iter().product();
    let inner = batches / outer.max(1);
    let (dt, compute) = match a.dtype {
        DType::F32 => (
            Dt::CUDA_R_32F,
            if tf32_enabled() {
                Compute::CUBLAS_COMPUTE_32F_FAST_TF32
            } else {
                Compute::CUBLAS_COMPUTE_32F
            },
        ),
        DType::F16 => (Dt::CUDA_R_16F, Compute::CUBLAS_COMPUTE_32F),
        DType::BF16 => (Dt::CUDA_R_16BF, Compute::CUBLAS_COMPUTE_32F),
        DType::F64 => (Dt::CUDA_R_64F, Compute::CUBLAS_COMPUTE_64F),
        other => {
            return Err(Error::UnsupportedDType {
                op: "matmul",
                dtype: other,
            })
        }
    };
    let (one32, zero32, one64, zero64) = (1f32, 0f32, 1f64, 0f64);
    let (alpha, beta): (*const std::ffi::c_void, *const std::ffi::c_void) = if a.dtype == DType::F64
    {
        (
            (&one64 as *const f64).cast(),
            (&zero64 as *const f64).cast(),
        )
    } else {
        (
            (&one32 as *const f32).cast(),
            (&zero32 as *const f32).cast(),
        )
    };
    let op = |t: bool| if t { Op::CUBLAS_OP_T } else { Op::CUBLAS_OP_N };
    let timing = if crate::backend::profile::enabled() {
        Some(a.dev.timing_start()?)
    } else {
        None
    };
    for o in 0..outer.max(1) {
        // Element offsets of this outer batch in A and B, from its multi-index.
        let (mut rest, mut off_a, mut off_b) = (o, la.offset(), lb.offset());
        for d in (0..split).rev() {
            let i = rest % outer_shape[d];
            rest /= outer_shape[d];
            off_a += i * la.strides()[d];
            off_b += i * lb.strides()[d];
        }
        // Row-major C = A B is column-major C^T = B^T A^T: pass B first.
        // SAFETY: pointers, leading dimensions and batch strides describe memory inside
        // the buffers (checked by the layouts), and the output has batches * m * n
        // elements, `inner` of them per outer batch.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *a.dev.blas.handle(),
                op(tb),
                op(ta),
                n as i32,
                m as i32,
                k as i32,
                alpha,
                b.ptr(off_b) as *const std::ffi::c_void,
                dt,
                ldb as i32,
                sb as i64,
                a.ptr(off_a) as *const std::ffi::c_void,
                dt,
                lda as i32,
                sa as i64,
                beta,
                out.ptr(o * inner * m * n) as *mut std::ffi::c_void,
                dt,
                n as i32,
                (m * n) as i64,
                inner as i32,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| cuda_err("matmul", e))?;
    }
    if let Some(start) = timing {
        a.dev
            .timing_end(&format!("cublas_gemm_{}", a.dtype), start)?;
    }
    Ok(out)
}
