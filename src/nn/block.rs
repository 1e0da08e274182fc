//! The pre-norm transformer block.

use super::{AttentionConfig, CausalSelfAttention, KvCache, Mlp, MlpKind, Norm, NormKind, Param};
use crate::{Device, Result, Rng, Tensor};

/// Everything that shapes one block.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlockConfig {
    pub attn: AttentionConfig,
    pub mlp: MlpKind,
    /// Hidden width of the MLP.
    pub mlp_hidden: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    /// Dropout on the attention and MLP outputs while training (0 disables it).
    pub dropout: f64,
    /// Norms on the attention and MLP outputs too, before the residual adds (Gemma).
    #[serde(default)]
    pub post_norms: bool,
    /// Attention and MLP side by side on one norm of the input:
    /// `x + attn(norm1(x)) + mlp(norm1(x))` (Phi-2). Such a block has no `norm2`.
    #[serde(default)]
    pub parallel: bool,
}

/// `x + attn(norm1(x))`, then `x + mlp(norm2(x))` (with post norms:
/// `x + post_attn_norm(attn(norm1(x)))` and likewise for the MLP; parallel blocks add
/// both branches of `norm1(x)` at once).
#[derive(Clone, Debug)]
pub struct Block {
    pub cfg: BlockConfig,
    pub norm1: Norm,
    pub attn: CausalSelfAttention,
    pub post_attn_norm: Option<Norm>,
    /// The MLP's own norm (`None` in parallel blocks, whose MLP reads `norm1(x)`).
    pub norm2: Option<Norm>,
    pub mlp: Mlp,
    pub post_mlp_norm: Option<Norm>,
}

impl Block {
    /// A block with weights N(0, std²) and residual projections N(0, proj_std²).
    pub fn new(
        cfg: BlockConfig,
        std: f64,
        proj_std: f64,
        rng: &mut Rng,
        device: Device,
    ) -> Result<Self> {
        let dim = cfg.attn.dim;
        let post = || -> Result<Option<Norm>> {
            cfg.post_norms
                .then(|| Norm::new(cfg.norm, dim, cfg.norm_eps, device))
                .transpose()
        };
        Ok(Block {
            cfg,
            norm1: Norm::new(cfg.norm, dim, cfg.norm_eps, device)?,
            attn: CausalSelfAttention::new(cfg.attn, std, proj_std, rng, device)?,
            post_attn_norm: post()?,
            norm2: (!cfg.parallel)
                .then(|| Norm::new(cfg.norm, dim, cfg.norm_eps, device))
                .transpose()?,
            post_mlp_norm: post()?,
            mlp: Mlp::new(
                cfg.mlp,
                dim,
                cfg.mlp_hidden,
                cfg.attn.bias,
                std,
                proj_std,
                rng,
                device,
            )?,
        })
    }

    /// `[B, T, C]` to `[B, T, C]`; `dropout_rng` is given only while training.
    pub fn forward(&self, x: &Tensor, mut dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        let mut drop = |t: Tensor| -> Result<Tensor> {
            match dropout_rng.as_deref_mut() {
                Some(r) if self.cfg.dropout > 0.0 => t.dropout(self.cfg.dropout, r),
                _ => Ok(t),
            }
        };
        let h = self.norm1.forward(x)?;
        let a = drop(post(&self.post_attn_norm, self.attn.forward(&h)?)?)?;
        let Some(norm2) = &self.norm2 else {
            let m = post(&self.post_mlp_norm, self.mlp.forward(&h)?)?;
            return x.add(&a)?.add(&drop(m)?);
        };
        let x = x.add(&a)?;
        let m = post(&self.post_mlp_norm, self.mlp.forward(&norm2.forward(&x)?)?)?;
        x.add(&drop(m)?)
    }

    /// Inference over positions following those in `cache` (see
    /// [`CausalSelfAttention::forward_cached`]).
    pub fn forward_cached(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        if self.post_attn_norm.is_none() && self.post_mlp_norm.is_none() {
            // Norms folded into the projections after them, residual adds into the output
            // projections, where the backend can.
            let with_attn = self
                .attn
                .forward_cached_residual(x, &self.norm1, cache, x)?;
            return match &self.norm2 {
                Some(norm2) => {
                    self.mlp
                        .forward_residual_normed(&with_attn, norm2, Some(&with_attn))
                }
                // Parallel: the MLP reads norm1(x) too and adds onto x + attn.
                None => self
                    .mlp
                    .forward_residual_normed(x, &self.norm1, Some(&with_attn)),
            };
        }
        let h = self.norm1.forward(x)?;
        let a = post(&self.post_attn_norm, self.attn.forward_cached(&h, cache)?)?;
        let Some(norm2) = &self.norm2 else {
            let m = post(&self.post_mlp_norm, self.mlp.forward(&h)?)?;
            return x.add(&a)?.add(&m);
        };
        let x = x.add(&a)?;
        x.add(&post(
            &self.post_mlp_norm,
            self.mlp.forward(&norm2.forward(&x)?)?,
        )?)
    }

    /// A copy with its tensors in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        let post = |n: &Option<Norm>| n.as_ref().map(|n| n.to_dtype(dtype)).transpose();
        Ok(Block {
            cfg: self.cfg,
            norm1: self.norm1.to_dtype(dtype)?,
            attn: self.attn.to_dtype(dtype)?,
            post_attn_norm: post(&self.post_attn_norm)?,
            norm2: post(&self.norm2)?,
            mlp: self.mlp.to_dtype(dtype)?,
            post_mlp_norm: post(&self.post_mlp_norm)?,
        })
    }

    /// Appends this block's parameters.
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        self.norm1.params(&format!("{prefix}.norm1"), out);
        self.attn.params(&format!("{prefix}.attn"), out);
        if let Some(n) = &self.post_attn_norm {
            n.params(&format!("{prefix}.post_attn_norm"), out);
        }
        if let Some(n) = &self.norm2 {
            n.params(&format!("{prefix}.norm2"), out);
        }
        self.mlp.params(&format!("{prefix}.mlp"), out);
        if let Some(n) = &self.post_mlp_norm {
            n.params(&format!("{prefix}.post_mlp_norm"), out);
        }
    }
}

/// `t` through the post norm when there is one.
fn post(norm: &Option<Norm>, t: Tensor) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(&t),
        None => Ok(t),
    }
}
