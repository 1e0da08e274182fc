//! Shape ops: views (reshape, transpose, permute, narrow, squeeze, unsqueeze, broadcast),
//! explicit copies (contiguous, cast), and concat / stack / split.

use crate::autograd::{record, Op};
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};

impl Tensor {
    /// The same elements under `shape`. A view when the strides allow it; otherwise an
    /// explicit contiguous copy first (never contiguous strides forced onto a strided view).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        match self.layout().reshape_view(shape) {
            Some(layout) => {
                let rec = record(&[self], || Op::Reshape(self.clone()));
                Ok(self.view_with(layout, rec))
            }
            None => self.contiguous()?.reshape(shape),
        }
    }

    /// Collapses every dimension into one.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])
    }

    /// Swaps two dimensions (a view).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        self.layout().check_dim("transpose", d0)?;
        self.layout().check_dim("transpose", d1)?;
        perm.swap(d0, d1);
        self.permute(&perm)
    }

    /// Transposes the last two dimensions (a view).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::invalid(
                "t",
                format!("needs rank >= 2, got shape {:?}", self.shape()),
            ));
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    /// Reorders dimensions: output dim i is input dim `perm[i]` (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(perm)?;
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let rec = record(&[self], || Op::Permute(self.clone(), perm.to_vec()));
        Ok(self.view_with(layout, rec))
    }

    /// Elements `start..start + len` along `dim` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let layout = self.layout().narrow(dim, start, len)?;
        let rec = record(&[self], || Op::Narrow(self.clone(), dim, start));
        Ok(self.view_with(layout, rec))
    }

    /// Removes a dimension of size 1.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        self.layout().check_dim("squeeze", dim)?;
        if self.shape()[dim] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!("dim {dim} of shape {:?} is not 1", self.shape()),
            ));
        }
        let mut shape = self.shape().to_vec();
        shape.remove(dim);
        self.reshape(&shape)
    }

    /// Inserts a dimension of size 1 at `dim` (0..=rank).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::DimOutOfRange {
                op: "unsqueeze",
                dim,
                shape: self.shape().to_vec(),
            });
        }
        let mut shape = self.shape().to_vec();
        shape.insert(dim, 1);
        self.reshape(&shape)
    }

    /// Expands to `shape` by NumPy rules without copying (stride-0 view).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_as(shape)?;
        let rec = record(&[self], || Op::Broadcast(self.clone()));
        Ok(self.view_with(layout, rec))
    }

    /// Alias of [`Tensor::broadcast_as`].
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        self.broadcast_as(shape)
    }

    /// This tensor if already contiguous, else a contiguous copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        self.copy()
    }

    /// A contiguous copy that owns fresh storage.
    pub fn copy(&self) -> Result<Tensor> {
        let out = self.read_storage().copy_contiguous(self.layout())?;
        let rec = record(&[self], || Op::Copy(self.clone()));
        Ok(Tensor::from_storage(out, self.shape(), rec))
    }

    /// The elements converted to `dtype` (differentiable between float types).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let l = self.layout();
        let keep = !l.is_contiguous() && l.is_dense();
        let out = if keep {
            self.read_storage().cast(&l.dense_span(), dtype)?
        } else {
            self.read_storage().cast(l, dtype)?
        };
        let rec = if dtype.is_float() && self.dtype().is_float() {
            record(&[self], || Op::Cast(self.clone()))
        } else {
            None
        };
        Ok(if keep {
            Tensor::from_storage_in(out, l.dense_result(), rec)
        } else {
            Tensor::from_storage(out, self.shape(), rec)
        })
    }

    /// Concatenates tensors along `dim`; all other dims must match.
    pub fn cat(tensors: &[Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("cat", "needs at least one tensor"))?;
        first.layout().check_dim("cat", dim)?;
        let mut shape = first.shape().to_vec();
        shape[dim] = 0;
        for t in tensors {
            super::check_same("cat", first, t)?;
            let same_rank = t.rank() == first.rank();
            let others_match =
                same_rank && (0..t.rank()).all(|d| d == dim || t.shape()[d] == first.shape()[d]);
            if !others_match {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
            shape[dim] += t.shape()[dim];
        }
        if tensors.len() == 1 {
            return Ok(first.clone());
        }
        let out = {
            let guards: Vec<_> = tensors.iter().map(|t| t.read_storage()).collect();
            let parts: Vec<_> = guards
                .iter()
                .zip(tensors)
                .map(|(g, t)| (&**g, t.layout()))
                .collect();
            Storage::cat(&parts, dim, &shape)?
        };
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let rec = record(&refs, || Op::Cat(tensors.to_vec(), dim));
        Ok(Tensor::from_storage(out, &shape, rec))
    }

    /// Stacks same-shape tensors along a new dimension `dim`.
    pub fn stack(tensors: &[Tensor], dim: usize) -> Result<Tensor> {
        let parts = tensors
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, dim)
    }

    /// Splits along `dim` into pieces of the given sizes (views).
    pub fn split(&self, sizes: &[usize], dim: usize) -> Result<Vec<Tensor>> {
        self.layout().check_dim("split", dim)?;
        if sizes.iter().sum::<usize>() != self.shape()[dim] {
            return Err(Error::invalid(
                "split",
                format!(
                    "sizes {sizes:?} do not add up to dim {dim} of shape {:?}",
                    self.shape()
                ),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let piece = self.narrow(dim, start, n);
                start += n;
                piece
            })
            .collect()
    }

    /// Splits along `dim` into `n` pieces of equal size (views).
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Tensor>> {
        self.layout().check_dim("chunk", dim)?;
        let size = self.shape()[dim];
        if n == 0 || !size.is_multiple_of(n) {
            return Err(Error::invalid(
                "chunk",
                format!(
                    "dim {dim} of shape {:?} does not split into {n} equal chunks",
                    self.shape()
                ),
            ));
        }
        self.split(&vec![size / n; n], dim)
    }
}
