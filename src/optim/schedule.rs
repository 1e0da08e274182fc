//! Learning-rate schedules.

/// Linear warmup from `max_lr / warmup` to `max_lr`, then cosine decay to `min_lr` at
/// `total` steps, constant after.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarmupCosine {
    pub max_lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl WarmupCosine {
    /// The learning rate for 0-based `step`.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.max_lr * (step + 1) as f64 / self.warmup as f64;
        }
        if step >= self.total || self.total <= self.warmup {
            return self.min_lr;
        }
        let progress = (step - self.warmup) as f64 / (self.total - self.warmup) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + cosine * (self.max_lr - self.min_lr)
    }
}
