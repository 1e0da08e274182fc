//! Causal self-attention on `[B, T, C]` with multi-head or grouped-query heads.

use super::{KvCache, Linear, Norm, Param, RmsNorm};
use crate::backend::RotaryStyle;
use crate::{rotary_tables_for, Device, Error, Result, Rng, RotarySpec, Tensor};
use std::sync::Arc;

/// Shape of an attention layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttentionConfig {
    /// Model width C.
    pub dim: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (equal to `n_head` for multi-head, fewer for grouped-query).
    pub n_kv_head: usize,
    /// Linear layers with biases.
    pub bias: bool,
    /// Rotary embeddings (base and pair layout); `None` when positions are learned.
    pub rope: Option<(f64, RotaryStyle)>,
    /// Features per head when not `dim / n_head` (Gemma 3).
    #[serde(default)]
    pub head_size: Option<usize>,
    /// RMS norm (with this epsilon) over each query and key head before the rotation
    /// (Gemma 3).
    #[serde(default)]
    pub qk_norm: Option<f64>,
    /// Sliding-window attention: query i sees keys i - window + 1 ..= i.
    #[serde(default)]
    pub window: Option<usize>,
    /// Linear rope scaling: positions are divided by this factor.
    #[serde(default)]
    pub rope_scale: Option<f64>,
    /// Rotary embeddings on only the first this-many features of each head, the rest
    /// passing through (Phi-2's partial rotary); `None` rotates them all.
    #[serde(default)]
    pub rope_dims: Option<usize>,
}

impl AttentionConfig {
    /// Features per head.
    pub fn head_dim(&self) -> usize {
        self.head_size.unwrap_or(self.dim / self.n_head.max(1))
    }

    fn validate(&self) -> Result<()> {
        let ok = self.n_head > 0
            && self.n_kv_head > 0
            && (self.head_size.is_some_and(|d| d > 0) || self.dim.is_multiple_of(self.n_head))
            && self.n_head.is_multiple_of(self.n_kv_head)
            && self.window != Some(0)
            && self
                .rope_dims
                .is_none_or(|r| r > 0 && r.is_multiple_of(2) && r <= self.head_dim());
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "attention",
                format!(
                    "dim {} must split into {} heads, {} query heads into {} key/value heads, \
                     and rotary dims {:?} must be even and at most the head dim",
                    self.dim, self.n_head, self.n_head, self.n_kv_head, self.rope_dims
                ),
            ))
        }
    }
}

/// Causal self-attention: fused QKV projection, scaled dot-product with a causal mask,
/// softmax, weighted values, output projection.
#[derive(Clone, Debug)]
pub struct CausalSelfAttention {
    pub cfg: AttentionConfig,
    /// `[(n_head + 2 n_kv_head) * head_dim, dim]`: queries, keys, values stacked.
    pub qkv: Linear,
    /// `[dim, n_head * head_dim]`.
    pub proj: Linear,
    /// Per-head query and key norms `[head_dim]` (with `cfg.qk_norm`).
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    /// Per-frequency divisors of the rotary angles and a magnitude for cos and sin
    /// (Llama 3.1's `rope_freqs`, YaRN); read from model files, not trained.
    pub rope_adjust: Option<RopeAdjust>,
}

/// Changes to the plain rotary tables that a model file asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeAdjust {
    /// Divisor of each rotary frequency, one per rotated pair.
    pub factors: Arc<[f64]>,
    /// Multiplies cos and sin (YaRN's attention factor; 1 otherwise).
    pub magnitude: f64,
}

impl CausalSelfAttention {
    /// Weights from N(0, std²); the output projection uses `proj_std`.
    pub fn new(
        cfg: AttentionConfig,
        std: f64,
        proj_std: f64,
        rng: &mut Rng,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let hd = cfg.head_dim();
        let qkv = Linear::new(
            cfg.dim,
            (cfg.n_head + 2 * cfg.n_kv_head) * hd,
            cfg.bias,
            std,
            rng,
            device,
        )?;
        let proj = Linear::new(cfg.n_head * hd, cfg.dim, cfg.bias, proj_std, rng, device)?;
        let norm = |eps: f64| RmsNorm::new(hd, eps, device);
        Ok(CausalSelfAttention {
            cfg,
            qkv,
            proj,
            q_norm: cfg.qk_norm.map(norm).transpose()?,
            k_norm: cfg.qk_norm.map(norm).transpose()?,
            rope_adjust: None,
        })
    }

    /// `[B, T, C]` to `[B, T, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.attend(x, None, None, None)
    }

    /// `[B, T_new, C]` to `[B, T_new, C]` for positions following those in `cache`, whose
    /// keys and values it reads and extends (prefill with the whole prompt, then one
    /// position at a time).
    pub fn forward_cached(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.attend(x, None, Some(cache), None)
    }

    /// `residual + forward_cached(norm(x))`: the norm folded into the QKV projection and
    /// the add into the output projection where the backend can.
    pub fn forward_cached_residual(
        &self,
        x: &Tensor,
        norm: &Norm,
        cache: &mut KvCache,
        residual: &Tensor,
    ) -> Result<Tensor> {
        self.attend(x, Some(norm), Some(cache), Some(residual))
    }

    fn attend(
        &self,
        x: &Tensor,
        norm: Option<&Norm>,
        cache: Option<&mut KvCache>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if x.rank() != 3 || x.shape()[2] != self.cfg.dim {
            return Err(Error::invalid(
                "attention",
                format!(
                    "expected [batch, time, {}], got {:?}",
                    self.cfg.dim,
                    x.shape()
                ),
            ));
        }
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let (h, kvh, hd) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim());
        let start = cache.as_ref().map_or(0, |c| c.len());
        let qkv = match norm {
            Some(n) => self.qkv.forward_normed(x, n, false)?,
            None => self.qkv.forward(x)?,
        };
        let parts = qkv.split(&[h * hd, kvh * hd, kvh * hd], 2)?;
        // [B, T, heads, hd] -> [B, heads, T, hd] (views), normalized per head if asked.
        let heads = |t_: &Tensor, n: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
            let t_ = t_.reshape(&[b, t, n, hd])?;
            match norm {
                Some(norm) => norm.forward(&t_)?.transpose(1, 2),
                None => t_.transpose(1, 2),
            }
        };
        let (mut q, mut k, mut v) = (
            heads(&parts[0], h, self.q_norm.as_ref())?,
            heads(&parts[1], kvh, self.k_norm.as_ref())?,
            heads(&parts[2], kvh, None)?,
        );
        if let Some((base, style)) = self.cfg.rope {
            let scale = self.cfg.rope_scale.unwrap_or(1.0);
            let rot = self.cfg.rope_dims.unwrap_or(hd);
            let (factors, magnitude) = match &self.rope_adjust {
                Some(a) => (&a.factors[..], a.magnitude),
                None => (&[][..], 1.0),
            };
            let spec = RotarySpec {
                dim: rot,
                base,
                scale,
                factors,
                magnitude,
            };
            let (cos, sin) = rotary_tables_for(start, t, &spec, x.dtype(), x.device())?;
            let turn = |t_: &Tensor| -> Result<Tensor> {
                if rot == hd {
                    return t_.rotary(&cos, &sin, style);
                }
                let turned = t_.narrow(3, 0, rot)?.rotary(&cos, &sin, style)?;
                Tensor::cat(&[turned, t_.narrow(3, rot, hd - rot)?], 3)
            };
            q = turn(&q)?;
            k = turn(&k)?;
        }
        let scale = 1.0 / (hd as f64).sqrt();
        if let Some(cache) = cache {
            if t == 1 {
                if let Some(y) = cache.attend_one(&q, &k, &v, self.cfg.window, scale)? {
                    return self.proj.forward_fused(&y, false, residual);
                }
            }
            (k, v) = cache.append(&k, &v)?;
        }
        if fused_attention_applies(&q, hd) {
            // Half types on a GPU: the fused kernel (tensor cores, GQA read in place, the
            // score matrix never stored); query i sits at position start + i.
            let mask = crate::AttnMask {
                causal: true,
                window: self.cfg.window,
            };
            let y = q.flash_attention(&k, &v, mask, scale)?;
            return self.project(&y.transpose(1, 2)?.reshape(&[b, t, h * hd])?, residual);
        }
        let keys = k.shape()[2];
        if kvh != h {
            // Each key/value head serves h / kvh query heads.
            let repeat = |t_: &Tensor| -> Result<Tensor> {
                t_.unsqueeze(2)?
                    .broadcast_as(&[b, kvh, h / kvh, keys, hd])?
                    .reshape(&[b, h, keys, hd])
            };
            k = repeat(&k)?;
            v = repeat(&v)?;
        }
        // Scaling the queries (T x hd) rather than the scores (T x keys) saves two passes
        // over the score matrix, forward and backward.
        let q = q.mul_scalar(scale)?;
        // Query i sees keys up to start + i: the causal mask aligned to the last key.
        let scores = q.matmul(&k.t()?)?;
        let probs = match self.cfg.window {
            // Some query has a key outside its window: mask explicitly.
            Some(w) if start + t > w => scores
                .add(&window_mask(start, t, keys, w, &scores)?)?
                .softmax(3)?,
            _ => scores.softmax_causal()?,
        };
        let y = probs.matmul(&v)?; // [B, H, T, hd]
                                   // Back to [B, T, H*hd]: the transpose makes this reshape an explicit copy.
        let y = y.transpose(1, 2)?.reshape(&[b, t, h * hd])?;
        self.project(&y, residual)
    }

    /// The output projection of the joined heads `[B, T, H*hd]`, with the residual added
    /// in the GEMM when there is one.
    fn project(&self, y: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        match residual {
            Some(r) => self.proj.forward_fused(y, false, Some(r)),
            None => self.proj.forward(y),
        }
    }

    /// A copy with its tensors in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        let norm = |n: &Option<RmsNorm>| n.as_ref().map(|n| n.to_dtype(dtype)).transpose();
        Ok(CausalSelfAttention {
            cfg: self.cfg,
            qkv: self.qkv.to_dtype(dtype)?,
            proj: self.proj.to_dtype(dtype)?,
            q_norm: norm(&self.q_norm)?,
            k_norm: norm(&self.k_norm)?,
            rope_adjust: self.rope_adjust.clone(),
        })
    }

    /// Appends this layer's parameters.
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        self.qkv.params(&format!("{prefix}.qkv"), out);
        self.proj.params(&format!("{prefix}.proj"), out);
        if let Some(n) = &self.q_norm {
            n.params(&format!("{prefix}.q_norm"), out);
        }
        if let Some(n) = &self.k_norm {
            n.params(&format!("{prefix}.k_norm"), out);
        }
    }
}

/// Whether attention over `q` runs as one fused kernel: f16 or bf16 on a GPU whose tensor
/// cores the kernel supports, with a head dim it is compiled for. f32 keeps the TF32 GEMM
/// path, and the CPU the GEMM path (its fused op is the reference).
fn fused_attention_applies(q: &Tensor, head_dim: usize) -> bool {
    q.read_storage()
        .prefers_fused_attention(q.dtype(), head_dim)
}

/// An additive `[t, keys]` mask (0 or -inf, like `scores`) letting query i, at position
/// `start + i`, see key j when `start + i - window < j <= start + i`.
fn window_mask(
    start: usize,
    t: usize,
    keys: usize,
    window: usize,
    scores: &Tensor,
) -> Result<Tensor> {
    let mut mask = vec![f32::NEG_INFINITY; t * keys];
    for i in 0..t {
        let pos = start + i;
        for j in (pos + 1).saturating_sub(window)..=pos.min(keys - 1) {
            mask[i * keys + j] = 0.0;
        }
    }
    Tensor::from_vec(mask, &[t, keys], Device::Cpu)?
        .to_dtype(scores.dtype())?
        .to_device(scores.device())
}
