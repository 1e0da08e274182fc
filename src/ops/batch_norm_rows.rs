//! Batch normalisation in two fused passes over images held channels-last (`[M, C]`
//! rows, `M = N·H·W`): the per-channel sums (one read of the input), then the
//! per-channel affine map (one read, one write). The backward is the same two passes over
//! the output gradient. Statistics run in the compute dtype (f32 for half inputs); the
//! sums of the forward are taken about each channel's first value, which keeps the
//! variance free of cancellation.

use crate::autograd::{record, Op};
use crate::{DType, Error, Result, Tensor};

/// The dtype batch statistics are kept in: f32 for half-precision inputs, else the input's.
fn stats_dtype(x: &Tensor) -> DType {
    match x.dtype() {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// The backend's per-channel sums of `x` (see `BackendStorage::channel_sums`), reduced
/// over the splits: `[2, C]`. `None` where the backend has no fused pass.
fn channel_sums(x: &Tensor, grad: Option<&Tensor>, center: &Tensor) -> Result<Option<Tensor>> {
    let storage = x.read_storage();
    let grad_storage = grad.map(|g| g.read_storage());
    let grad_view = match (grad, &grad_storage) {
        (Some(g), Some(s)) => Some((&**s, g.layout())),
        _ => None,
    };
    let sums = storage.channel_sums(
        x.layout(),
        grad_view,
        (&center.read_storage(), center.layout()),
    )?;
    drop(grad_storage);
    match sums {
        Some((s, layout)) => Tensor::from_storage_in(s, layout, None).sum(&[1]).map(Some),
        None => Ok(None),
    }
}

/// The backend's per-channel affine map of `x` (see `BackendStorage::channel_affine`).
fn channel_affine(
    x: &Tensor,
    grad: Option<(&Tensor, &Tensor)>,
    mean: &Tensor,
    beta: &Tensor,
    gamma: &Tensor,
) -> Result<Option<Tensor>> {
    let storage = x.read_storage();
    let (g, a) = match grad {
        Some((g, a)) => (Some(g.read_storage()), Some(a.read_storage())),
        None => (None, None),
    };
    let grad_view = match (grad, &g, &a) {
        (Some((gt, at)), Some(gs), Some(as_)) => {
            Some(((&**gs, gt.layout()), (&**as_, at.layout())))
        }
        _ => None,
    };
    let out = storage.channel_affine(
        x.layout(),
        grad_view,
        (&mean.read_storage(), mean.layout()),
        (&beta.read_storage(), beta.layout()),
        (&gamma.read_storage(), gamma.layout()),
    )?;
    Ok(out.map(|s| Tensor::from_storage_in(s, crate::Layout::contiguous(x.shape()), None)))
}

/// A `[C]` channel vector in `dtype`, contiguous: `t` converted, or `value` everywhere.
fn channel_vector(
    t: Option<&Tensor>,
    value: f64,
    c: usize,
    like: &Tensor,
    dtype: DType,
) -> Result<Tensor> {
    match t {
        Some(t) => t.detach().to_dtype(dtype)?.reshape(&[c])?.contiguous(),
        None => Tensor::full(value, &[c], dtype, like.device()),
    }
}

/// The batch's statistics and normalised rows.
pub(crate) struct RowsTrain {
    /// `[M, C]` in the input's dtype, differentiable in the input, weight and bias.
    pub y: Tensor,
    /// Per-channel batch mean and biased variance, `[C]` in the statistics dtype (detached).
    pub mean: Tensor,
    pub var: Tensor,
}

/// Training-mode batch normalisation of `x` (`[M, C]`, contiguous) by its own
/// statistics, `None` where the backend has no fused pass.
pub(crate) fn batch_norm_rows_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Option<RowsTrain>> {
    let (m, c) = (x.shape()[0], x.shape()[1]);
    let dt = stats_dtype(x);
    let (mean, var, invstd, beta, gamma) = {
        let _no_grad = crate::no_grad();
        let center = x
            .detach()
            .narrow(0, 0, 1)?
            .to_dtype(dt)?
            .reshape(&[c])?
            .contiguous()?;
        let Some(sums) = channel_sums(&x.detach(), None, &center)? else {
            return Ok(None);
        };
        let shifted = sums
            .narrow(0, 0, 1)?
            .reshape(&[c])?
            .mul_scalar(1.0 / m as f64)?;
        let square = sums
            .narrow(0, 1, 1)?
            .reshape(&[c])?
            .mul_scalar(1.0 / m as f64)?;
        let mean = center.add(&shifted)?.contiguous()?;
        let var = square.sub(&shifted.mul(&shifted)?)?.relu()?;
        let invstd = Tensor::ones(&[c], dt, x.device())?.div(&var.add_scalar(eps)?.sqrt()?)?;
        let beta = invstd
            .mul(&channel_vector(weight, 1.0, c, x, dt)?)?
            .contiguous()?;
        let gamma = channel_vector(bias, 0.0, c, x, dt)?;
        (mean, var, invstd, beta, gamma)
    };
    let Some(y) = channel_affine(&x.detach(), None, &mean, &beta, &gamma)? else {
        return Ok(None);
    };
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let rec = record(&inputs, || Op::BatchNormRows {
        x: x.clone(),
        weight: weight.cloned(),
        bias: bias.cloned(),
        mean: mean.clone(),
        invstd: invstd.clone(),
    });
    let y = y.view_with(y.layout().clone(), rec);
    Ok(Some(RowsTrain { y, mean, var }))
}

/// Evaluation-mode batch normalisation of `x` (`[M, C]`, contiguous) by the running
/// statistics, not differentiable (callers that need gradients take the composed path);
/// `None` where the backend has no fused pass.
pub(crate) fn batch_norm_rows_eval(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    let c = x.shape()[1];
    let dt = stats_dtype(x);
    let _no_grad = crate::no_grad();
    let mean = channel_vector(Some(running_mean), 0.0, c, x, dt)?;
    let var = channel_vector(Some(running_var), 1.0, c, x, dt)?;
    let beta = channel_vector(weight, 1.0, c, x, dt)?
        .div(&var.add_scalar(eps)?.sqrt()?)?
        .contiguous()?;
    let gamma = channel_vector(bias, 0.0, c, x, dt)?;
    channel_affine(x, None, &mean, &beta, &gamma)
}

/// The gradients of [`Op::BatchNormRows`] for the output gradient `g`: `(dx, dweight,
/// dbias)`, the last two for the parameters present.
pub(crate) fn batch_norm_rows_grads(
    x: &Tensor,
    weight: Option<&Tensor>,
    mean: &Tensor,
    invstd: &Tensor,
    g: &Tensor,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let (m, c) = (x.shape()[0], x.shape()[1]);
    let dt = stats_dtype(x);
    let g = g.to_dtype(x.dtype())?.contiguous()?;
    let fused = || Error::invalid("batch_norm2d", "the fused backward declined its operands");
    let sums = channel_sums(x, Some(&g), mean)?.ok_or_else(fused)?;
    let dbias = sums.narrow(0, 0, 1)?.reshape(&[c])?;
    let dcentred = sums.narrow(0, 1, 1)?.reshape(&[c])?;
    let k1 = invstd
        .mul(&channel_vector(weight, 1.0, c, x, dt)?)?
        .contiguous()?;
    let k2 = k1
        .mul(invstd)?
        .mul(invstd)?
        .mul(&dcentred)?
        .mul_scalar(-1.0 / m as f64)?
        .contiguous()?;
    let k3 = k1.mul(&dbias)?.mul_scalar(-1.0 / m as f64)?.contiguous()?;
    let dx = channel_affine(x, Some((&g, &k1)), mean, &k2, &k3)?.ok_or_else(fused)?;
    let dweight = weight
        .map(|w| dcentred.mul(invstd)?.to_dtype(w.dtype()))
        .transpose()?;
    Ok((dx, dweight, Some(dbias)))
}
