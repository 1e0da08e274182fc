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
}
