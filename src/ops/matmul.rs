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
        let out = {
            let (sa, sb) = (a.read_storage(), b.read_storage());
            match (&*sa, &*sb) {
                (Storage::Cuda(x), Storage::Cuda(y)) => {
                    Storage::Cuda(cuda::matmul(x, a.layout(), y, b.layout())?)
                }
                _ => Storage::Cpu(cpu::matmul(sa.cpu()?, a.layout(), sb.cpu()?, b.layout())?),
            }
        };
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
