//! Weights kept in ggml's block-quantized encodings: [`QMatrix`], the matrix the products
//! and embedding lookups of GGUF models read without dequantizing it first. The block
//! formats themselves ([`GgmlType`]) are core types, which the backends' kernels decode.

mod matrix;

pub use crate::ggml_types::GgmlType;
pub use matrix::{is_quantized, QMatrix};
