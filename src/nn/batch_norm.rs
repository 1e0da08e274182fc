//! Batch normalisation over the channels of `[N, C, H, W]` (PyTorch's `BatchNorm2d`):
//! in training, each channel normalised by its batch mean and biased variance, and the
//! running statistics moved towards the batch's (the unbiased variance, momentum 0.1); in
//! evaluation, the running statistics alone. For inference it folds into the convolution
//! before it.

use super::{push, Param};
use crate::{DType, Device, Error, Result, Tensor};

/// A `BatchNorm2d` layer with its affine parameters and running statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    /// Per-channel scale (`None` without affine parameters).
    pub weight: Option<Tensor>,
    /// Per-channel shift.
    pub bias: Option<Tensor>,
    /// Running mean of each channel (f32).
    pub running_mean: Tensor,
    /// Running unbiased variance of each channel (f32).
    pub running_var: Tensor,
    /// Training batches seen (PyTorch's `num_batches_tracked`).
    pub num_batches_tracked: u64,
    pub eps: f64,
    /// Weight of the latest batch in the running statistics.
    pub momentum: f64,
}

/// The dtype the statistics are computed in: f32 for half-precision inputs, else the
/// input's own.
fn compute_dtype(x: &Tensor) -> DType {
    match x.dtype() {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// The `[N·H·W, C]` rows of `x` when it is held channels-last (the layout the fused
/// passes read), else `None`.
fn channels_last_rows(x: &Tensor) -> Result<Option<Tensor>> {
    let nhwc = x.permute(&[0, 2, 3, 1])?;
    if !nhwc.is_contiguous() {
        return Ok(None);
    }
    let s = x.shape();
    Ok(Some(nhwc.reshape(&[s[0] * s[2] * s[3], s[1]])?))
}

/// `[N·H·W, C]` rows back to an `[N, C, H, W]` tensor held channels-last.
fn from_rows(rows: &Tensor, shape: &[usize]) -> Result<Tensor> {
    rows.reshape(&[shape[0], shape[2], shape[3], shape[1]])?
        .permute(&[0, 3, 1, 2])
}

fn bn_error(msg: String) -> Error {
    Error::invalid("batch_norm2d", msg)
}

impl BatchNorm2d {
    /// PyTorch's defaults: scale 1, shift 0, running mean 0 and variance 1, eps 1e-5,
    /// momentum 0.1.
    pub fn new(channels: usize, device: Device) -> Result<Self> {
        Ok(BatchNorm2d {
            weight: Some(Tensor::ones(&[channels], DType::F32, device)?.requires_grad()?),
            bias: Some(Tensor::zeros(&[channels], DType::F32, device)?.requires_grad()?),
            running_mean: Tensor::zeros(&[channels], DType::F32, device)?,
            running_var: Tensor::ones(&[channels], DType::F32, device)?,
            num_batches_tracked: 0,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Channels this layer normalises.
    pub fn channels(&self) -> usize {
        self.running_mean.numel()
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        if x.rank() != 4 || x.shape()[1] != self.channels() {
            return Err(bn_error(format!(
                "expected an input [N, {}, H, W], got {:?}",
                self.channels(),
                x.shape()
            )));
        }
        if !x.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "batch_norm2d",
                dtype: x.dtype(),
            });
        }
        Ok(())
    }

    /// `centred / sqrt(var + eps) * weight + bias` for `centred = x - mean` with a
    /// per-channel `var` (`[1, C, 1, 1]`), in centred's dtype.
    fn scale_shift(&self, centred: &Tensor, var: &Tensor) -> Result<Tensor> {
        let c = self.channels();
        let per_channel = |t: &Tensor| t.to_dtype(centred.dtype())?.reshape(&[1, c, 1, 1]);
        let mut y = centred.div(&per_channel(var)?.add_scalar(self.eps)?.sqrt()?)?;
        if let Some(w) = &self.weight {
            y = y.mul(&per_channel(w)?)?;
        }
        if let Some(b) = &self.bias {
            y = y.add(&per_channel(b)?)?;
        }
        Ok(y)
    }

    /// Training mode: normalises by the batch's statistics (differentiable in x, weight
    /// and bias) and updates the running statistics.
    pub fn forward_train(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        let n = x.numel() / self.channels().max(1);
        if n < 2 {
            return Err(bn_error(format!(
                "training needs more than one value per channel, got input {:?}",
                x.shape()
            )));
        }
        let fused = match channels_last_rows(x)? {
            Some(rows) => crate::ops::batch_norm_rows_train(
                &rows,
                self.weight.as_ref(),
                self.bias.as_ref(),
                self.eps,
            )?,
            None => None,
        };
        let (y, mean, var) = match fused {
            Some(t) => (from_rows(&t.y, x.shape())?, t.mean, t.var),
            None => {
                let xf = x.to_dtype(compute_dtype(x))?;
                let mean = xf.mean_keepdim(&[0, 2, 3])?;
                let centred = xf.sub(&mean)?;
                let var = centred.mul(&centred)?.mean_keepdim(&[0, 2, 3])?;
                let y = self.scale_shift(&centred, &var)?.to_dtype(x.dtype())?;
                (y, mean, var)
            }
        };
        {
            let _no_grad = crate::no_grad();
            let m = self.momentum;
            let c = self.channels();
            let stat = |t: &Tensor| t.reshape(&[c])?.to_dtype(self.running_mean.dtype());
            let unbiased = stat(&var)?.mul_scalar(n as f64 / (n - 1) as f64)?;
            let mean = stat(&mean)?;
            let moved = |old: &Tensor, new: &Tensor| -> Result<Tensor> {
                old.mul_scalar(1.0 - m)?.add(&new.mul_scalar(m)?)
            };
            self.running_mean
                .assign(&moved(&self.running_mean, &mean.detach())?)?;
            self.running_var
                .assign(&moved(&self.running_var, &unbiased.detach())?)?;
        }
        self.num_batches_tracked += 1;
        Ok(y)
    }

    /// Evaluation mode: normalises by the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        let c = self.channels();
        let wants_grad = crate::autograd::is_grad_enabled()
            && [Some(x), self.weight.as_ref(), self.bias.as_ref()]
                .into_iter()
                .flatten()
                .any(|t| t.tracks_grad());
        if !wants_grad {
            if let Some(rows) = channels_last_rows(x)? {
                let y = crate::ops::batch_norm_rows_eval(
                    &rows,
                    self.weight.as_ref(),
                    self.bias.as_ref(),
                    &self.running_mean,
                    &self.running_var,
                    self.eps,
                )?;
                if let Some(y) = y {
                    return from_rows(&y, x.shape());
                }
            }
        }
        let xf = x.to_dtype(compute_dtype(x))?;
        let mean = self
            .running_mean
            .to_dtype(xf.dtype())?
            .reshape(&[1, c, 1, 1])?;
        let var = self.running_var.reshape(&[1, c, 1, 1])?;
        self.scale_shift(&xf.sub(&mean)?, &var)?.to_dtype(x.dtype())
    }

    /// [`BatchNorm2d::forward_train`] or [`BatchNorm2d::forward_eval`].
    pub fn forward(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        if training {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    /// The weight and bias of a convolution followed by this layer in evaluation mode, as
    /// one convolution: `w * s` and `(b - mean) * s + shift` per output channel, with
    /// `s = weight / sqrt(running_var + eps)` (f32).
    pub fn fold_into_conv(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let c = self.channels();
        if weight.rank() != 4 || weight.shape()[0] != c {
            return Err(bn_error(format!(
                "a convolution weight [{c}, C, KH, KW] folds into this layer, got {:?}",
                weight.shape()
            )));
        }
        let _no_grad = crate::no_grad();
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let std = self.running_var.add_scalar(self.eps)?.sqrt()?;
        let scale = match &self.weight {
            Some(w) => f32(w)?.div(&std)?,
            None => Tensor::ones(&[c], DType::F32, weight.device())?.div(&std)?,
        };
        let w = f32(weight)?.mul(&scale.reshape(&[c, 1, 1, 1])?)?;
        let b = match bias {
            Some(b) => f32(b)?,
            None => Tensor::zeros(&[c], DType::F32, weight.device())?,
        };
        let mut b = b.sub(&self.running_mean)?.mul(&scale)?;
        if let Some(shift) = &self.bias {
            b = b.add(&f32(shift)?)?;
        }
        Ok((w, b))
    }

    /// Appends the affine parameters (no weight decay on norms).
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        if let Some(w) = &self.weight {
            push(out, prefix, "weight", w, false);
        }
        if let Some(b) = &self.bias {
            push(out, prefix, "bias", b, false);
        }
    }

    /// The running statistics by their PyTorch names (`running_mean`, `running_var`,
    /// `num_batches_tracked` as an i64 scalar).
    pub fn buffers(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let name = |n: &str| {
            if prefix.is_empty() {
                n.to_string()
            } else {
                format!("{prefix}.{n}")
            }
        };
        Ok(vec![
            (name("running_mean"), self.running_mean.clone()),
            (name("running_var"), self.running_var.clone()),
            (
                name("num_batches_tracked"),
                Tensor::from_vec(vec![self.num_batches_tracked as i64], &[], Device::Cpu)?,
            ),
        ])
    }
}
