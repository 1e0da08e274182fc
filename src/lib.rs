//! smith: tensors with reverse-mode autograd, a multithreaded CPU backend that is the
//! reference for every op, transformer building blocks, optimizers and a GPT trainer.

pub mod backend;
pub mod device;
pub mod dtype;
pub mod error;
pub mod layout;
pub mod rng;

pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use rng::Rng;
