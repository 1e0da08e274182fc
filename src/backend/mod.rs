//! Backends: where op kernels run. The CPU backend is the reference for every op.
//!
//! The op kinds (`op_kinds`) and the types below are shared by all backends.

pub mod cpu;
pub mod cuda;
pub mod interface;
pub mod op_kinds;
pub mod profile;
pub mod storage;

pub use interface::{BackendStorage, View};
pub use op_kinds::{BinaryOp, CmpOp, Domain, Gradient, ReduceOp, UnaryKind, UnaryOp};

/// While the guard lives, no kernel of this thread writes a weight (generation), so the
/// backends may overlap the kernels that read them (the GPU's early launches).
pub fn weights_frozen() -> cuda::EarlyLaunchGuard {
    cuda::early_launches()
}

/// Which normalization a transformer uses, and a norm kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LayerNorm: subtract the mean, divide by the standard deviation (GPT, GPT-2).
    Layer,
    /// RMSNorm: divide by the root mean square (Llama).
    Rms,
}

/// How rotary embeddings pair up the features of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RotaryStyle {
    /// Pairs (2i, 2i+1), as in GGUF Llama checkpoints.
    Interleaved,
    /// Pairs (i, i + d/2), the "rotate half" layout of Hugging Face models.
    RotateHalf,
}
