//! Dynamic loss scaling for f16 training: the loss is multiplied by a large factor so small
//! gradients survive f16, the gradients are divided by it again before the update, and a
//! step whose gradients overflowed is skipped with the factor halved; after a run of good
//! steps the factor doubles.

/// The scaling factor and its history (saved with checkpoints).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    /// The factor the loss is multiplied by.
    pub scale: f64,
    /// Good steps since the last change.
    pub good_steps: u64,
    /// Good steps after which the factor doubles.
    pub growth_interval: u64,
    /// Steps skipped so far because of inf or NaN gradients.
    pub skipped: u64,
}

impl Default for LossScaler {
    /// 2^16, doubling after 1000 good steps.
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 1000,
            skipped: 0,
        }
    }
}

impl LossScaler {
    /// Records a step given whether its (unscaled) gradients were finite; returns whether
    /// the optimizer may take it.
    pub fn update(&mut self, finite: bool) -> bool {
        if !finite {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            self.skipped += 1;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale = (self.scale * 2.0).min(f64::from(f32::MAX) / 2.0);
            self.good_steps = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_skips_good_runs_double() {
        let mut s = LossScaler {
            growth_interval: 3,
            ..LossScaler::default()
        };
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped), (32768.0, 1));
        assert!(s.update(true) && s.update(true));
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true));
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        for _ in 0..40 {
            s.update(false);
        }
        assert_eq!(s.scale, 1.0, "the factor never drops below 1");
    }
}
