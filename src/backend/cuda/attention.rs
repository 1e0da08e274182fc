//! Decoding attention on CUDA (kernel in `kernels/attention.cu`): one new query position
//! per sequence against the key/value cache, with the cache append folded in.

use super::storage::suffix;
use super::{launch, CudaStorage};
use crate::{Error, Layout, Result};
use cudarc::driver::LaunchConfig;

/// Head dims the decoding kernel is compiled for.
pub const DECODE_HEAD_DIMS: [usize; 7] = [16, 32, 64, 80, 96, 128, 256];

/// Shape of one decoding step.
#[derive(Clone, Copy, Debug)]
pub struct DecodeShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions in the cache after this step (the new one included).
    pub len: usize,
    /// Keys each query sees (0: all).
    pub window: usize,
    pub scale: f32,
}

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
    // 16-byte loads along key rows: head dims in whole 16-byte packs, rows aligned.
    let per16 = 16 / dtype.size_in_bytes();
    let aligned = [(k.ptr(lk.offset()), ks), (kc.ptr(0), s.batch * kvh * d)]
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
    let cfg = LaunchConfig {
        grid_dim: (s.heads as u32, s.batch as u32, 1),
        block_dim: (32 * 8, 1, 1),
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
    launch!(@cfg q.dev, "attention", name, cfg,
        &qp, &qs, &kp, &ks, &vp, &vs, &kcp, &vcp, &ct, &cb, &yp, &h32, &kvh32, &len32,
        &win32, &s.scale);
    Ok(Some(out))
}
