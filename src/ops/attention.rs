//! Scaled dot-product attention as one op (FlashAttention): the score matrix is never
//! materialized; the forward saves each query row's log-sum-exp, from which the backward
//! recomputes the probabilities.

use super::{check_float, check_same};
use crate::autograd::{record, Op};
use crate::backend::interface::AttnShape;
use crate::{Error, Result, Tensor};

/// Which keys each query sees in [`Tensor::flash_attention`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttnMask {
    /// A query sees no key after its own position (queries aligned to the last keys).
    pub causal: bool,
    /// With `causal`: only the latest `window` keys up to the query's position.
    pub window: Option<usize>,
}

impl Tensor {
    /// `softmax(q k^T * scale + mask) v` for queries `[B, H, Tq, D]` (self) over keys and
    /// values `[B, KVH, Tk, D]`, without the `Tq x Tk` score matrix. Grouped-query heads:
    /// query head h reads key/value head `h / (H / KVH)`. Query i sits at position
    /// `Tk - Tq + i`, so a causal prefill after cached keys needs no offset; a causal query
    /// that sees no key gives 0. Differentiable in q, k and v.
    pub fn flash_attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        mask: AttnMask,
        scale: f64,
    ) -> Result<Tensor> {
        let shape = attn_shape(self, k, v, mask, scale)?;
        let ((out, out_layout), lse) = self.read_storage().flash_attention(
            self.layout(),
            (&k.read_storage(), k.layout()),
            (&v.read_storage(), v.layout()),
            &shape,
        )?;
        let out = Tensor::from_storage_in(out, out_layout, None);
        let lse = Tensor::from_storage(lse, &[shape.batch, shape.heads, shape.q_len], None);
        let rec = record(&[self, k, v], || Op::FlashAttention {
            q: self.clone(),
            k: k.clone(),
            v: v.clone(),
            out: out.detach(),
            lse: lse.clone(),
            mask,
            scale,
        });
        Ok(out.view_with(out.layout().clone(), rec))
    }
}

/// Checks the three inputs and describes the call.
pub(crate) fn attn_shape(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask,
    scale: f64,
) -> Result<AttnShape> {
    check_float("flash_attention", q)?;
    check_same("flash_attention", q, k)?;
    check_same("flash_attention", q, v)?;
    let (qs, ks) = (q.shape(), k.shape());
    let ok = q.rank() == 4
        && k.rank() == 4
        && k.shape() == v.shape()
        && qs[0] == ks[0]
        && qs[3] == ks[3]
        && ks[1] > 0
        && qs[1] % ks[1] == 0
        && qs[3] > 0
        && ks[2] > 0;
    if !ok {
        return Err(Error::invalid(
            "flash_attention",
            format!(
                "expected q [B, H, Tq, D] and k, v [B, KVH, Tk, D] with H a multiple of KVH; \
                 got q {:?}, k {:?}, v {:?}",
                qs,
                ks,
                v.shape()
            ),
        ));
    }
    if mask.window == Some(0) || (mask.window.is_some() && !mask.causal) {
        return Err(Error::invalid(
            "flash_attention",
            format!(
                "a window ({:?}) needs a causal mask and at least one key",
                mask.window
            ),
        ));
    }
    if !(scale.is_finite()) {
        return Err(Error::invalid(
            "flash_attention",
            format!("scale {scale} is not finite"),
        ));
    }
    Ok(AttnShape {
        batch: qs[0],
        heads: qs[1],
        kv_heads: ks[1],
        q_len: qs[2],
        k_len: ks[2],
        head_dim: qs[3],
        causal: mask.causal,
        window: mask.window.unwrap_or(0),
        scale,
    })
}

/// Gradients (dq, dk, dv) of a recorded [`Tensor::flash_attention`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_attention_grads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    g: &Tensor,
    mask: AttnMask,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let shape = attn_shape(q, k, v, mask, scale)?;
    let [dq, dk, dv] = q.read_storage().flash_attention_backward(
        q.layout(),
        (&k.read_storage(), k.layout()),
        (&v.read_storage(), v.layout()),
        (&out.read_storage(), out.layout()),
        (&lse.read_storage(), lse.layout()),
        (&g.read_storage(), g.layout()),
        &shape,
    )?;
    let grad = |(s, layout)| Tensor::from_storage_in(s, layout, None);
    Ok((grad(dq), grad(dk), grad(dv)))
}
