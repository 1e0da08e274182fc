//! Model builders.

pub mod checkpoint;
pub mod checks;
pub mod clip;
pub mod from_gguf;
pub mod gguf_rope;
pub mod gpt;
pub mod hf_gpt2;
pub mod llama;
pub mod resnet;

pub use checkpoint::checkpoint_gpt;
pub use clip::{is_clip, Clip, ClipConfig};
pub use gpt::{Gpt, GptConfig};
pub use hf_gpt2::{is_hf_gpt2, load_hf_gpt2, save_hf_gpt2};
pub use llama::{Llama, LlamaConfig};
pub use resnet::{BlockKind, ResNet, ResNetConfig, Stem};

use crate::nn::KvCache;
use crate::{Result, Tensor};

/// What generation and scoring need from a decoder-only language model.
pub trait LanguageModel {
    /// Number of token ids.
    fn vocab_size(&self) -> usize;
    /// Longest context in positions.
    fn context(&self) -> usize;
    /// Logits `[B, T, vocab]` for token ids `[B, T]` (inference; no dropout).
    fn forward(&self, idx: &Tensor) -> Result<Tensor>;
    /// One empty key/value cache per layer for `batch` sequences of up to `max_len`.
    fn new_caches(&self, batch: usize, max_len: usize) -> Result<Vec<KvCache>>;
    /// Logits `[B, vocab]` of the last of the positions `idx` (`[B, T_new]`) adds after
    /// those in `caches`, which it extends.
    fn forward_cached(&self, idx: &Tensor, caches: &mut [KvCache]) -> Result<Tensor>;
}

impl LanguageModel for Gpt {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn context(&self) -> usize {
        self.cfg.block_size
    }
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        Gpt::forward(self, idx, None)
    }
    fn new_caches(&self, batch: usize, max_len: usize) -> Result<Vec<KvCache>> {
        Gpt::new_caches(self, batch, max_len)
    }
    fn forward_cached(&self, idx: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        Gpt::forward_cached(self, idx, caches)
    }
}
