//! Dense matrix-vector products for decoding (kernel in `kernels/gemv.cu`): `x [m, k]
//! @ w[n, k]^T` for m <= 8 with bias, tanh-GELU and a residual applied in the same pass,
//! in one launch whose host cost is a plain kernel launch.

use super::storage::suffix;
use super::{launch, CudaStorage};
use crate::{DType, Layout, Result};
use cudarc::driver::LaunchConfig;

/// Most activation rows one launch takes (`GEMV_MAX_M`).
pub const GEMV_MAX_ROWS: usize = 8;

/// A norm applied to x's rows inside the product: layer norm (gamma and beta) or RMS norm
/// (gamma only), each `[k]`.
pub type GemvNorm<'a> = crate::backend::interface::GemvNorm<'a, CudaStorage>;

/// `gelu?(norm?(x) @ w^T + bias) + residual` into a new `[m, n]`, or `None` when the
/// operands do not suit the kernel (more than 8 rows, non-contiguous rows, misaligned,
/// other dtypes).
#[allow(clippy::too_many_arguments)]
pub fn gemv(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    residual: Option<(&CudaStorage, &Layout)>,
    gelu: bool,
    norm: Option<GemvNorm<'_>>,
) -> Result<Option<CudaStorage>> {
    let dtype = x.dtype;
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) || w.dtype != dtype {
        return Ok(None);
    }
    if lx.rank() != 2 || lw.rank() != 2 || !lx.is_contiguous() || !lw.is_contiguous() {
        return Ok(None);
    }
    let (m, k, n) = (lx.shape()[0], lx.shape()[1], lw.shape()[0]);
    let per16 = 16 / dtype.size_in_bytes();
    if m == 0 || m > GEMV_MAX_ROWS || lw.shape()[1] != k || k == 0 || !k.is_multiple_of(per16) {
        return Ok(None);
    }
    if n == 0 || k > i32::MAX as usize {
        return Ok(None);
    }
    let ok = |s: &CudaStorage, l: &Layout, shape: &[usize]| {
        s.dtype == dtype && l.is_contiguous() && l.shape() == shape
    };
    if bias.is_some_and(|(b, lb)| !ok(b, lb, &[n]))
        || residual.is_some_and(|(r, lr)| !ok(r, lr, &[m, n]))
    {
        return Ok(None);
    }
    let (xp, wp) = (x.ptr(lx.offset()), w.ptr(lw.offset()));
    if xp % 16 != 0 || wp % 16 != 0 {
        return Ok(None);
    }
    let (norm_code, gp, betap, eps) = match &norm {
        None => (0i32, 0u64, 0u64, 0f32),
        Some(nm) => {
            let (g, lg) = nm.gamma;
            if !ok(g, lg, &[k]) || nm.beta.is_some_and(|(b, lb)| !ok(b, lb, &[k])) {
                return Ok(None);
            }
            if nm.rms == nm.beta.is_some() {
                return Ok(None);
            }
            let gp = g.ptr(lg.offset());
            let bp = nm.beta.map_or(0u64, |(b, lb)| b.ptr(lb.offset()));
            if gp % 16 != 0 || bp % 16 != 0 {
                return Ok(None);
            }
            (if nm.rms { 2 } else { 1 }, gp, bp, nm.eps)
        }
    };
    let bp = bias.map_or(0u64, |(b, lb)| b.ptr(lb.offset()));
    let rp = residual.map_or(0u64, |(r, lr)| r.ptr(lr.offset()));
    let out = CudaStorage::alloc(&x.dev, dtype, m * n)?;
    let yp = out.ptr(0);
    let warps = 8usize;
    // x is staged in shared memory as f32: at most 48 KiB without opting in.
    let staged = m * k * 4;
    if staged > 48 * 1024 {
        return Ok(None);
    }
    let split = row_split(k, 16 / dtype.size_in_bytes());
    let split32 = split as i32;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(warps / split) as u32, 1, 1),
        block_dim: (32 * warps as u32, 1, 1),
        shared_mem_bytes: staged as u32,
    };
    let (ldx, ldr, ldy, n64) = (k as i64, n as i64, n as i64, n as i64);
    let (k32, m32, g32) = (k as i32, m as i32, gelu as i32);
    launch!(@dependent x.dev, "gemv", format!("gemv_{}", suffix(dtype)), cfg,
        &wp, &xp, &ldx, &bp, &rp, &ldr, &yp, &ldy, &n64, &k32, &m32, &g32, &norm_code, &gp,
        &betap, &eps, &split32);
    Ok(Some(out))
}

/// Warps sharing one output row: enough that no lane needs more than about six 16-byte
/// packs of a row of `k` (1, 2 or 4 warps), so long rows are read with as many loads in
/// flight as short ones.
fn row_split(k: usize, per_pack: usize) -> usize {
    let packs = k.div_ceil(32 * per_pack);
    match packs / 6 {
        0 | 1 => 1,
        2 | 3 => 2,
        _ => 4,
    }
}
