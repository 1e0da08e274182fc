//! Decoding attention on CUDA (kernel in `kernels/attention.cu`): one new query position
//! per sequence against the key/value cache, with the cache append folded in, the keys
//! split over enough blocks to fill the GPU and the splits combined by the last block.

use super::storage::suffix;
use super::{launch, CudaStorage};
use crate::{Error, Layout, Result};
use cudarc::driver::{DevicePtr, LaunchConfig};

/// Head dims the decoding kernel is compiled for.
pub const DECODE_HEAD_DIMS: [usize; 7] = [16, 32, 64, 80, 96, 128, 256];

pub use crate::backend::interface::DecodeShape;

/// The batch stride of a `[B, heads, 1, d]` view whose heads and features are packed
/// (head stride d, feature stride 1), or `None`.
fn batch_stride(l: &Layout, heads: usize, d: usize) -> Option<usize> {
    let (shape, strides) = (l.shape(), l.strides());
    (shape.len() == 4
        && shape[1] == heads
        && shape[2] == 1
        && shape[3] == d
        && (heads == 1 || strides[1] == d)
        && strides[3] == 1)
        .then_some(strides[0])
}

/// `softmax(q k^T * scale) v` for queries `[B, H, 1, d]` over the cached keys and values
/// (`[max_len, B, KVH, d]`, contiguous) plus the new ones `k`, `v` (`[B, KVH, 1, d]`),
/// which it writes into cache slot `len - 1`. Returns `[B, H * d]`, or `None` when a
/// layout does not suit the kernel.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    q: &CudaStorage,
    lq: &Layout,
    k: &CudaStorage,
    lk: &Layout,
    v: &CudaStorage,
    lv: &Layout,
    kc: &CudaStorage,
    vc: &CudaStorage,
    lc: &Layout,
    s: DecodeShape,
) -> Result<Option<CudaStorage>> {
    let dtype = q.dtype;
    if k.dtype != dtype || v.dtype != dtype || kc.dtype != dtype || vc.dtype != dtype {
        return Ok(None);
    }
    let (d, kvh) = (s.head_dim, s.kv_heads);
    let cache_ok = lc.is_contiguous()
        && lc.offset() == 0
        && lc.shape().len() == 4
        && lc.shape()[1] == s.batch
        && lc.shape()[2] == kvh
        && lc.shape()[3] == d
        && s.len >= 1
        && s.len <= lc.shape()[0];
    let strides = (
        batch_stride(lq, s.heads, d),
        batch_stride(lk, kvh, d),
        batch_stride(lv, kvh, d),
    );
    let (Some(qs), Some(ks), Some(vs)) = strides else {
        return Ok(None);
    };
    // 16-byte loads of every row: head dims in whole 16-byte packs, rows aligned.
    let per16 = 16 / dtype.size_in_bytes();
    let aligned = [
        (q.ptr(lq.offset()), qs),
        (k.ptr(lk.offset()), ks),
        (v.ptr(lv.offset()), vs),
        (kc.ptr(0), s.batch * kvh * d),
        (vc.ptr(0), s.batch * kvh * d),
    ]
    .iter()
    .all(|&(p, stride)| p % 16 == 0 && (stride * dtype.size_in_bytes()).is_multiple_of(16));
    if !cache_ok || !DECODE_HEAD_DIMS.contains(&d) || !s.heads.is_multiple_of(kvh) {
        return Ok(None);
    }
    if !d.is_multiple_of(per16) || !aligned {
        return Ok(None);
    }
    if s.batch > 65535 || s.heads > i32::MAX as usize || s.len > i32::MAX as usize {
        return Err(Error::invalid(
            "decode attention",
            format!("{s:?} is too large"),
        ));
    }
    let out = CudaStorage::alloc(&q.dev, dtype, s.batch * s.heads * d)?;
    let plan = split_plan(&s);
    let rows = s.batch * s.heads;
    // Partials [rows, splits, d + 2] and one ticket per row (kept zero between launches);
    // the ticket guard is held until the launch is queued.
    let partial = CudaStorage::alloc(&q.dev, crate::DType::F32, rows * plan.splits * (d + 2))?;
    let tickets = q.dev.decode_tickets(rows)?;
    let tickets_ptr = tickets
        .as_ref()
        .map(|t| t.device_ptr(&q.dev.stream).0)
        .ok_or_else(|| Error::invalid("decode attention", "no ticket buffer"))?;
    let cfg = LaunchConfig {
        grid_dim: (s.heads as u32, s.batch as u32, plan.splits as u32),
        block_dim: (32 * plan.warps as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (qp, kp, vp) = (q.ptr(lq.offset()), k.ptr(lk.offset()), v.ptr(lv.offset()));
    let (kcp, vcp, yp) = (kc.ptr(0), vc.ptr(0), out.ptr(0));
    let (qs, ks, vs) = (qs as i64, ks as i64, vs as i64);
    let (ct, cb) = ((s.batch * kvh * d) as i64, (kvh * d) as i64);
    let (h32, kvh32, len32, win32) = (
        s.heads as i32,
        kvh as i32,
        s.len as i32,
        s.window.min(i32::MAX as usize) as i32,
    );
    let name = format!("decode_attention_d{d}_{}", suffix(dtype));
    let (splits32, pp) = (plan.splits as i32, partial.ptr(0));
    launch!(@dependent q.dev, "attention", name, cfg,
        &qp, &qs, &kp, &ks, &vp, &vs, &kcp, &vcp, &ct, &cb, &yp, &h32, &kvh32, &len32,
        &win32, &s.scale, &splits32, &pp, &tickets_ptr);
    drop(tickets);
    Ok(Some(out))
}

/// How one decoding step is spread: key splits per (row, head) and warps per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    pub splits: usize,
    pub warps: usize,
}

/// Blocks the splits aim for: two per SM of an H100-class GPU.
const TARGET_BLOCKS: usize = 264;
/// Most splits of one row's keys (beyond this a split takes more tiles instead).
const MAX_SPLITS: usize = 64;
/// Caches longer than this many 32-key tiles are split over blocks.
const SPLIT_FROM: usize = 16;
/// Fewest tiles a split takes: below this, joining the splits costs more than it saves.
const MIN_SPLIT_TILES: usize = 4;
/// Keys one warp takes per step at the least: two lane groups (a row of up to 128 f32 in
/// 16-byte packs over 16 lanes each) of `DECODE_UNROLL` (4) keys.
const WARP_STEP_KEYS: usize = 8;

/// Splits of whole 32-key tiles so that about [`TARGET_BLOCKS`] blocks run, none empty,
/// each of at least [`MIN_SPLIT_TILES`] tiles; warps enough for the split's keys, at most
/// 8. Caches of at most [`SPLIT_FROM`] tiles stay in one block per row: its warps combine
/// in shared memory, cheaper than the partials, fences and ticket that joining splits costs.
pub fn split_plan(s: &DecodeShape) -> SplitPlan {
    let first = if s.window > 0 && s.len > s.window {
        s.len - s.window
    } else {
        0
    };
    let keys = (s.len - first).max(1);
    let tiles = keys.div_ceil(32);
    let warps_for = |keys: usize| keys.div_ceil(WARP_STEP_KEYS).clamp(1, 8);
    if tiles <= SPLIT_FROM {
        return SplitPlan {
            splits: 1,
            warps: warps_for(keys),
        };
    }
    let base = (s.batch * s.heads).max(1);
    let want = TARGET_BLOCKS.div_ceil(base).clamp(1, MAX_SPLITS).min(tiles);
    let per = tiles.div_ceil(want).max(MIN_SPLIT_TILES);
    SplitPlan {
        splits: tiles.div_ceil(per),
        warps: warps_for(per * 32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(batch: usize, heads: usize, len: usize, window: usize) -> SplitPlan {
        split_plan(&DecodeShape {
            batch,
            heads,
            kv_heads: heads,
            head_dim: 64,
            len,
            window,
            scale: 1.0,
        })
    }

    #[test]
    fn splits_cover_every_tile_and_none_is_empty() {
        for (b, h, len, w) in [
            (1, 12, 1, 0),
            (1, 12, 272, 0),
            (1, 12, 1024, 0),
            (4, 32, 4096, 0),
            (1, 8, 5000, 512),
            (64, 32, 100, 0),
        ] {
            let p = plan(b, h, len, w);
            let active = if w > 0 && len > w { w } else { len };
            let tiles = active.div_ceil(32);
            let per = tiles.div_ceil(p.splits);
            assert!(p.splits <= MAX_SPLITS && p.splits <= tiles, "{p:?}");
            // Every split starts inside the keys, and together they reach the last tile.
            assert!(
                (p.splits - 1) * per < tiles && p.splits * per >= tiles,
                "{p:?}"
            );
            assert!((1..=8).contains(&p.warps));
        }
        // GPT-2 within 512 keys: one block per row, all 8 warps from 64 keys.
        assert_eq!(
            plan(1, 12, 272, 0),
            SplitPlan {
                splits: 1,
                warps: 8
            }
        );
        assert_eq!(
            plan(1, 12, 17, 0),
            SplitPlan {
                splits: 1,
                warps: 3
            }
        );
        // Longer caches: about two blocks per SM, at least 4 tiles each.
        assert_eq!(
            plan(1, 12, 4096, 0),
            SplitPlan {
                splits: 22,
                warps: 8
            }
        );
        assert_eq!(plan(1, 12, 600, 0).splits, 5);
        // Many rows already fill the GPU: no split.
        assert_eq!(plan(64, 32, 100, 0).splits, 1);
    }
}
