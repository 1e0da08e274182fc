#![doc = include_str!("../README.md")]

// Core types.
pub mod atomic_file;
pub mod device;
pub mod dtype;
pub mod error;
pub mod ggml_types;
pub mod layout;
pub mod rng;
mod tensor;

// Backends, and the differentiable ops and autograd on top of them.
pub mod autograd;
pub mod backend;
mod ops;

// Quantized weights, files, text.
pub mod io;
pub mod quantized;
pub mod text;
pub mod vision;

// Layers, optimizers, models; running and training them.
pub mod infer;
pub mod models;
pub mod nn;
pub mod optim;
pub mod train;

pub use autograd::{no_grad, GradStore};
pub use backend::{profile, storage};
pub use backend::{BinaryOp, CmpOp, ReduceOp, RotaryStyle, UnaryKind, UnaryOp};
pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use ops::{
    causal_mask, conv_algorithm, force_conv_algorithm, rotary_tables, rotary_tables_for,
    rotary_tables_scaled, set_conv_algorithm, AttnMask, Conv2dSpec, ConvAlgorithm,
    ConvAlgorithmGuard, ConvTranspose2dSpec, FoldedNorm, Padding2d, Pool2dSpec, RotarySpec,
    CONV_COLUMN_CAP_BYTES,
};
pub use quantized::QMatrix;
pub use rng::Rng;
pub use tensor::{Tensor, TensorId};
