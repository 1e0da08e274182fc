//! The GPU's side of [`BackendStorage`]: each method launches the kernel of the same name
//! in this backend.

use super::CudaStorage;
use crate::backend::interface::{
    AdamWSlot, AdamWStep, AttnShape, BackendStorage, ConvPass, DecodeShape, Epilogue, Gemv, QPart,
    View,
};
use crate::backend::{BinaryOp, CmpOp, NormKind, ReduceOp, RotaryStyle, UnaryOp};
use crate::{DType, Error, Layout, Result};

fn quant_err(msg: impl Into<String>) -> Error {
    Error::invalid("quantized matrix", msg)
}

/// The kernels write f32, f16 or bf16.
fn check_float(dtype: DType) -> Result<()> {
    if matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op: "quantized matrix",
            dtype,
        })
    }
}

fn qshape(p: &QPart<'_, CudaStorage>, cols: usize) -> super::QShape {
    super::QShape {
        ty: p.ty,
        rows: p.rows,
        k: cols,
    }
}

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

    /// The kernel writes through the device pointer; `&mut` is the lock's promise.
    fn assign(&mut self, layout: &Layout, (s, ls): View<'_, Self>) -> Result<()> {
        super::assign(self, layout, s, ls)
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

    fn flash_attention(
        &self,
        layout: &Layout,
        k: View<'_, Self>,
        v: View<'_, Self>,
        shape: &AttnShape,
    ) -> Result<((Self, Layout), Self)> {
        super::flash_attention_forward((self, layout), k, v, shape)
    }

    fn flash_attention_backward(
        &self,
        layout: &Layout,
        k: View<'_, Self>,
        v: View<'_, Self>,
        out: View<'_, Self>,
        lse: View<'_, Self>,
        g: View<'_, Self>,
        shape: &AttnShape,
    ) -> Result<[(Self, Layout); 3]> {
        super::flash_attention_backward((self, layout), k, v, out, lse, g, shape)
    }

    /// On a GPU an id out of range reads as NaN, as an embedding lookup does.
    fn quant_rows(
        parts: &[QPart<'_, Self>],
        cols: usize,
        ids: Option<View<'_, Self>>,
        dtype: DType,
    ) -> Result<Self> {
        check_float(dtype)?;
        let first = parts.first().ok_or_else(|| quant_err("no parts"))?;
        let Some((i, li)) = ids else {
            let rows: usize = parts.iter().map(|p| p.rows).sum();
            let out = CudaStorage::alloc(first.data.0.device(), dtype, rows * cols)?;
            let mut row0 = 0;
            for p in parts {
                super::qrows_into(p.data.0, qshape(p, cols), None, p.rows, &out, row0 * cols)?;
                row0 += p.rows;
            }
            return Ok(out);
        };
        let [p] = parts else {
            return Err(quant_err("an embedding table must be a single part"));
        };
        let n = li.numel();
        let out = CudaStorage::alloc(p.data.0.device(), dtype, n * cols)?;
        super::qrows_into(p.data.0, qshape(p, cols), Some((i, li)), n, &out, 0)?;
        Ok(out)
    }

    fn quant_linear(
        &self,
        layout: &Layout,
        parts: &[QPart<'_, Self>],
        cols: usize,
    ) -> Result<Self> {
        let (m, rows) = (
            layout.shape()[0],
            parts.iter().map(|p| p.rows).sum::<usize>(),
        );
        let out = CudaStorage::alloc(self.device(), self.dtype(), m * rows)?;
        let mut col0 = 0;
        for p in parts {
            super::qgemv(p.data.0, qshape(p, cols), self, layout, &out, col0, rows)?;
            col0 += p.rows;
        }
        Ok(out)
    }

    fn quant_linear_max_rows(&self) -> usize {
        super::QGEMV_MAX_ROWS
    }

    fn gemv_max_rows(&self) -> usize {
        super::GEMV_MAX_ROWS
    }

    fn gemv(&self, layout: &Layout, a: Gemv<'_, Self>) -> Result<Option<Self>> {
        let (w, lw) = a.weight;
        super::gemv(self, layout, w, lw, a.bias, a.residual, a.gelu, a.norm)
    }

    fn conv_pass(
        &self,
        layout: &Layout,
        (other, lo): View<'_, Self>,
        pass: ConvPass,
    ) -> Result<Option<(Self, Layout)>> {
        super::conv_pass(self, layout, other, lo, pass)
    }

    fn channel_sums(
        &self,
        layout: &Layout,
        grad: Option<View<'_, Self>>,
        center: View<'_, Self>,
    ) -> Result<Option<(Self, Layout)>> {
        super::channel_sums(self, layout, grad, center)
    }

    fn channel_affine(
        &self,
        layout: &Layout,
        grad: Option<(View<'_, Self>, View<'_, Self>)>,
        mean: View<'_, Self>,
        beta: View<'_, Self>,
        gamma: View<'_, Self>,
    ) -> Result<Option<Self>> {
        super::channel_affine(self, layout, grad, mean, beta, gamma)
    }

    fn decode_attention(
        &self,
        layout: &Layout,
        (k, lk): View<'_, Self>,
        (v, lv): View<'_, Self>,
        (kc, vc, lc): (&Self, &Self, &Layout),
        shape: DecodeShape,
    ) -> Result<Option<Self>> {
        super::decode_attention(self, layout, k, lk, v, lv, kc, vc, lc, shape)
    }

    fn adamw_multi(slots: &[AdamWSlot<'_, Self>], step: AdamWStep) -> Result<bool> {
        super::adamw_multi(slots, step)?;
        Ok(true)
    }

    /// Floating-point gradients other than f64 (the kernel reads those types).
    fn sum_squares_into(&self, layout: &Layout, acc: &Self) -> Result<bool> {
        if !self.dtype().is_float() || self.dtype() == DType::F64 {
            return Ok(false);
        }
        super::sum_squares_into(self, layout, acc)?;
        Ok(true)
    }

    fn has_linear_epilogue(&self) -> bool {
        true
    }

    fn cross_entropy_reads_half(&self) -> bool {
        true
    }

    /// On tensor cores (f16/bf16 at the head dims they are compiled for); f32 keeps the
    /// TF32 GEMMs.
    fn prefers_fused_attention(&self, dtype: DType, head_dim: usize) -> bool {
        super::tensor_cores(&self.dev.arch, dtype, head_dim)
    }

    fn linear_epilogue(
        &self,
        layout: &Layout,
        (w, lw): View<'_, Self>,
        (b, lb): View<'_, Self>,
        epilogue: Epilogue,
        residual: Option<View<'_, Self>>,
    ) -> Result<Option<Self>> {
        super::linear_epilogue(self, layout, w, lw, b, lb, epilogue, residual)
    }
}
