//! A Llama-style decoder: token embedding, pre-norm blocks with RMS norm, rotary
//! positions, grouped-query attention and a SwiGLU MLP, a final RMS norm and an output head
//! (tied to the embedding or not). Also serves Qwen2-style models (QKV biases) and Gemma 3
//! (scaled embeddings, per-head QK norms, post norms, GeGLU, sliding-window layers with
//! their own rotary base) and Phi-2 (layer norms, parallel attention and GELU MLP, partial
//! rotary, biases everywhere).

use super::LanguageModel;
use crate::nn::{
    AttentionConfig, Block, BlockConfig, Embedding, KvCache, Linear, MlpKind, Norm, NormKind, Param,
};
use crate::{Device, Error, Result, Rng, RotaryStyle, Tensor};

/// The shape of a Llama-style model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    /// Longest context.
    pub context: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub dim: usize,
    /// Hidden width of the MLP.
    pub hidden: usize,
    pub rope_base: f64,
    pub rope_style: RotaryStyle,
    pub norm_eps: f64,
    /// Biases on the Q, K, V projections (Qwen2).
    pub qkv_bias: bool,
    /// The head reuses the token embedding.
    pub tied: bool,
    /// Features per head when not `dim / n_head`.
    pub head_dim: Option<usize>,
    /// SwiGLU (Llama) or GeGLU (Gemma).
    pub mlp: MlpKind,
    /// RMS norms over each query and key head.
    pub qk_norm: bool,
    /// Norms on the attention and MLP outputs before the residual adds.
    pub post_norms: bool,
    /// Embeddings multiplied by `sqrt(dim)`.
    pub embed_scale: bool,
    /// Sliding-window layers, when the model has them.
    pub sliding: Option<SlidingWindow>,
    /// Linear rope scaling factor (positions divided by it).
    pub rope_scale: Option<f64>,
    /// Rotary embeddings on the first this-many features of each head only (Phi-2).
    pub rope_dims: Option<usize>,
    /// RMS norms (Llama) or layer norms with biases (Phi-2).
    pub norm: NormKind,
    /// Attention and MLP side by side on one norm (Phi-2).
    pub parallel: bool,
    /// Biases on every linear layer, the head included (Phi-2).
    pub dense_bias: bool,
}

/// Local attention layers interleaved with global ones (Gemma 3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlidingWindow {
    /// Keys each query sees, itself included.
    pub size: usize,
    /// Every `global_every`-th layer (layer i with (i + 1) % global_every == 0) is global.
    pub global_every: usize,
    /// Rotary base of the local layers.
    pub rope_base: f64,
}

impl LlamaConfig {
    /// The plain Llama shape: SwiGLU, no QK or post norms, no window.
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        vocab_size: usize,
        context: usize,
        n_layer: usize,
        n_head: usize,
        n_kv_head: usize,
        dim: usize,
        hidden: usize,
        rope_base: f64,
    ) -> Self {
        LlamaConfig {
            vocab_size,
            context,
            n_layer,
            n_head,
            n_kv_head,
            dim,
            hidden,
            rope_base,
            rope_style: RotaryStyle::RotateHalf,
            norm_eps: 1e-5,
            qkv_bias: false,
            tied: true,
            head_dim: None,
            mlp: MlpKind::SwiGlu,
            qk_norm: false,
            post_norms: false,
            embed_scale: false,
            sliding: None,
            rope_scale: None,
            rope_dims: None,
            norm: NormKind::Rms,
            parallel: false,
            dense_bias: false,
        }
    }

    fn block(&self, layer: usize) -> BlockConfig {
        let local = self
            .sliding
            .filter(|s| s.global_every == 0 || !(layer + 1).is_multiple_of(s.global_every));
        BlockConfig {
            attn: AttentionConfig {
                dim: self.dim,
                n_head: self.n_head,
                n_kv_head: self.n_kv_head,
                bias: self.qkv_bias || self.dense_bias,
                rope: Some((
                    local.map_or(self.rope_base, |s| s.rope_base),
                    self.rope_style,
                )),
                head_size: self.head_dim,
                qk_norm: self.qk_norm.then_some(self.norm_eps),
                window: local.map(|s| s.size),
                // Interleaved local layers (Gemma) keep unscaled rotary tables.
                rope_scale: match local {
                    Some(s) if s.global_every > 0 => None,
                    _ => self.rope_scale,
                },
                rope_dims: self.rope_dims,
            },
            mlp: self.mlp,
            mlp_hidden: self.hidden,
            norm: self.norm,
            norm_eps: self.norm_eps,
            dropout: 0.0,
            post_norms: self.post_norms,
            parallel: self.parallel,
        }
    }

    fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.dim / self.n_head.max(1))
    }
}

/// The model. Parameter names: `embed.weight`, `h.N.*` (as [`Block`]), `norm.weight`,
/// `head.weight` (absent when tied).
#[derive(Clone, Debug)]
pub struct Llama {
    pub cfg: LlamaConfig,
    pub embed: Embedding,
    pub blocks: Vec<Block>,
    pub norm: Norm,
    pub head: Option<Linear>,
}

impl Llama {
    /// Random weights (N(0, 0.02²)).
    pub fn new(cfg: LlamaConfig, rng: &mut Rng, device: Device) -> Result<Self> {
        Self::with_init_std(cfg, 0.02, rng, device)
    }

    /// Weights from N(0, std²); loaders pass 0 (zeros, quick to make) and overwrite them.
    pub fn with_init_std(
        cfg: LlamaConfig,
        std: f64,
        rng: &mut Rng,
        device: Device,
    ) -> Result<Self> {
        if cfg.dim == 0 || cfg.n_head == 0 || cfg.n_layer == 0 || cfg.vocab_size == 0 {
            return Err(Error::invalid(
                "llama",
                format!("empty model shape {cfg:?}"),
            ));
        }
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::new(cfg.block(i), std, std, rng, device))
            .collect::<Result<Vec<_>>>()?;
        // Without QKV biases the block's output projections and MLP have none either; with
        // them (Qwen2) only Q, K, V do, unless every layer has one (Phi-2).
        let blocks = if cfg.qkv_bias && !cfg.dense_bias {
            blocks
                .into_iter()
                .map(|mut b| {
                    b.attn.proj.bias = None;
                    for l in b.mlp.gated_mut().into_iter().flatten() {
                        l.bias = None;
                    }
                    b
                })
                .collect()
        } else {
            blocks
        };
        Ok(Llama {
            cfg,
            embed: Embedding::new(cfg.vocab_size, cfg.dim, std, rng, device)?,
            blocks,
            norm: Norm::new(cfg.norm, cfg.dim, cfg.norm_eps, device)?,
            head: if cfg.tied {
                None
            } else {
                Some(Linear::new(
                    cfg.dim,
                    cfg.vocab_size,
                    cfg.dense_bias,
                    std,
                    rng,
                    device,
                )?)
            },
        })
    }

    /// Every parameter, named, in a fixed order.
    pub fn params(&self) -> Vec<Param> {
        let mut out = Vec::new();
        self.embed.params("embed", &mut out);
        for (i, b) in self.blocks.iter().enumerate() {
            b.params(&format!("h.{i}"), &mut out);
        }
        self.norm.params("norm", &mut out);
        if let Some(h) = &self.head {
            h.params("head", &mut out);
        }
        out
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.norm.forward(x)?;
        match &self.head {
            Some(h) => h.forward(&x),
            None => self.embed.tied_head(&x),
        }
    }

    /// Token embeddings, scaled by `sqrt(dim)` where the model asks for it.
    fn embed(&self, idx: &Tensor) -> Result<Tensor> {
        let x = self.embed.forward(idx)?;
        if self.cfg.embed_scale {
            x.mul_scalar((self.cfg.dim as f64).sqrt())
        } else {
            Ok(x)
        }
    }

    fn check_ids(&self, idx: &Tensor) -> Result<(usize, usize)> {
        if idx.rank() != 2 || !idx.dtype().is_index() {
            return Err(Error::invalid(
                "llama",
                format!(
                    "expected integer token ids [batch, time], got {:?} {}",
                    idx.shape(),
                    idx.dtype()
                ),
            ));
        }
        Ok((idx.shape()[0], idx.shape()[1]))
    }

    /// A copy for inference with every tensor in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        Ok(Llama {
            cfg: self.cfg,
            embed: self.embed.to_dtype(dtype)?,
            blocks: self
                .blocks
                .iter()
                .map(|b| b.to_dtype(dtype))
                .collect::<Result<_>>()?,
            norm: self.norm.to_dtype(dtype)?,
            head: self.head.as_ref().map(|h| h.to_dtype(dtype)).transpose()?,
        })
    }
}

impl LanguageModel for Llama {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn context(&self) -> usize {
        self.cfg.context
    }

    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        let (_, t) = self.check_ids(idx)?;
        if t == 0 || t > self.cfg.context {
            return Err(Error::invalid(
                "llama",
                format!(
                    "sequence length {t} must be between 1 and {}",
                    self.cfg.context
                ),
            ));
        }
        let mut x = self.embed(idx)?;
        for b in &self.blocks {
            x = b.forward(&x, None)?;
        }
        self.logits(&x)
    }

    fn new_caches(&self, batch: usize, max_len: usize) -> Result<Vec<KvCache>> {
        let (dtype, device) = (self.embed.weight.dtype(), self.embed.weight.device());
        let hd = self.cfg.head_dim();
        (0..self.cfg.n_layer)
            .map(|_| {
                KvCache::new(
                    max_len.min(self.cfg.context),
                    batch,
                    self.cfg.n_kv_head,
                    hd,
                    dtype,
                    device,
                )
            })
            .collect()
    }

    fn forward_cached(&self, idx: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        let (b, t) = self.check_ids(idx)?;
        let start = caches.first().map_or(0, |c| c.len());
        if t == 0 || start + t > self.cfg.context || caches.len() != self.blocks.len() {
            return Err(Error::invalid(
                "llama",
                format!(
                    "positions {start}..{} must be within the context {} ({} caches for {} layers)",
                    start + t,
                    self.cfg.context,
                    caches.len(),
                    self.blocks.len()
                ),
            ));
        }
        let mut x = self.embed(idx)?;
        for (block, cache) in self.blocks.iter().zip(caches.iter_mut()) {
            x = block.forward_cached(&x, cache)?;
        }
        let last = x.narrow(1, t - 1, 1)?.reshape(&[b, self.cfg.dim])?;
        self.logits(&last)
    }
}
