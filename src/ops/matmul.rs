//! Matrix multiply: 2-D and batched, with broadcast batch dims.

use super::{check_float, check_same};
use crate::autograd::{record, Op};
use crate::backend::interface::{Epilogue, Gemv, GemvNorm};
use crate::layout::broadcast_shapes;
use crate::ops::view;
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
        if recording(&inputs) || inputs.iter().flatten().any(|t| t.device() != self.device()) {
            return Ok(None);
        }
        if self.rank() == 0 || weight.rank() != 2 {
            return Ok(None);
        }
        let (n, k) = (weight.shape()[0], weight.shape()[1]);
        let lead = &self.shape()[..self.rank() - 1];
        let rows: usize = lead.iter().product();
        if self.shape().last() != Some(&k) || rows > self.read_storage().gemv_max_rows() {
            return Ok(None);
        }
        let x = self.reshape(&[rows, k])?;
        let out = {
            let (ws, gs) = (weight.read_storage(), norm.gamma.read_storage());
            let bs = bias.map(|t| t.read_storage());
            let betas = norm.beta.map(|t| t.read_storage());
            let folded = GemvNorm {
                gamma: (&*gs, norm.gamma.layout()),
                beta: view(&betas, norm.beta),
                rms: norm.beta.is_none(),
                eps: norm.eps as f32,
            };
            let args = Gemv {
                weight: (&*ws, weight.layout()),
                bias: view(&bs, bias),
                residual: None,
                gelu,
                norm: Some(folded),
            };
            x.read_storage().gemv(x.layout(), args)?
        };
        let mut shape = lead.to_vec();
        shape.push(n);
        Ok(out.map(|o| Tensor::from_storage(o, &shape, None)))
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
    if x.shape()[0] > x.read_storage().gemv_max_rows() {
        return Ok(None);
    }
    let all = [Some(x), Some(w), b, residual];
    if all.iter().flatten().any(|t| t.device() != x.device()) {
        return Ok(None);
    }
    let out = {
        let ws = w.read_storage();
        let bs = b.map(|t| t.read_storage());
        let rs = residual.map(|t| t.read_storage());
        let args = Gemv {
            weight: (&*ws, w.layout()),
            bias: view(&bs, b),
            residual: view(&rs, residual),
            gelu,
            norm: None,
        };
        x.read_storage().gemv(x.layout(), args)?
    };
    Ok(out.map(|o| Tensor::from_storage(o, &[x.shape()[0], w.shape()[0]], None)))
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
    let on_one_device = devices
        .iter()
        .flatten()
        .all(|t| t.device() == x.device() && t.dtype() == x.dtype());
    if !on_one_device || !x.read_storage().has_linear_epilogue() || w.rank() != 2 || x.rank() == 0 {
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
        Epilogue::GeluBias
    } else {
        Epilogue::Bias
    };
    let out = {
        let (ws, bs) = (w.read_storage(), b.read_storage());
        let rs = r2.as_ref().map(|r| r.read_storage());
        x2.read_storage().linear_epilogue(
            x2.layout(),
            (&*ws, w.layout()),
            (&*bs, b.layout()),
            epilogue,
            view(&rs, r2.as_ref()),
        )?
    };
    Ok(out.map(|o| Tensor::from_storage(o, &shape, None)))
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
        let (ws, bs) = (w.read_storage(), b.read_storage());
        x.read_storage().linear_epilogue(
            x.layout(),
            (&*ws, w.layout()),
            (&*bs, b.layout()),
            Epilogue::Bias,
            None,
        )?
    };
    let Some(out) = out else {
        return Ok(None);
    };
    let rec = record(&[x, w, b], || {
        Op::LinearBias(x.clone(), w.clone(), b.clone())
    });
    Ok(Some(Tensor::from_storage(
        out,
        &[x.shape()[0], w.shape()[0]],
        rec,
    )))
}
