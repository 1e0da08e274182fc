//! Reductions: sum, mean, max, min over dims (with or without keepdim), argmax, argmin.

use super::check_float;
use crate::autograd::{record, Op};
use crate::backend::ReduceOp;
use crate::layout::keepdim_shape;
use crate::{Error, Result, Tensor};

/// Validated, sorted, de-duplicated dims.
fn normalize_dims(op: &'static str, t: &Tensor, dims: &[usize]) -> Result<Vec<usize>> {
    for &d in dims {
        t.layout().check_dim(op, d)?;
    }
    let mut v = dims.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

fn squeezed(shape: &[usize], dims: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter(|(d, _)| !dims.contains(d))
        .map(|(_, &n)| n)
        .collect()
}

impl Tensor {
    fn reduce(
        &self,
        op_name: &'static str,
        dims: &[usize],
        keepdim: bool,
        op: ReduceOp,
    ) -> Result<Tensor> {
        check_float(op_name, self)?;
        let dims = normalize_dims(op_name, self, dims)?;
        let keep = keepdim_shape(self.shape(), &dims);
        let out = self.read_storage().reduce(self.layout(), &dims, op)?;
        let result = match op {
            ReduceOp::Sum => {
                let rec = record(&[self], || Op::Sum(self.clone(), dims.clone()));
                Tensor::from_storage(out, &keep, rec)
            }
            ReduceOp::Max | ReduceOp::Min => {
                let raw = Tensor::from_storage(out, &keep, None);
                let rec = record(&[self], || {
                    Op::MaxMin(self.clone(), dims.clone(), raw.clone())
                });
                raw.view_with(raw.layout().clone(), rec)
            }
        };
        if keepdim {
            Ok(result)
        } else {
            result.reshape(&squeezed(self.shape(), &dims))
        }
    }

    /// Sum over `dims`, dropping them.
    pub fn sum(&self, dims: &[usize]) -> Result<Tensor> {
        self.reduce("sum", dims, false, ReduceOp::Sum)
    }
    /// Sum over `dims`, keeping them as size 1.
    pub fn sum_keepdim(&self, dims: &[usize]) -> Result<Tensor> {
        self.reduce("sum", dims, true, ReduceOp::Sum)
    }
    /// Sum of every element, as a shape-`[]` tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.sum(&dims)
    }
    /// Mean over `dims`, dropping them.
    pub fn mean(&self, dims: &[usize]) -> Result<Tensor> {
        let n = count(self, dims)?;
        self.sum(dims)?.affine(1.0 / n as f64, 0.0)
    }
    /// Mean over `dims`, keeping them as size 1.
    pub fn mean_keepdim(&self, dims: &[usize]) -> Result<Tensor> {
        let n = count(self, dims)?;
        self.sum_keepdim(dims)?.affine(1.0 / n as f64, 0.0)
    }
    /// Mean of every element, as a shape-`[]` tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.mean(&dims)
    }
    /// Largest element along `dim` (ties share the gradient).
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce("max", &[dim], keepdim, ReduceOp::Max)
    }
    /// Smallest element along `dim` (ties share the gradient).
    pub fn min(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce("min", &[dim], keepdim, ReduceOp::Min)
    }

    fn arg_reduce(&self, dim: usize, keepdim: bool, max: bool) -> Result<Tensor> {
        self.layout().check_dim("argmax", dim)?;
        let out = self.read_storage().arg_reduce(self.layout(), dim, max)?;
        let shape = if keepdim {
            keepdim_shape(self.shape(), &[dim])
        } else {
            squeezed(self.shape(), &[dim])
        };
        Ok(Tensor::from_storage(out, &shape, None))
    }
    /// Index (i64) of the largest element along `dim`; the first wins ties.
    pub fn argmax(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(dim, keepdim, true)
    }
    /// Index (i64) of the smallest element along `dim`; the first wins ties.
    pub fn argmin(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(dim, keepdim, false)
    }
}

fn count(t: &Tensor, dims: &[usize]) -> Result<usize> {
    let dims = normalize_dims("mean", t, dims)?;
    let n: usize = dims.iter().map(|&d| t.shape()[d]).product();
    if n == 0 {
        return Err(Error::invalid(
            "mean",
            format!("mean over an empty dim of shape {:?}", t.shape()),
        ));
    }
    Ok(n)
}
