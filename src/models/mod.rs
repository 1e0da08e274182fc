//! Model builders.

pub mod gpt;

pub use gpt::{Gpt, GptConfig};
