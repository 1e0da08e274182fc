//! Model builders.

pub mod gpt;
pub mod hf_gpt2;

pub use gpt::{Gpt, GptConfig};
pub use hf_gpt2::{is_hf_gpt2, load_hf_gpt2, save_hf_gpt2};
