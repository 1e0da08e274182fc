//! The one interface between the layers above (ops, autograd, nn, optim, models) and the
//! backends: every op a backend must run, as methods of its storage type. A backend that
//! lacks one does not compile. Inputs come as (buffer, layout) pairs so that strided views
//! reach the kernels without copies; results are contiguous.
//!
//! Fast paths that only some backends have (fused decode products, linear epilogues,
//! multi-tensor AdamW, decode attention) are the optional methods of
//! [`crate::storage::Storage`], which answer `None` where a backend has none; the op that
//! asks then takes its general path, in one place.

use super::{BinaryOp, CmpOp, NormKind, ReduceOp, RotaryStyle, UnaryOp};
use crate::{DType, Layout, Result};

/// A buffer and the layout through which an op reads it.
pub type View<'a, S> = (&'a S, &'a Layout);

/// The ops every backend implements, on its own storage type.
pub trait BackendStorage: Sized {
    /// `op(x)` elementwise.
    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self>;
    /// `op(a, b)` elementwise on two inputs of one shape.
    fn binary(&self, layout: &Layout, rhs: View<'_, Self>, op: BinaryOp) -> Result<Self>;
    /// A u8 mask of `op(a, b)`.
    fn cmp(&self, layout: &Layout, rhs: View<'_, Self>, op: CmpOp) -> Result<Self>;
    /// `cond ? a : b` with `self` the u8 condition.
    fn where_cond(&self, layout: &Layout, a: View<'_, Self>, b: View<'_, Self>) -> Result<Self>;
    /// Sum, max or min over `dims` (kept as size-1 dimensions by the caller's shape).
    fn reduce(&self, layout: &Layout, dims: &[usize], op: ReduceOp) -> Result<Self>;
    /// Index (i64) of the largest (`max`) or smallest entry along `dim`.
    fn arg_reduce(&self, layout: &Layout, dim: usize, max: bool) -> Result<Self>;
    /// The elements under `layout`, contiguous.
    fn copy_contiguous(&self, layout: &Layout) -> Result<Self>;
    /// The elements under `layout` converted to `dtype`, contiguous.
    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self>;
    /// Entries `ids` (integer, 1-D) along `dim`.
    fn index_select(&self, layout: &Layout, dim: usize, ids: View<'_, Self>) -> Result<Self>;
    /// `out[p] = self[p with coordinate dim replaced by index[p]]`.
    fn gather(&self, layout: &Layout, dim: usize, index: View<'_, Self>) -> Result<Self>;
    /// Zeros of `out_shape` with the rows of `self` added at `ids` along `dim` (the
    /// gradient of `index_select`).
    fn index_add_zeros(
        &self,
        layout: &Layout,
        out_shape: &[usize],
        dim: usize,
        ids: View<'_, Self>,
    ) -> Result<Self>;
    /// A copy of `self` with `src[p]` added at `p with coordinate dim replaced by index[p]`.
    fn scatter_add(
        &self,
        layout: &Layout,
        dim: usize,
        index: View<'_, Self>,
        src: View<'_, Self>,
    ) -> Result<Self>;
    /// The parts joined along `dim` into `out_shape`.
    fn cat(parts: &[View<'_, Self>], dim: usize, out_shape: &[usize]) -> Result<Self>;
    /// Batched `a @ b` over the last two dimensions.
    fn matmul(&self, layout: &Layout, rhs: View<'_, Self>) -> Result<Self>;
    /// Softmax (or log-softmax) over the last dimension; `causal` masks keys after the
    /// query (rows are queries, the last dimension keys).
    fn softmax_last(&self, layout: &Layout, log: bool, causal: bool) -> Result<Self>;
    /// The input gradient of softmax from its output `self` and the output gradient `g`.
    fn softmax_last_backward(
        &self,
        layout: &Layout,
        g: View<'_, Self>,
        log: bool,
        causal: bool,
    ) -> Result<Self>;
    /// Layer or RMS norm over the last dimension with optional affine parameters.
    fn norm(
        &self,
        layout: &Layout,
        weight: Option<View<'_, Self>>,
        bias: Option<View<'_, Self>>,
        kind: NormKind,
        eps: f64,
    ) -> Result<Self>;
    /// Gradients (input, weight, bias) of [`BackendStorage::norm`] for output gradient `g`.
    fn norm_backward(
        &self,
        layout: &Layout,
        g: View<'_, Self>,
        weight: Option<View<'_, Self>>,
        kind: NormKind,
        eps: f64,
    ) -> Result<(Self, Self, Self)>;
    /// Mean cross-entropy of logits `self` (last dimension: classes) against integer
    /// `targets`, skipping `ignore`; a scalar (of `out_dtype` where the backend honours it).
    fn cross_entropy(
        &self,
        layout: &Layout,
        targets: View<'_, Self>,
        ignore: i64,
        out_dtype: DType,
    ) -> Result<Self>;
    /// The logits' gradient of [`BackendStorage::cross_entropy`], scaled by the scalar
    /// output gradient `g`.
    fn cross_entropy_backward(
        &self,
        layout: &Layout,
        targets: View<'_, Self>,
        ignore: i64,
        g: View<'_, Self>,
    ) -> Result<Self>;
    /// Rotary embedding (or its inverse, for the backward) with `[T, D/2]` tables.
    fn rotary(
        &self,
        layout: &Layout,
        cos: View<'_, Self>,
        sin: View<'_, Self>,
        style: RotaryStyle,
        inverse: bool,
    ) -> Result<Self>;
}
