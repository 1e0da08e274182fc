//! Indexing ops: index_select, embedding, gather, scatter_add.

use super::check_float;
use crate::autograd::{record, Op};
use crate::backend::{cpu, cuda};
use crate::storage::Storage;
use crate::{Error, Result, Tensor};

fn check_index(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_index() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
        })
    }
}

/// Index tensors for gather/scatter: same rank as the data, no larger off `dim`.
fn check_gather_shapes(op: &'static str, data: &Tensor, index: &Tensor, dim: usize) -> Result<()> {
    data.layout().check_dim(op, dim)?;
    let fits = index.rank() == data.rank()
        && (0..data.rank()).all(|d| d == dim || index.shape()[d] <= data.shape()[d]);
    if fits {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            lhs: data.shape().to_vec(),
            rhs: index.shape().to_vec(),
        })
    }
}

impl Tensor {
    /// Entries `ids` (1-D, integer) along `dim`.
    pub fn index_select(&self, dim: usize, ids: &Tensor) -> Result<Tensor> {
        check_index("index_select", ids)?;
        self.layout().check_dim("index_select", dim)?;
        if ids.rank() != 1 {
            return Err(Error::invalid(
                "index_select",
                format!("ids must be 1-D, got shape {:?}", ids.shape()),
            ));
        }
        super::check_same_device("index_select", self, ids)?;
        let out = match (&*self.read_storage(), &*ids.read_storage()) {
            (Storage::Cuda(s), Storage::Cuda(i)) => {
                Storage::Cuda(cuda::index_select(s, self.layout(), dim, i, ids.layout())?)
            }
            (s, i) => {
                let idx = i.cpu()?.to_indices("index_select", ids.layout())?;
                Storage::Cpu(cpu::index_select(s.cpu()?, self.layout(), dim, &idx)?)
            }
        };
        let mut shape = self.shape().to_vec();
        shape[dim] = ids.numel();
        let differentiable = self.dtype().is_float();
        let rec = if differentiable {
            record(&[self], || Op::IndexSelect {
                src: self.clone(),
                ids: ids.clone(),
                dim,
            })
        } else {
            None
        };
        Ok(Tensor::from_storage(out, &shape, rec))
    }

    /// Rows of `weight` `[V, C]` for each id: the result has shape `ids.shape + [C]`.
    pub fn embedding(ids: &Tensor, weight: &Tensor) -> Result<Tensor> {
        if weight.rank() != 2 {
            return Err(Error::invalid(
                "embedding",
                format!("weight must be [vocab, dim], got {:?}", weight.shape()),
            ));
        }
        let rows = weight.index_select(0, &ids.flatten_all()?)?;
        let mut shape = ids.shape().to_vec();
        shape.push(weight.shape()[1]);
        rows.reshape(&shape)
    }

    /// `out[p] = self[p with coordinate dim replaced by index[p]]`; out has index's shape.
    pub fn gather(&self, dim: usize, index: &Tensor) -> Result<Tensor> {
        check_index("gather", index)?;
        check_gather_shapes("gather", self, index, dim)?;
        super::check_same_device("gather", self, index)?;
        let out = match (&*self.read_storage(), &*index.read_storage()) {
            (Storage::Cuda(s), Storage::Cuda(i)) => {
                Storage::Cuda(cuda::gather(s, self.layout(), dim, i, index.layout())?)
            }
            (s, i) => {
                let idx = i.cpu()?.to_indices("gather", index.layout())?;
                Storage::Cpu(cpu::gather(
                    s.cpu()?,
                    self.layout(),
                    dim,
                    &idx,
                    index.shape(),
                )?)
            }
        };
        let rec = if self.dtype().is_float() {
            record(&[self], || Op::Gather {
                src: self.clone(),
                index: index.clone(),
                dim,
            })
        } else {
            None
        };
        Ok(Tensor::from_storage(out, index.shape(), rec))
    }

    /// A copy of `self` with `src[p]` added at `p with coordinate dim replaced by
    /// index[p]`; `index` and `src` have the same shape. Repeated targets accumulate.
    pub fn scatter_add(&self, dim: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        check_index("scatter_add", index)?;
        check_float("scatter_add", self)?;
        super::check_same("scatter_add", self, src)?;
        check_gather_shapes("scatter_add", self, index, dim)?;
        if index.shape() != src.shape() {
            return Err(Error::ShapeMismatch {
                op: "scatter_add",
                lhs: index.shape().to_vec(),
                rhs: src.shape().to_vec(),
            });
        }
        super::check_same_device("scatter_add", self, index)?;
        let out = {
            let (sd, si, ss) = (
                self.read_storage(),
                index.read_storage(),
                src.read_storage(),
            );
            match (&*sd, &*si, &*ss) {
                (Storage::Cuda(d), Storage::Cuda(i), Storage::Cuda(s)) => Storage::Cuda(
                    cuda::scatter_add(d, self.layout(), dim, i, index.layout(), s, src.layout())?,
                ),
                _ => {
                    let idx = si.cpu()?.to_indices("scatter_add", index.layout())?;
                    Storage::Cpu(cpu::scatter_add(
                        sd.cpu()?,
                        self.layout(),
                        dim,
                        &idx,
                        index.shape(),
                        ss.cpu()?,
                        src.layout(),
                    )?)
                }
            }
        };
        let rec = record(&[self, src], || Op::ScatterAdd {
            dst: self.clone(),
            index: index.clone(),
            src: src.clone(),
            dim,
        });
        Ok(Tensor::from_storage(out, self.shape(), rec))
    }
}
