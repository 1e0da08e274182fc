//! Optimizers, learning-rate schedules, gradient clipping and loss scaling.

mod adamw;
mod clip;
mod loss_scale;
mod schedule;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_grad_norm, clip_grad_norm_scaled};
pub use loss_scale::LossScaler;
pub use schedule::WarmupCosine;
pub use sgd::Sgd;
