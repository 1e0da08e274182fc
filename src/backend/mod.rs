//! Backends: where op kernels run. The CPU backend is the reference for every op.
//!
//! The op kinds below are shared by all backends so that dispatch is one `match`.

pub mod cpu;
pub mod cuda;
pub mod interface;
pub mod storage;

pub use interface::{BackendStorage, View};

/// Which normalization a transformer uses, and a norm kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LayerNorm: subtract the mean, divide by the standard deviation (GPT, GPT-2).
    Layer,
    /// RMSNorm: divide by the root mean square (Llama).
    Rms,
}

/// Elementwise ops with one input. The `*Deriv` variants are the derivatives used by
/// backward passes (they are not differentiable themselves).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Relu,
    Abs,
    /// GELU, tanh approximation (GPT-2).
    GeluTanh,
    /// GELU with the exact error function.
    GeluErf,
    /// x * sigmoid(x).
    Silu,
    /// `x * mul + add`.
    Affine {
        mul: f64,
        add: f64,
    },
    /// `x ^ e`.
    Powf(f64),
    /// 1 where x > 0, else 0 (the derivative of ReLU).
    Step,
    GeluTanhDeriv,
    GeluErfDeriv,
    SiluDeriv,
}

/// Elementwise ops with two inputs of the same shape (broadcasting happens before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
}

/// Elementwise comparisons; the result is a u8 mask of 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Reductions over a set of dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

/// How rotary embeddings pair up the features of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RotaryStyle {
    /// Pairs (2i, 2i+1), as in GGUF Llama checkpoints.
    Interleaved,
    /// Pairs (i, i + d/2), the "rotate half" layout of Hugging Face models.
    RotateHalf,
}
