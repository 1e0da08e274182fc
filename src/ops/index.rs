//! Indexing ops: index_select, embedding, gather, scatter_add.

use super::check_float;
use crate::autograd::{record, Op};

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
        let out = self.read_storage().index_select(
            self.layout(),
            dim,
            (&ids.read_storage(), ids.layout()),
        )?;
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
        let out = self.read_storage().gather(
            self.layout(),
            dim,
            (&index.read_storage(), index.layout()),
        )?;
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
        let out = self.read_storage().scatter_add(
            self.layout(),
            dim,
            (&index.read_storage(), index.layout()),
            (&src.read_storage(), src.layout()),
        )?;
        let rec = record(&[self, src], || Op::ScatterAdd {
            dst: self.clone(),
            index: index.clone(),
            src: src.clone(),
            dim,
        });
        Ok(Tensor::from_storage(out, self.shape(), rec))
    }
}
