//! Quantized ggml matrices on CUDA, read in place (kernels in `kernels/quant.cu`): a
//! matrix-vector product for a few activation rows, and rows dequantized into a buffer.

use super::storage::suffix;
use super::{cast, launch, CudaStorage};
use crate::ggml_types::GgmlType;
use crate::{DType, Error, Layout, Result};
use cudarc::driver::LaunchConfig;

/// Most activation rows one `qgemv` launch takes (`QGEMV_MAX_M` in the kernel).
pub const QGEMV_MAX_ROWS: usize = 8;

/// The kernel name part of a quantized type (`None` for F32/F16/BF16, which are dense).
pub fn quant_kernel_name(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q2K => "q2_k",
        GgmlType::Q3K => "q3_k",
        GgmlType::Q4K => "q4_k",
        GgmlType::Q5K => "q5_k",
        GgmlType::Q6K => "q6_k",
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => return None,
    })
}

fn kernel(prefix: &str, ty: GgmlType, dtype: DType) -> Result<String> {
    let q = quant_kernel_name(ty).ok_or_else(|| {
        Error::invalid(
            "quantized matmul",
            format!("{} is not a quantized type", ty.name()),
        )
    })?;
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::UnsupportedDType {
            op: "quantized matmul",
            dtype,
        });
    }
    Ok(format!("{prefix}_{q}_{}", suffix(dtype)))
}

/// The shape of a quantized matrix held in a u8 buffer: `rows` rows of `k` values.
#[derive(Clone, Copy, Debug)]
pub struct QShape {
    pub ty: GgmlType,
    pub rows: usize,
    pub k: usize,
}

impl QShape {
    fn row_bytes(&self) -> usize {
        let (per, bytes) = self.ty.block();
        self.k / per * bytes
    }
}

/// `y[m, col0 + n] = sum_k x[m, k] W[n, k]` for the `m <= 8` rows of a contiguous
/// `x [m, k]`, into `y` whose rows are `ldy` apart (`y` has x's dtype).
pub fn qgemv(
    w: &CudaStorage,
    shape: QShape,
    x: &CudaStorage,
    lx: &Layout,
    y: &CudaStorage,
    col0: usize,
    ldy: usize,
) -> Result<()> {
    let m = lx.shape()[0];
    if m > QGEMV_MAX_ROWS || !lx.is_contiguous() || lx.shape()[1] != shape.k || y.dtype != x.dtype {
        return Err(Error::invalid(
            "quantized matmul",
            format!("qgemv takes a contiguous [<=8, {}] input", shape.k),
        ));
    }
    let name = kernel("qgemv", shape.ty, x.dtype)?;
    let warps_per_block = 8usize;
    let cfg = LaunchConfig {
        grid_dim: (shape.rows.div_ceil(warps_per_block).max(1) as u32, 1, 1),
        block_dim: (32 * warps_per_block as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (wp, xp, yp) = (w.ptr(0), x.ptr(lx.offset()), y.ptr(col0));
    let (row_bytes, ldx, ldy64, n) = (
        shape.row_bytes() as i64,
        shape.k as i64,
        ldy as i64,
        shape.rows as i64,
    );
    let (k32, m32) = (shape.k as i32, m as i32);
    launch!(@cfg x.dev, "quant", name, cfg, &wp, &row_bytes, &xp, &ldx, &yp, &ldy64, &n, &k32, &m32);
    Ok(())
}

/// Writes `rows` dequantized rows of `W` (row `ids[r]`, or row `r` without ids) into
/// `out` from element `out_offset` on, in `out`'s dtype. Ids out of range read as NaN.
pub fn qrows_into(
    w: &CudaStorage,
    shape: QShape,
    ids: Option<(&CudaStorage, &Layout)>,
    rows: usize,
    out: &CudaStorage,
    out_offset: usize,
) -> Result<()> {
    let name = kernel("qrows", shape.ty, out.dtype)?;
    let ids = ids.map(|(s, l)| cast(s, l, DType::I64)).transpose()?;
    let n = rows * shape.k / 8;
    if n == 0 {
        return Ok(());
    }
    let (wp, ip, op) = (
        w.ptr(0),
        ids.as_ref().map_or(0u64, |s| s.ptr(0)),
        out.ptr(out_offset),
    );
    let (row_bytes, n_src, rows64, k32) = (
        shape.row_bytes() as i64,
        shape.rows as i64,
        rows as i64,
        shape.k as i32,
    );
    launch!(out.dev, "quant", name, n, &wp, &row_bytes, &n_src, &ip, &op, &rows64, &k32);
    Ok(())
}
