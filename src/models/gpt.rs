//! A GPT: token and learned position embeddings, pre-norm transformer blocks, a final
//! layer norm and a head tied to the token embedding.

use crate::nn::{
    AttentionConfig, Block, BlockConfig, Embedding, KvCache, LayerNorm, MlpKind, NormKind, Param,
};
use crate::{DType, Device, Error, Result, Rng, Tensor};
use std::collections::HashMap;

/// The shape of a GPT.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest context (number of learned positions).
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Residual dropout while training.
    pub dropout: f64,
}

impl GptConfig {
    fn validate(&self) -> Result<()> {
        let problem = if self.vocab_size == 0 {
            "the vocabulary is empty".to_string()
        } else if self.block_size == 0 {
            "the context size must be positive".to_string()
        } else if self.n_layer == 0 {
            "the model needs at least one layer".to_string()
        } else if self.n_embd == 0 || self.n_head == 0 {
            format!(
                "width {} and heads {} must be positive",
                self.n_embd, self.n_head
            )
        } else if !self.n_embd.is_multiple_of(self.n_head) {
            format!(
                "width {} does not split into {} heads",
                self.n_embd, self.n_head
            )
        } else if !(0.0..1.0).contains(&self.dropout) {
            format!("dropout {} must be in [0, 1)", self.dropout)
        } else {
            return Ok(());
        };
        Err(Error::invalid("gpt", problem))
    }

    /// Rough bytes of activations one training step keeps for the backward pass.
    pub fn activation_bytes(&self, batch: usize) -> u64 {
        let (c, h, t) = (
            self.n_embd as u64,
            self.n_head as u64,
            self.block_size as u64,
        );
        let per_token = self.n_layer as u64 * (24 * c + 3 * h * t) + 3 * self.vocab_size as u64;
        per_token * batch as u64 * t * 4
    }

    fn block(&self) -> BlockConfig {
        BlockConfig {
            attn: AttentionConfig {
                dim: self.n_embd,
                n_head: self.n_head,
                n_kv_head: self.n_head,
                bias: true,
                rope: None,
                ..AttentionConfig::default()
            },
            mlp: MlpKind::Gelu,
            mlp_hidden: 4 * self.n_embd,
            norm: NormKind::Layer,
            norm_eps: 1e-5,
            dropout: self.dropout,
            post_norms: false,
            parallel: false,
        }
    }
}

/// The model. Parameter names follow `wte.weight`, `wpe.weight`, `h.N.*`, `ln_f.*`.
#[derive(Clone, Debug)]
pub struct Gpt {
    pub cfg: GptConfig,
    pub wte: Embedding,
    pub wpe: Embedding,
    pub blocks: Vec<Block>,
    pub ln_f: LayerNorm,
}

impl Gpt {
    /// GPT-2 initialisation: N(0, 0.02²) weights, residual projections scaled by
    /// 1/sqrt(2 * n_layer), zero biases, unit norms.
    pub fn new(cfg: GptConfig, rng: &mut Rng, device: Device) -> Result<Self> {
        cfg.validate()?;
        let std = 0.02;
        let proj_std = std / (2.0 * cfg.n_layer as f64).sqrt();
        let wte = Embedding::new(cfg.vocab_size, cfg.n_embd, std, rng, device)?;
        let wpe = Embedding::new(cfg.block_size, cfg.n_embd, std, rng, device)?;
        let blocks = (0..cfg.n_layer)
            .map(|_| Block::new(cfg.block(), std, proj_std, rng, device))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::new(cfg.n_embd, true, 1e-5, device)?;
        Ok(Gpt {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
        })
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]`; `dropout_rng` only while training.
    pub fn forward(&self, idx: &Tensor, dropout_rng: Option<&mut Rng>) -> Result<Tensor> {
        self.forward_in(idx, dropout_rng, self.wte.weight.dtype())
    }

    /// [`Gpt::forward`] with the activations in `compute` (mixed precision: f32 weights
    /// cast to f16/bf16 where they meet the activations, so matmuls and attention run in
    /// the half type while norms, softmax and the loss accumulate in f32 inside their
    /// kernels). Logits come out in `compute`.
    pub fn forward_in(
        &self,
        idx: &Tensor,
        mut dropout_rng: Option<&mut Rng>,
        compute: DType,
    ) -> Result<Tensor> {
        if idx.rank() != 2 || !idx.dtype().is_index() {
            return Err(Error::invalid(
                "gpt",
                format!(
                    "expected integer token ids [batch, time], got {:?} {}",
                    idx.shape(),
                    idx.dtype()
                ),
            ));
        }
        let (b, t) = (idx.shape()[0], idx.shape()[1]);
        if t == 0 || t > self.cfg.block_size {
            return Err(Error::invalid(
                "gpt",
                format!(
                    "sequence length {t} must be between 1 and the context size {}",
                    self.cfg.block_size
                ),
            ));
        }
        let positions = Tensor::arange(t, DType::I64, idx.device())?;
        let mut x = self.wte.forward(idx)?.add(&self.wpe.forward(&positions)?)?;
        if x.dtype() != compute {
            x = x.to_dtype(compute)?;
        }
        for block in &self.blocks {
            x = block.forward(&x, dropout_rng.as_deref_mut())?;
        }
        let x = self.ln_f.forward(&x)?;
        let c = self.cfg.n_embd;
        let logits = self.wte.tied_head(&x.reshape(&[b * t, c])?)?;
        logits.reshape(&[b, t, self.cfg.vocab_size])
    }

    /// One empty key/value cache per layer for `batch` sequences of up to `max_len`
    /// positions (at most the context size), in the model's dtype and on its device.
    pub fn new_caches(&self, batch: usize, max_len: usize) -> Result<Vec<KvCache>> {
        let max_len = max_len.min(self.cfg.block_size);
        let (dtype, device) = (self.wte.weight.dtype(), self.wte.weight.device());
        let hd = self.cfg.n_embd / self.cfg.n_head;
        (0..self.cfg.n_layer)
            .map(|_| KvCache::new(max_len, batch, self.cfg.n_head, hd, dtype, device))
            .collect()
    }

    /// Logits `[B, vocab]` of the last of the positions `idx` (`[B, T_new]`) adds after
    /// those already in `caches` (one per layer), which it extends.
    pub fn forward_cached(&self, idx: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        if idx.rank() != 2 || !idx.dtype().is_index() || caches.len() != self.blocks.len() {
            return Err(Error::invalid(
                "gpt",
                format!(
                    "expected integer token ids [batch, time] and {} caches, got {:?} {} and {}",
                    self.blocks.len(),
                    idx.shape(),
                    idx.dtype(),
                    caches.len()
                ),
            ));
        }
        let (b, t) = (idx.shape()[0], idx.shape()[1]);
        let start = caches[0].len();
        if t == 0 || start + t > self.cfg.block_size {
            return Err(Error::invalid(
                "gpt",
                format!(
                    "positions {start}..{} must be within the context size {}",
                    start + t,
                    self.cfg.block_size
                ),
            ));
        }
        // Positions start..start + t are a slice of the table: no ids to upload.
        let positions = self.wpe.weight.narrow(0, start, t)?;
        let mut x = self.wte.forward(idx)?.add(&positions)?;
        for (block, cache) in self.blocks.iter().zip(caches.iter_mut()) {
            x = block.forward_cached(&x, cache)?;
        }
        let last = x.narrow(1, t - 1, 1)?.reshape(&[b, self.cfg.n_embd])?;
        self.wte.tied_head(&self.ln_f.forward(&last)?)
    }

    /// Mean next-token cross-entropy of `idx` against `targets` (both `[B, T]`).
    pub fn loss(
        &self,
        idx: &Tensor,
        targets: &Tensor,
        dropout_rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        self.forward(idx, dropout_rng)?.cross_entropy(targets, -1)
    }

    /// [`Gpt::loss`] with the activations in `compute` (see [`Gpt::forward_in`]); the
    /// loss is f32, accumulated in f32 ([`Tensor::cross_entropy_f32`]).
    pub fn loss_in(
        &self,
        idx: &Tensor,
        targets: &Tensor,
        dropout_rng: Option<&mut Rng>,
        compute: DType,
    ) -> Result<Tensor> {
        // The loss is f32 and accumulated in f32, as autocast's f32 logits give it, without
        // an f32 copy of the logits on a GPU.
        self.forward_in(idx, dropout_rng, compute)?
            .cross_entropy_f32(targets, -1)
    }

    /// A copy for inference with every tensor in `dtype` (e.g. bf16), detached from
    /// autograd.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        Ok(Gpt {
            cfg: self.cfg,
            wte: self.wte.to_dtype(dtype)?,
            wpe: self.wpe.to_dtype(dtype)?,
            blocks: self
                .blocks
                .iter()
                .map(|b| b.to_dtype(dtype))
                .collect::<Result<_>>()?,
            ln_f: self.ln_f.to_dtype(dtype)?,
        })
    }

    /// Every parameter, named, in a fixed order.
    pub fn params(&self) -> Vec<Param> {
        let mut out = Vec::new();
        self.wte.params("wte", &mut out);
        self.wpe.params("wpe", &mut out);
        for (i, b) in self.blocks.iter().enumerate() {
            b.params(&format!("h.{i}"), &mut out);
        }
        self.ln_f.params("ln_f", &mut out);
        out
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.tensor.numel()).sum()
    }

    /// Overwrites every parameter from `weights`; a missing, extra or mis-shaped tensor is
    /// an error that names it.
    pub fn load_weights(&self, weights: &HashMap<String, Tensor>) -> Result<()> {
        let params = self.params();
        crate::nn::assign_params(&params, weights)?;
        if let Some(extra) = weights
            .keys()
            .find(|k| !params.iter().any(|p| &p.name == *k))
        {
            return Err(Error::invalid(
                "load_weights",
                format!("unexpected tensor `{extra}`"),
            ));
        }
        Ok(())
    }
}
