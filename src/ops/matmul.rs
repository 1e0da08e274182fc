//! Matrix multiply: 2-D and batched, with broadcast batch dims.

use super::{check_float, check_same};
use crate::autograd::{record, Op};
use crate::backend::{cpu, cuda};
use crate::layout::broadcast_shapes;
use crate::storage::Storage;
use crate::{Error, Result, Tensor};

impl Tensor {
    /// `self @ rhs` for `[.., m, k] @ [.., k, n]`; batch dims broadcast (NumPy rules).
    /// Transposed and sliced operands are read through their strides, without copies.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        check_same("matmul", self, rhs)?;
        check_float("matmul", self)?;
        let mismatch = || Error::ShapeMismatch {
            op: "matmul",
            lhs: self.shape().to_vec(),
            rhs: rhs.shape().to_vec(),
        };
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra < 2 || rb < 2 || self.shape()[ra - 1] != rhs.shape()[rb - 2] {
            return Err(mismatch());
        }
        let batch = broadcast_shapes("matmul", &self.shape()[..ra - 2], &rhs.shape()[..rb - 2])
            .map_err(|_| mismatch())?;
        let (m, k, n) = (
            self.shape()[ra - 2],
            self.shape()[ra - 1],
            rhs.shape()[rb - 1],
        );
        let a = self.broadcast_as(&[batch.as_slice(), &[m, k]].concat())?;
        let b = rhs.broadcast_as(&[batch.as_slice(), &[k, n]].concat())?;
        let out = a
            .read_storage()
            .matmul(a.layout(), (&b.read_storage(), b.layout()))?;
        let rec = record(&[&a, &b], || Op::Matmul(a.clone(), b.clone()));
        Ok(Tensor::from_storage(
            out,
            &[batch.as_slice(), &[m, n]].concat(),
            rec,
        ))
    }

    /// A linear layer: `self @ weight^T (+ bias)` for `self [.., in]`, `weight [out, in]`,
    /// `bias [out]`, as one GEMM over all leading rows. On a GPU with a bias, cuBLASLt adds
    /// the bias in the GEMM's epilogue (one write of the output instead of three passes).
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let mismatch = || Error::ShapeMismatch {
            op: "linear",
            lhs: self.shape().to_vec(),
            rhs: weight.shape().to_vec(),
        };
        if weight.rank() != 2 || self.rank() == 0 || self.shape().last() != Some(&weight.shape()[1])
        {
            return Err(mismatch());
        }
        let (out_features, in_features) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = bias {
            if b.shape() != [out_features] {
                return Err(Error::ShapeMismatch {
                    op: "linear bias",
                    lhs: b.shape().to_vec(),
                    rhs: vec![out_features],
                });
            }
        }
        let lead = &self.shape()[..self.rank() - 1];
        let rows: usize = lead.iter().product();
        let mut shape = lead.to_vec();
        shape.push(out_features);
        let x = self.reshape(&[rows, in_features])?;
        if !recording(&[Some(self), Some(weight), bias]) {
            if let Some(y) = small_gemv(&x, weight, bias, None, false)? {
                return y.reshape(&shape);
            }
        }
        if let Some(b) = bias {
            if let Some(y) = fused_linear(&x, weight, b)? {
                return y.reshape(&shape);
            }
        }
        // The transposed weight is read through its strides.
        let mut y = x.matmul(&weight.t()?)?;
        if let Some(b) = bias {
            y = y.add(b)?;
        }
        y.reshape(&shape)
    }
}

impl Tensor {
    /// `gelu_tanh?(self @ weight^T + bias) (+ residual)`: a linear layer with its
    /// activation and residual add. When no gradient is being recorded and everything sits
    /// on one GPU, cuBLASLt does it in one GEMM (activation and residual in the epilogue);
    /// otherwise it is the same ops one after another.
    pub fn linear_fused(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        gelu: bool,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let recording = recording(&[Some(self), Some(weight), bias, residual]);
        if !recording && self.rank() > 0 && weight.rank() == 2 {
            let k = weight.shape()[1];
            let lead = &self.shape()[..self.rank() - 1];
            let rows: usize = lead.iter().product();
            let mut shape = lead.to_vec();
            shape.push(weight.shape()[0]);
            let shapes_fit = self.shape().last() == Some(&k)
                && residual.is_none_or(|r| r.shape() == shape.as_slice());
            if shapes_fit {
                let x2 = self.reshape(&[rows, k])?;
                let r2 = residual
                    .map(|r| r.reshape(&[rows, weight.shape()[0]]))
                    .transpose()?;
                if let Some(y) = small_gemv(&x2, weight, bias, r2.as_ref(), gelu)? {
                    return y.reshape(&shape);
                }
            }
        }
        // cuBLASLt applies its GELU after adding C, so GELU with a residual is two steps.
        if let (false, Some(b), false) = (recording, bias, gelu && residual.is_some()) {
            if let Some(y) = fused_epilogue(self, weight, b, gelu, residual)? {
                return Ok(y);
            }
        }
        let mut y = self.linear(weight, bias)?;
        if gelu {
            y = y.gelu()?;
        }
        match residual {
            Some(r) => y.add(r),
            None => Ok(y),
        }
    }
}

/// A norm folded into [`Tensor::normed_linear`]: layer norm (gamma and beta) or RMS norm
/// (gamma alone) over the last dim.
pub struct FoldedNorm<'a> {
    pub gamma: &'a Tensor,
    pub beta: Option<&'a Tensor>,
    pub eps: f64,
}

impl Tensor {
    /// `gelu?(norm(self) @ weight^T + bias)` in one decoding launch on a GPU (at most 8
    /// rows, nothing recorded); `None` when that does not apply, and the caller runs the
    /// norm and the linear layer as usual.
    pub fn normed_linear(
        &self,
        norm: &FoldedNorm<'_>,
        weight: &Tensor,
        bias: Option<&Tensor>,
        gelu: bool,
    ) -> Result<Option<Tensor>> {
        let inputs = [Some(self), Some(weight), bias, Some(norm.gamma), norm.beta];
        if recording(&inputs) || !matches!(self.device(), crate::Device::Cuda(_)) {
            return Ok(None);
        }
        if inputs.iter().flatten().any(|t| t.device() != self.device()) {
            return Ok(None);
        }
        if self.rank() == 0 || weight.rank() != 2 {
            return Ok(None);
        }
        let (n, k) = (weight.shape()[0], weight.shape()[1]);
        let lead = &self.shape()[..self.rank() - 1];
        let rows: usize = lead.iter().product();
        if self.shape().last() != Some(&k) || rows > cuda::GEMV_MAX_ROWS {
            return Ok(None);
        }
        let x = self.reshape(&[rows, k])?;
        let out = {
            let (xs, ws, gs) = (
                x.read_storage(),
                weight.read_storage(),
                norm.gamma.read_storage(),
            );
            let bs = bias.map(|t| t.read_storage());
            let betas = norm.beta.map(|t| t.read_storage());
            let b = cuda_pair(bs.as_deref(), bias);
            let beta = cuda_pair(betas.as_deref(), norm.beta);
            let gamma = cuda_pair(Some(&*gs), Some(norm.gamma));
            match (&*xs, &*ws, gamma) {
                (Storage::Cuda(xc), Storage::Cuda(wc), Some(gamma)) => {
                    let folded = cuda::GemvNorm {
                        gamma,
                        beta,
                        rms: norm.beta.is_none(),
                        eps: norm.eps as f32,
                    };
                    cuda::gemv(
                        xc,
                        x.layout(),
                        wc,
                        weight.layout(),
                        b,
                        None,
                        gelu,
                        Some(folded),
                    )?
                }
                _ => None,
            }
        };
        let mut shape = lead.to_vec();
        shape.push(n);
        Ok(out.map(|o| Tensor::from_storage(Storage::Cuda(o), &shape, None)))
    }
}

/// True when autograd would record an op on these inputs.
fn recording(inputs: &[Option<&Tensor>]) -> bool {
    crate::autograd::is_grad_enabled() && inputs.iter().flatten().any(|t| t.tracks_grad())
}

/// `gelu?(x @ w^T + b) + residual` for at most 8 rows of `x [rows, k]` on a GPU in one
/// matrix-vector launch (decoding); `None` when it does not apply.
fn small_gemv(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    residual: Option<&Tensor>,
    gelu: bool,
) -> Result<Option<Tensor>> {
    if !matches!(x.device(), crate::Device::Cuda(_)) || x.shape()[0] > cuda::GEMV_MAX_ROWS {
        return Ok(None);
    }
    let all = [Some(x), Some(w), b, residual];
    if all.iter().flatten().any(|t| t.device() != x.device()) {
        return Ok(None);
    }
    let out = {
        let (xs, ws) = (x.read_storage(), w.read_storage());
        let bs = b.map(|t| t.read_storage());
        let rs = residual.map(|t| t.read_storage());
        let bias = cuda_pair(bs.as_deref(), b);
        let res = cuda_pair(rs.as_deref(), residual);
        if bias.is_some() != b.is_some() || res.is_some() != residual.is_some() {
            return Ok(None);
        }
        match (&*xs, &*ws) {
            (Storage::Cuda(xc), Storage::Cuda(wc)) => {
                cuda::gemv(xc, x.layout(), wc, w.layout(), bias, res, gelu, None)?
            }
            _ => None,
        }
    };
    Ok(out.map(|o| Tensor::from_storage(Storage::Cuda(o), &[x.shape()[0], w.shape()[0]], None)))
}

/// A GPU buffer with its tensor's layout, when both are there and the buffer is on a GPU.
fn cuda_pair<'a>(
    g: Option<&'a Storage>,
    t: Option<&'a Tensor>,
) -> Option<(&'a cuda::CudaStorage, &'a crate::Layout)> {
    match (g, t) {
        (Some(Storage::Cuda(s)), Some(t)) => Some((s, t.layout())),
        _ => None,
    }
}

/// The one-GEMM form of [`Tensor::linear_fused`] on a GPU; `None` when it does not apply.
fn fused_epilogue(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    gelu: bool,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let devices = [Some(x), Some(w), Some(b), residual];
    let on_one_gpu = devices
        .iter()
        .flatten()
        .all(|t| t.device() == x.device() && t.dtype() == x.dtype())
        && matches!(x.device(), crate::Device::Cuda(_));
    if !on_one_gpu || w.rank() != 2 || x.rank() == 0 {
        return Ok(None);
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    if x.shape().last() != Some(&k) || b.shape() != [n] {
        return Ok(None);
    }
    let lead = &x.shape()[..x.rank() - 1];
    let rows: usize = lead.iter().product();
    let mut shape = lead.to_vec();
    shape.push(n);
    if residual.is_some_and(|r| r.shape() != shape.as_slice()) {
        return Ok(None);
    }
    let x2 = x.reshape(&[rows, k])?;
    let r2 = residual.map(|r| r.reshape(&[rows, n])).transpose()?;
    let epilogue = if gelu {
        cuda::Epilogue::GeluBias
    } else {
        cuda::Epilogue::Bias
    };
    let out = {
        let (xs, ws, bs) = (x2.read_storage(), w.read_storage(), b.read_storage());
        let rs = r2.as_ref().map(|r| r.read_storage());
        let res = match (&r2, rs.as_deref()) {
            (Some(r), Some(Storage::Cuda(rc))) => Some((rc, r.layout())),
            (None, _) => None,
            _ => return Ok(None),
        };
        match (&*xs, &*ws, &*bs) {
            (Storage::Cuda(xc), Storage::Cuda(wc), Storage::Cuda(bc)) => cuda::linear_epilogue(
                xc,
                x2.layout(),
                wc,
                w.layout(),
                bc,
                b.layout(),
                epilogue,
                res,
            )?,
            _ => None,
        }
    };
    Ok(out.map(|o| Tensor::from_storage(Storage::Cuda(o), &shape, None)))
}

/// `x @ w^T + b` through cuBLASLt's bias epilogue, when all three are on one GPU in one
/// dtype and the operands suit it; `None` means "use the GEMM and an add".
fn fused_linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if x.device() != w.device() || x.device() != b.device() {
        return Ok(None);
    }
    if x.dtype() != w.dtype() || x.dtype() != b.dtype() {
        return Ok(None);
    }
    let out = {
        let (xs, ws, bs) = (x.read_storage(), w.read_storage(), b.read_storage());
        match (&*xs, &*ws, &*bs) {
            (Storage::Cuda(xc), Storage::Cuda(wc), Storage::Cuda(bc)) => {
                cuda::linear_bias(xc, x.layout(), wc, w.layout(), bc, b.layout())?
            }
            _ => None,
        }
    };
    let Some(out) = out else {
        return Ok(None);
    };
    let rec = record(&[x, w, b], || {
        Op::LinearBias(x.clone(), w.clone(), b.clone())
    });
    Ok(Some(Tensor::from_storage(
        Storage::Cuda(out),
        &[x.shape()[0], w.shape()[0]],
        rec,
    )))
}
