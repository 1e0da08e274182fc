#![doc = include_str!("../README.md")]

pub mod autograd;
pub mod backend;
pub mod chat;
pub mod data;
pub mod device;
pub mod dtype;
pub mod error;
pub mod generate;
pub mod inference;
pub mod io;
pub mod layout;
pub mod models;
pub mod nn;
mod ops;
pub mod optim;
pub mod profile;
pub mod qmatrix;
pub mod rng;
mod tensor;
pub mod token_file;
pub mod tokenizer;
pub mod tokenizer_gguf;
pub mod tokenizer_spm;
pub mod train;

pub use autograd::{no_grad, GradStore};
pub use backend::storage;
pub use backend::{BinaryOp, CmpOp, ReduceOp, RotaryStyle, UnaryKind, UnaryOp};
pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use ops::{
    causal_mask, rotary_tables, rotary_tables_for, rotary_tables_scaled, AttnMask, FoldedNorm,
    RotarySpec,
};
pub use qmatrix::QMatrix;
pub use rng::Rng;
pub use tensor::{Tensor, TensorId};
