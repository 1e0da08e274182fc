//! Optimizers, learning-rate schedules and gradient clipping.

mod adamw;
mod clip;
mod schedule;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::clip_grad_norm;
pub use schedule::WarmupCosine;
pub use sgd::Sgd;
