//! A Llama-style decoder: token embedding, pre-norm blocks with RMS norm, rotary
//! positions, grouped-query attention and a SwiGLU MLP, a final RMS norm and an output head
//! (tied to the embedding or not). Also serves Qwen2-style models (QKV biases).

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
}

impl LlamaConfig {
    fn block(&self) -> BlockConfig {
        BlockConfig {
            attn: AttentionConfig {
                dim: self.dim,
                n_head: self.n_head,
                n_kv_head: self.n_kv_head,
                bias: self.qkv_bias,
                rope: Some((self.rope_base, self.rope_style)),
            },
            mlp: MlpKind::SwiGlu,
            mlp_hidden: self.hidden,
            norm: NormKind::Rms,
            norm_eps: self.norm_eps,
            dropout: 0.0,
        }
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
    /// Random weights (N(0, 0.02²)); loaders overwrite them.
    pub fn new(cfg: LlamaConfig, rng: &mut Rng, device: Device) -> Result<Self> {
        if cfg.dim == 0 || cfg.n_head == 0 || cfg.n_layer == 0 || cfg.vocab_size == 0 {
            return Err(Error::invalid(
                "llama",
                format!("empty model shape {cfg:?}"),
            ));
        }
        let blocks = (0..cfg.n_layer)
            .map(|_| Block::new(cfg.block(), 0.02, 0.02, rng, device))
            .collect::<Result<Vec<_>>>()?;
        // Without QKV biases the block's output projections and MLP have none either; with
        // them (Qwen2) only Q, K, V do.
        let blocks = if cfg.qkv_bias {
            blocks
                .into_iter()
                .map(|mut b| {
                    b.attn.proj.bias = None;
                    if let crate::nn::Mlp::SwiGlu { gate, up, down } = &mut b.mlp {
                        gate.bias = None;
                        up.bias = None;
                        down.bias = None;
                    }
                    b
                })
                .collect()
        } else {
            blocks
        };
        Ok(Llama {
            cfg,
            embed: Embedding::new(cfg.vocab_size, cfg.dim, 0.02, rng, device)?,
            blocks,
            norm: Norm::new(NormKind::Rms, cfg.dim, cfg.norm_eps, device)?,
            head: if cfg.tied {
                None
            } else {
                Some(Linear::new(
                    cfg.dim,
                    cfg.vocab_size,
                    false,
                    0.02,
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
        let mut x = self.embed.forward(idx)?;
        for b in &self.blocks {
            x = b.forward(&x, None)?;
        }
        self.logits(&x)
    }

    fn new_caches(&self, batch: usize, max_len: usize) -> Result<Vec<KvCache>> {
        let (dtype, device) = (self.embed.weight.dtype(), self.embed.weight.device());
        let hd = self.cfg.dim / self.cfg.n_head;
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
        let mut x = self.embed.forward(idx)?;
        for (block, cache) in self.blocks.iter().zip(caches.iter_mut()) {
            x = block.forward_cached(&x, cache)?;
        }
        let last = x.narrow(1, t - 1, 1)?.reshape(&[b, self.cfg.dim])?;
        self.logits(&last)
    }
}
