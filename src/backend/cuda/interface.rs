//! The GPU's side of [`BackendStorage`]: each method launches the kernel of the same name
//! in this backend.

use super::CudaStorage;
use crate::backend::interface::{BackendStorage, View};
use crate::backend::{BinaryOp, CmpOp, NormKind, ReduceOp, RotaryStyle, UnaryOp};
use crate::{DType, Layout, Result};

impl BackendStorage for CudaStorage {
    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        super::unary(self, layout, op)
    }

    fn binary(&self, layout: &Layout, (b, lb): View<'_, Self>, op: BinaryOp) -> Result<Self> {
        super::binary(self, layout, b, lb, op)
    }

    fn cmp(&self, layout: &Layout, (b, lb): View<'_, Self>, op: CmpOp) -> Result<Self> {
        super::cmp(self, layout, b, lb, op)
    }

    fn where_cond(&self, layout: &Layout, a: View<'_, Self>, b: View<'_, Self>) -> Result<Self> {
        super::where_cond(self, layout, a.0, a.1, b.0, b.1)
    }

    fn reduce(&self, layout: &Layout, dims: &[usize], op: ReduceOp) -> Result<Self> {
        super::reduce(self, layout, dims, op)
    }

    fn arg_reduce(&self, layout: &Layout, dim: usize, max: bool) -> Result<Self> {
        super::arg_reduce(self, layout, dim, max)
    }

    fn copy_contiguous(&self, layout: &Layout) -> Result<Self> {
        super::copy_contiguous(self, layout)
    }

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        super::cast(self, layout, dtype)
    }

    fn index_select(&self, layout: &Layout, dim: usize, (i, li): View<'_, Self>) -> Result<Self> {
        super::index_select(self, layout, dim, i, li)
    }

    fn gather(&self, layout: &Layout, dim: usize, (i, li): View<'_, Self>) -> Result<Self> {
        super::gather(self, layout, dim, i, li)
    }

    fn index_add_zeros(
        &self,
        layout: &Layout,
        out_shape: &[usize],
        dim: usize,
        (i, li): View<'_, Self>,
    ) -> Result<Self> {
        super::index_add_zeros(self, layout, out_shape, dim, i, li)
    }

    fn scatter_add(
        &self,
        layout: &Layout,
        dim: usize,
        (i, li): View<'_, Self>,
        (s, ls): View<'_, Self>,
    ) -> Result<Self> {
        super::scatter_add(self, layout, dim, i, li, s, ls)
    }

    fn cat(parts: &[View<'_, Self>], dim: usize, out_shape: &[usize]) -> Result<Self> {
        super::cat(parts, dim, out_shape)
    }

    fn matmul(&self, layout: &Layout, (b, lb): View<'_, Self>) -> Result<Self> {
        super::matmul(self, layout, b, lb)
    }

    fn softmax_last(&self, layout: &Layout, log: bool, causal: bool) -> Result<Self> {
        super::softmax_last(self, layout, log, causal)
    }

    fn softmax_last_backward(
        &self,
        layout: &Layout,
        (g, lg): View<'_, Self>,
        log: bool,
        causal: bool,
    ) -> Result<Self> {
        super::softmax_last_backward(self, layout, g, lg, log, causal)
    }

    fn norm(
        &self,
        layout: &Layout,
        weight: Option<View<'_, Self>>,
        bias: Option<View<'_, Self>>,
        kind: NormKind,
        eps: f64,
    ) -> Result<Self> {
        super::norm(self, layout, weight, bias, kind, eps)
    }

    fn norm_backward(
        &self,
        layout: &Layout,
        (g, lg): View<'_, Self>,
        weight: Option<View<'_, Self>>,
        kind: NormKind,
        eps: f64,
    ) -> Result<(Self, Self, Self)> {
        super::norm_backward(self, layout, g, lg, weight, kind, eps)
    }

    fn cross_entropy(
        &self,
        layout: &Layout,
        (t, lt): View<'_, Self>,
        ignore: i64,
        out_dtype: DType,
    ) -> Result<Self> {
        super::cross_entropy(self, layout, t, lt, ignore, out_dtype)
    }

    fn cross_entropy_backward(
        &self,
        layout: &Layout,
        (t, lt): View<'_, Self>,
        ignore: i64,
        g: View<'_, Self>,
    ) -> Result<Self> {
        super::cross_entropy_backward(self, layout, t, lt, ignore, g)
    }

    fn rotary(
        &self,
        layout: &Layout,
        cos: View<'_, Self>,
        sin: View<'_, Self>,
        style: RotaryStyle,
        inverse: bool,
    ) -> Result<Self> {
        super::rotary(self, layout, cos, sin, style, inverse)
    }
}
