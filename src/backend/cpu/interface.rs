//! The CPU's side of [`BackendStorage`]: each method hands its views to the kernel of the
//! same name in this backend (integer inputs are read into `i64` first).

use super::CpuStorage;
use crate::backend::interface::{AttnShape, BackendStorage, QPart, View};
use crate::backend::{BinaryOp, CmpOp, NormKind, ReduceOp, RotaryStyle, UnaryOp};
use crate::{DType, Error, Layout, Result};

fn quant_err(msg: impl Into<String>) -> Error {
    Error::invalid("quantized matrix", msg)
}

/// The bytes of one quantized part.
fn part_bytes<'a>(p: &QPart<'a, CpuStorage>) -> Result<&'a [u8]> {
    let (s, l) = p.data;
    match s {
        CpuStorage::U8(v) => Ok(&v[l.offset()..l.offset() + l.numel()]),
        _ => Err(quant_err("quantized data must be bytes")),
    }
}

/// `values` (f32, contiguous `shape`) as a buffer of `dtype`.
fn f32_as(values: Vec<f32>, shape: &[usize], dtype: DType) -> CpuStorage {
    let s = CpuStorage::F32(values);
    if dtype == DType::F32 {
        s
    } else {
        super::cast(&s, &Layout::contiguous(shape), dtype)
    }
}

impl BackendStorage for CpuStorage {
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
        Ok(super::copy_contiguous(self, layout))
    }

    fn cast(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        Ok(super::cast(self, layout, dtype))
    }

    fn index_select(&self, layout: &Layout, dim: usize, (i, li): View<'_, Self>) -> Result<Self> {
        let ids = i.to_indices("index_select", li)?;
        super::index_select(self, layout, dim, &ids)
    }

    fn gather(&self, layout: &Layout, dim: usize, (i, li): View<'_, Self>) -> Result<Self> {
        let index = i.to_indices("gather", li)?;
        super::gather(self, layout, dim, &index, li.shape())
    }

    fn index_add_zeros(
        &self,
        layout: &Layout,
        out_shape: &[usize],
        dim: usize,
        (i, li): View<'_, Self>,
    ) -> Result<Self> {
        let ids = i.to_indices("index_select", li)?;
        super::index_add_zeros(self, layout, out_shape, dim, &ids)
    }

    fn scatter_add(
        &self,
        layout: &Layout,
        dim: usize,
        (i, li): View<'_, Self>,
        (s, ls): View<'_, Self>,
    ) -> Result<Self> {
        let index = i.to_indices("scatter_add", li)?;
        super::scatter_add(self, layout, dim, &index, li.shape(), s, ls)
    }

    fn assign(&mut self, layout: &Layout, (s, ls): View<'_, Self>) -> Result<()> {
        let data = super::copy_contiguous(s, ls);
        let (off, n) = (layout.offset(), layout.numel());
        macro_rules! put {
            ($($variant:ident),*) => {
                match (self, data) {
                    $((CpuStorage::$variant(dst), CpuStorage::$variant(s)) => {
                        dst[off..off + n].copy_from_slice(&s)
                    })*
                    _ => return Err(Error::invalid("assign", "storage dtype changed")),
                }
            };
        }
        put!(F64, F32, F16, BF16, I64, U32, U8);
        Ok(())
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

    /// Masked entries have a zero output, so their gradient is zero without the mask.
    fn softmax_last_backward(
        &self,
        layout: &Layout,
        (g, lg): View<'_, Self>,
        log: bool,
        _causal: bool,
    ) -> Result<Self> {
        super::softmax_last_backward(self, layout, g, lg, log)
    }

    fn norm(
        &self,
        layout: &Layout,
        weight: Option<View<'_, Self>>,
        bias: Option<View<'_, Self>>,
        kind: NormKind,
        eps: f64,
    ) -> Result<Self> {
        super::norm(self, layout, (weight, bias), kind, eps)
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

    /// The loss comes out in the logits' float type (`out_dtype` is a GPU choice).
    fn cross_entropy(
        &self,
        layout: &Layout,
        (t, lt): View<'_, Self>,
        ignore: i64,
        _out_dtype: DType,
    ) -> Result<Self> {
        let targets = t.to_indices("cross_entropy", lt)?;
        super::cross_entropy(self, layout, &targets, ignore)
    }

    fn cross_entropy_backward(
        &self,
        layout: &Layout,
        (t, lt): View<'_, Self>,
        ignore: i64,
        (g, lg): View<'_, Self>,
    ) -> Result<Self> {
        let targets = t.to_indices("cross_entropy", lt)?;
        let scale = g.to_f64s(lg).first().copied().unwrap_or(0.0);
        super::cross_entropy_backward(self, layout, &targets, ignore, scale)
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

    fn channel_sums(
        &self,
        layout: &Layout,
        grad: Option<View<'_, Self>>,
        (center, lc): View<'_, Self>,
    ) -> Result<Option<(Self, Layout)>> {
        super::channel_sums(self, layout, grad, (center, lc))
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

    fn flash_attention(
        &self,
        layout: &Layout,
        (k, lk): View<'_, Self>,
        (v, lv): View<'_, Self>,
        shape: &AttnShape,
    ) -> Result<((Self, Layout), Self)> {
        let (out, lse) =
            super::flash_forward(&self.to_f64s(layout), &k.to_f64s(lk), &v.to_f64s(lv), shape);
        let out = CpuStorage::from_f64s(self.dtype(), &out);
        let out_layout = Layout::contiguous(layout.shape());
        // The reference keeps the log-sum-exp in f64.
        Ok(((out, out_layout), CpuStorage::F64(lse)))
    }

    fn flash_attention_backward(
        &self,
        layout: &Layout,
        (k, lk): View<'_, Self>,
        (v, lv): View<'_, Self>,
        (out, lo): View<'_, Self>,
        (lse, ll): View<'_, Self>,
        (g, lg): View<'_, Self>,
        shape: &AttnShape,
    ) -> Result<[(Self, Layout); 3]> {
        let (dq, dk, dv) = super::flash_backward(
            &self.to_f64s(layout),
            &k.to_f64s(lk),
            &v.to_f64s(lv),
            &out.to_f64s(lo),
            &lse.to_f64s(ll),
            &g.to_f64s(lg),
            shape,
        );
        let back = |data: Vec<f64>, like: &Layout| {
            (
                CpuStorage::from_f64s(self.dtype(), &data),
                Layout::contiguous(like.shape()),
            )
        };
        Ok([back(dq, layout), back(dk, lk), back(dv, lv)])
    }

    /// On the CPU an id out of range is an error.
    fn quant_rows(
        parts: &[QPart<'_, Self>],
        cols: usize,
        ids: Option<View<'_, Self>>,
        dtype: DType,
    ) -> Result<Self> {
        let Some((i, li)) = ids else {
            let rows: usize = parts.iter().map(|p| p.rows).sum();
            let mut values = Vec::with_capacity(rows * cols);
            for p in parts {
                let all: Vec<usize> = (0..p.rows).collect();
                values.extend(super::qrows(part_bytes(p)?, p.ty, p.rows, cols, &all));
            }
            return Ok(f32_as(values, &[rows, cols], dtype));
        };
        let [p] = parts else {
            return Err(quant_err("an embedding table must be a single part"));
        };
        let ids = i
            .to_indices("quantized embedding", li)?
            .into_iter()
            .map(|id| match usize::try_from(id) {
                Ok(r) if r < p.rows => Ok(r),
                _ => Err(quant_err(format!(
                    "token id {id} is outside the table of {} rows",
                    p.rows
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let values = super::qrows(part_bytes(p)?, p.ty, p.rows, cols, &ids);
        Ok(f32_as(values, &[ids.len(), cols], dtype))
    }

    fn quant_linear(
        &self,
        layout: &Layout,
        parts: &[QPart<'_, Self>],
        cols: usize,
    ) -> Result<Self> {
        let f32s = super::cast(self, layout, DType::F32);
        let CpuStorage::F32(xs) = &f32s else {
            return Err(quant_err("activations did not cast to f32"));
        };
        let m = layout.shape()[0];
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        let mut y = vec![0f32; m * rows];
        let mut col0 = 0;
        for p in parts {
            let piece = super::qmatmul(part_bytes(p)?, p.ty, p.rows, cols, xs, m);
            for (out, got) in y.chunks_exact_mut(rows).zip(piece.chunks_exact(p.rows)) {
                out[col0..col0 + p.rows].copy_from_slice(got);
            }
            col0 += p.rows;
        }
        Ok(f32_as(y, &[m, rows], self.dtype()))
    }

    /// Every row count: the CPU kernel reads the quantized weights for any batch.
    fn quant_linear_max_rows(&self) -> usize {
        usize::MAX
    }
}
