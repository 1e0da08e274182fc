//! Batch normalisation's fused passes (kernels in `kernels/batch_norm.cu`) over images held
//! channels-last (`[M, C]`, channels contiguous): per-channel sums split over slices of
//! rows, and the per-channel affine map that gives both the output and the input gradient.

use super::storage::suffix;
use super::{launch, launch_config, CudaStorage};
use crate::backend::View;
use crate::{DType, Layout, Result};
use cudarc::driver::LaunchConfig;

/// Channels per block of the sums kernel (`CS_CH`) and row lanes (`CS_ROWS`).
const CHANNELS_PER_BLOCK: usize = 32;
const ROW_LANES: u32 = 8;
/// Blocks the sums kernel aims for: four per SM of a 132-SM GPU.
const TARGET_BLOCKS: usize = 528;

/// `(M, C)` of a contiguous `[M, C]` operand in a dtype the kernels take.
fn rows(s: &CudaStorage, l: &Layout) -> Option<(usize, usize)> {
    let ok = matches!(s.dtype, DType::F32 | DType::F16 | DType::BF16)
        && l.rank() == 2
        && l.is_contiguous();
    ok.then(|| (l.shape()[0], l.shape()[1]))
}

/// Whether `v` is a contiguous f32 `[channels]` vector.
fn channel_vector((v, l): (&CudaStorage, &Layout), channels: usize) -> bool {
    v.dtype == DType::F32 && l.shape() == [channels] && l.is_contiguous()
}

/// See [`crate::backend::BackendStorage::channel_sums`].
pub fn channel_sums(
    x: &CudaStorage,
    lx: &Layout,
    grad: Option<(&CudaStorage, &Layout)>,
    center: (&CudaStorage, &Layout),
) -> Result<Option<(CudaStorage, Layout)>> {
    let Some((m, c)) = rows(x, lx) else {
        return Ok(None);
    };
    if !channel_vector(center, c)
        || grad.is_some_and(|(g, lg)| {
            g.dtype != x.dtype || lg.shape() != lx.shape() || !lg.is_contiguous()
        })
        || m == 0
        || c == 0
    {
        return Ok(None);
    }
    let column_blocks = c.div_ceil(CHANNELS_PER_BLOCK);
    let wanted = (TARGET_BLOCKS / column_blocks).clamp(1, 65535);
    let per_split = m.div_ceil(wanted).max(1);
    let splits = m.div_ceil(per_split);
    let out = CudaStorage::alloc(&x.dev, DType::F32, 2 * splits * c)?;
    let cfg = LaunchConfig {
        grid_dim: (column_blocks as u32, splits as u32, 1),
        block_dim: (CHANNELS_PER_BLOCK as u32, ROW_LANES, 1),
        shared_mem_bytes: 0,
    };
    let (xp, gp, cp, op) = (
        x.ptr(lx.offset()),
        grad.map_or(0, |(g, lg)| g.ptr(lg.offset())),
        center.0.ptr(center.1.offset()),
        out.ptr(0),
    );
    let (m64, c32, per64) = (m as i64, c as i32, per_split as i64);
    let name = format!("channel_sums_{}", suffix(x.dtype));
    launch!(@cfg x.dev, "batch_norm", name, cfg, &xp, &gp, &m64, &c32, &cp, &per64, &op);
    Ok(Some((out, Layout::contiguous(&[2, splits, c]))))
}

/// See [`crate::backend::BackendStorage::channel_affine`].
pub fn channel_affine(
    x: &CudaStorage,
    lx: &Layout,
    grad: Option<(View<'_, CudaStorage>, View<'_, CudaStorage>)>,
    mean: (&CudaStorage, &Layout),
    beta: (&CudaStorage, &Layout),
    gamma: (&CudaStorage, &Layout),
) -> Result<Option<CudaStorage>> {
    let Some((m, c)) = rows(x, lx) else {
        return Ok(None);
    };
    let vectors_ok = [mean, beta, gamma]
        .into_iter()
        .all(|v| channel_vector(v, c))
        && grad.is_none_or(|((g, lg), alpha)| {
            g.dtype == x.dtype
                && lg.shape() == lx.shape()
                && lg.is_contiguous()
                && channel_vector(alpha, c)
        });
    if !vectors_ok {
        return Ok(None);
    }
    let out = CudaStorage::alloc(&x.dev, x.dtype, m * c)?;
    if m * c == 0 {
        return Ok(Some(out));
    }
    let ptr = |(s, l): (&CudaStorage, &Layout)| s.ptr(l.offset());
    let (gp, ap) = grad.map_or((0, 0), |(g, a)| (ptr(g), ptr(a)));
    let (xp, mp, bp, cp, op) = (ptr((x, lx)), ptr(mean), ptr(beta), ptr(gamma), out.ptr(0));
    let (m64, c32) = (m as i64, c as i32);
    // 16 bytes per access where every row is a whole number of aligned vectors.
    let width = 16 / x.dtype.size_in_bytes();
    let vector = c.is_multiple_of(width) && [xp, gp, op].iter().all(|p| p % 16 == 0);
    let (name, threads) = if vector {
        (
            format!("channel_affine_vec_{}", suffix(x.dtype)),
            m * c / width,
        )
    } else {
        (format!("channel_affine_{}", suffix(x.dtype)), m * c)
    };
    launch!(@cfg x.dev, "batch_norm", name, launch_config(threads),
        &xp, &gp, &m64, &c32, &mp, &ap, &bp, &cp, &op);
    Ok(Some(out))
}
