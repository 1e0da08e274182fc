//! The key/value cache of one attention layer, allocated once for the longest sequence.

use crate::backend::interface::DecodeShape;
use crate::{DType, Device, Error, Result, Tensor};

/// Keys and values of the positions seen so far, stored `[max_len, batch, kv_heads,
/// head_dim]` so that appending positions writes one contiguous block and the attention
/// reads the cache through strides, without copies.
#[derive(Clone, Debug)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvCache {
    /// An empty cache for `batch` sequences of up to `max_len` positions.
    pub fn new(
        max_len: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        let shape = [max_len, batch, kv_heads, head_dim];
        Ok(KvCache {
            k: Tensor::zeros(&shape, dtype, device)?,
            v: Tensor::zeros(&shape, dtype, device)?,
            len: 0,
        })
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first append.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions it can hold.
    pub fn capacity(&self) -> usize {
        self.k.shape()[0]
    }

    /// Forgets every position (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends keys and values `[B, kv_heads, T_new, head_dim]` and returns all keys and
    /// values so far as `[B, kv_heads, len, head_dim]` views.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t_new = k.shape()[2];
        if self.len + t_new > self.capacity() {
            return Err(Error::invalid(
                "kv cache",
                format!(
                    "{} positions cached + {t_new} new exceed its {} positions",
                    self.len,
                    self.capacity()
                ),
            ));
        }
        for (cache, new) in [(&self.k, k), (&self.v, v)] {
            // [B, H, T, d] -> [T, B, H, d], written into positions len..len + T.
            let block = new.permute(&[2, 0, 1, 3])?.to_dtype(cache.dtype())?;
            cache.narrow(0, self.len, t_new)?.assign(&block)?;
        }
        self.len += t_new;
        let view = |c: &Tensor| c.narrow(0, 0, self.len)?.permute(&[1, 2, 0, 3]);
        Ok((view(&self.k)?, view(&self.v)?))
    }

    /// One decoding step in a single GPU kernel: queries `[B, H, 1, d]` attend over the
    /// cached positions and the new key/value `[B, KVH, 1, d]`, which are appended in the
    /// same launch; returns `[B, 1, H * d]`. `None` (nothing appended) when the step does
    /// not suit the kernel (CPU, several new positions, gradients, an odd layout), so the
    /// caller takes the general path.
    pub fn attend_one(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        window: Option<usize>,
        scale: f64,
    ) -> Result<Option<Tensor>> {
        let tracked = q.tracks_grad() || k.tracks_grad() || v.tracks_grad();
        if tracked || q.rank() != 4 || q.shape()[2] != 1 {
            return Ok(None);
        }
        if self.len >= self.capacity() {
            return Ok(None);
        }
        let (b, h, d) = (q.shape()[0], q.shape()[1], q.shape()[3]);
        let shape = DecodeShape {
            batch: b,
            heads: h,
            kv_heads: self.k.shape()[2],
            head_dim: d,
            len: self.len + 1,
            window: window.unwrap_or(0),
            scale: scale as f32,
        };
        let out = {
            let (ks, vs) = (k.read_storage(), v.read_storage());
            // The caches are written in place by the launch: held exclusively meanwhile.
            let (kc, vc) = (self.k.write_storage(), self.v.write_storage());
            q.read_storage().decode_attention(
                q.layout(),
                (&*ks, k.layout()),
                (&*vs, v.layout()),
                (&*kc, &*vc, self.k.layout()),
                shape,
            )?
        };
        let Some(out) = out else {
            return Ok(None);
        };
        self.len += 1;
        Ok(Some(Tensor::from_storage(out, &[b, 1, h * d], None)))
    }
}
