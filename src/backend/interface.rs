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
use crate::ggml_types::GgmlType;
use crate::{DType, Layout, Result};

/// A buffer and the layout through which an op reads it.
pub type View<'a, S> = (&'a S, &'a Layout);

/// What a fused linear layer's GEMM applies after the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `+ bias`.
    Bias,
    /// `gelu_tanh(. + bias)`.
    GeluBias,
}

/// A layer norm (gamma and beta) or RMS norm (gamma alone) folded into the decode product.
pub struct GemvNorm<'a, S> {
    pub gamma: View<'a, S>,
    pub beta: Option<View<'a, S>>,
    pub rms: bool,
    pub eps: f32,
}

/// One part of a quantized matrix: `rows` rows of one ggml type, their bytes in a u8
/// buffer (a matrix is a vertical stack of parts, all of the matrix's width).
pub struct QPart<'a, S> {
    pub ty: GgmlType,
    pub rows: usize,
    pub data: View<'a, S>,
}

/// AdamW's per-step constants.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 - lr * weight_decay` (1 without decay).
    pub decay: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
}

/// One parameter of a multi-tensor AdamW update: the (contiguous) parameter and its
/// element offset, its gradient, the f32 moments, its element count and decay factor.
pub struct AdamWSlot<'a, S> {
    pub param: (&'a S, usize),
    pub grad: View<'a, S>,
    pub m: &'a S,
    pub v: &'a S,
    pub n: usize,
    pub decay: f32,
}

/// One decoding step's attention over a key/value cache (one new position per sequence).
#[derive(Clone, Copy, Debug)]
pub struct DecodeShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions in the cache after this step (the new one included).
    pub len: usize,
    /// Keys each query sees (0: all).
    pub window: usize,
    pub scale: f32,
}

/// Shape and mask of one attention call. Queries `[batch, heads, q_len, head_dim]`, keys and
/// values `[batch, kv_heads, k_len, head_dim]`, all contiguous; query head h reads key/value
/// head `h / (heads / kv_heads)`. Queries are aligned to the end of the keys: query i sits
/// at position `k_len - q_len + i` (a prefill after cached keys, FlashAttention 2's causal
/// convention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub k_len: usize,
    pub head_dim: usize,
    /// Query at position p sees no key after p.
    pub causal: bool,
    /// With `causal`: query at position p sees only keys after `p - window` (0: no limit).
    pub window: usize,
    /// Multiplies the scores (usually `1 / sqrt(head_dim)`).
    pub scale: f64,
}

impl AttnShape {
    /// The keys `lo..hi` query `i` sees (empty when a causal query comes before every key).
    pub fn keys(&self, i: usize) -> (usize, usize) {
        if !self.causal {
            return (0, self.k_len);
        }
        // Position of query i among the keys, plus one.
        let end = (i + self.k_len + 1)
            .saturating_sub(self.q_len)
            .min(self.k_len);
        let lo = if self.window > 0 {
            end.saturating_sub(self.window)
        } else {
            0
        };
        (lo.min(end), end)
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// One axis of an implicit-GEMM convolution pass (`GatherAxis` in `kernels/conv.cu`):
/// output position `o` at tap `t` reads source index `(o * step + offset + t * tap_step) /
/// divisor` when the division is exact and the index lies in `0..len`, and zero elsewhere.
/// The forward reads `o * stride - pad + t * dilation`; the input gradient reads the output
/// gradient at `(o + pad - t * dilation) / stride`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherAxis {
    pub len: i32,
    pub out: i32,
    pub taps: i32,
    pub step: i32,
    pub offset: i32,
    pub tap_step: i32,
    pub divisor: i32,
}

/// One product of an implicit-GEMM convolution on tensor cores; images are NHWC views
/// (`[N, H, W, C]`, channels contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    /// `out[n, p, q, j] = sum over (r, s, c) of src[n, row(p, r), col(q, s), c] * w[j, r, s,
    /// c]` for the image `self` and the weights `[J, R, S, C]` (contiguous): the forward
    /// (weights as KRSC) or, along transposed axes, the input gradient (the output gradient
    /// read against the weights as CRSK). Returns `[N, P, Q, J]`, contiguous.
    Gather { rows: GatherAxis, cols: GatherAxis },
    /// The weight gradient of the forward along these axes: `self` is the output gradient
    /// `[N, P, Q, O]` (contiguous) and the operand the input image; returns f32 partial sums
    /// `[splits, O, R * S * C]` whose sum over the first axis is the gradient as ORSC.
    WeightGrad { rows: GatherAxis, cols: GatherAxis },
}

/// The operands of the fused decode product `gelu?(norm?(x) @ weight^T + bias) + residual`
/// (a few rows of `x`: one token per sequence).
pub struct Gemv<'a, S> {
    pub weight: View<'a, S>,
    pub bias: Option<View<'a, S>>,
    pub residual: Option<View<'a, S>>,
    pub gelu: bool,
    pub norm: Option<GemvNorm<'a, S>>,
}

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
    /// Overwrites the (contiguous) elements under `layout` with those of `src`, of the
    /// same dtype and count; `src` never shares this buffer.
    fn assign(&mut self, layout: &Layout, src: View<'_, Self>) -> Result<()>;
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

    /// Fused attention (FlashAttention) for `self` = the queries `[B, H, Tq, D]` over keys
    /// and values `[B, KVH, Tk, D]` as `shape` describes them: the output `[B, H, Tq, D]` in
    /// the queries' dtype (a buffer and the layout to read it through, which need not be
    /// contiguous) and each query row's log-sum-exp `[B, H, Tq]`, contiguous, in f32 or
    /// wider (the CPU reference keeps f64).
    fn flash_attention(
        &self,
        layout: &Layout,
        k: View<'_, Self>,
        v: View<'_, Self>,
        shape: &AttnShape,
    ) -> Result<((Self, Layout), Self)>;

    /// Gradients (dq, dk, dv) of [`BackendStorage::flash_attention`] from its inputs, its
    /// output and log-sum-exp and the output's gradient `g`, in the queries' dtype, each a
    /// buffer and the layout to read it through (q's shape, then k's and v's).
    #[allow(clippy::too_many_arguments)]
    fn flash_attention_backward(
        &self,
        layout: &Layout,
        k: View<'_, Self>,
        v: View<'_, Self>,
        out: View<'_, Self>,
        lse: View<'_, Self>,
        g: View<'_, Self>,
        shape: &AttnShape,
    ) -> Result<[(Self, Layout); 3]>;

    /// The quantized matrix stacked from `parts` (`cols` wide), dequantized to `dtype`:
    /// every row in order, or the rows `ids` (integers of any shape, an embedding lookup;
    /// the result is `ids.shape + [cols]` in elements).
    fn quant_rows(
        parts: &[QPart<'_, Self>],
        cols: usize,
        ids: Option<View<'_, Self>>,
        dtype: DType,
    ) -> Result<Self>;

    /// `x @ W^T` for `self` = `x [m, cols]` (contiguous, a float dtype) and the quantized
    /// `W` stacked from `parts`: `[m, rows]` in x's dtype.
    fn quant_linear(&self, layout: &Layout, parts: &[QPart<'_, Self>], cols: usize)
        -> Result<Self>;

    /// The most rows of `x` for which [`BackendStorage::quant_linear`] reads the quantized
    /// weights directly; for more, the caller dequantizes once and runs a GEMM.
    fn quant_linear_max_rows(&self) -> usize;

    // Fast paths. A backend without one keeps these defaults (`None`: "not here"), and the
    // op that asks runs its general form instead.

    /// The most rows of `x` that [`BackendStorage::gemv`] takes (0: it has no such path).
    fn gemv_max_rows(&self) -> usize {
        0
    }

    /// The fused decode product of [`Gemv`] for `self` = `x [rows, k]`, or `None` when the
    /// backend has none or the operands do not suit it.
    fn gemv(&self, _layout: &Layout, _args: Gemv<'_, Self>) -> Result<Option<Self>> {
        Ok(None)
    }

    /// Decoding attention for `self` = the queries `[B, H, 1, d]`: appends the new key and
    /// value (`[B, KVH, 1, d]`) to the caches `(keys, values, layout)` at position
    /// `shape.len - 1` and attends over all cached positions in one launch; `[B, 1, H * d]`.
    /// `None` (nothing appended) when the backend has none or the operands do not suit it.
    fn decode_attention(
        &self,
        _layout: &Layout,
        _key: View<'_, Self>,
        _value: View<'_, Self>,
        _cache: (&Self, &Self, &Layout),
        _shape: DecodeShape,
    ) -> Result<Option<Self>> {
        Ok(None)
    }

    /// AdamW over many parameters of this backend in a few launches, updating parameters
    /// and moments in place; `false` (nothing done) when the backend has no such path.
    fn adamw_multi(_slots: &[AdamWSlot<'_, Self>], _step: AdamWStep) -> Result<bool> {
        Ok(false)
    }

    /// One implicit-GEMM convolution pass ([`ConvPass`]) on tensor cores: the result and
    /// its layout, or `None` where this backend has no kernel for these dtypes, shapes and
    /// layouts (the convolution then takes its general path).
    fn conv_pass(
        &self,
        _layout: &Layout,
        _other: View<'_, Self>,
        _pass: ConvPass,
    ) -> Result<Option<(Self, Layout)>> {
        Ok(None)
    }

    /// Batch normalisation's per-channel sums over `self` (`[M, C]`, contiguous: images
    /// held channels-last), as `[2, splits, C]` partial sums in the compute dtype (f32,
    /// or f64 for f64 inputs) whose sum over the middle axis is: without `grad`,
    /// `sum (x - center)` and `sum (x - center)^2`; with `grad` (dy, `[M, C]`), `sum dy`
    /// and `sum dy * (x - center)`. `center` is `[C]` in the compute dtype. `None` where
    /// this backend has no fused kernel for these layouts.
    fn channel_sums(
        &self,
        _layout: &Layout,
        _grad: Option<View<'_, Self>>,
        _center: View<'_, Self>,
    ) -> Result<Option<(Self, Layout)>> {
        Ok(None)
    }

    /// `(grad ? grad * alpha : 0) + (x - mean) * beta + gamma` per channel over `self`
    /// (`[M, C]`, contiguous), in `self`'s dtype: batch normalisation's output, and its
    /// input gradient with `grad = (dy, alpha)`. Channel vectors are `[C]` in the compute
    /// dtype. `None` where this backend has no fused kernel for these layouts.
    fn channel_affine(
        &self,
        _layout: &Layout,
        _grad: Option<(View<'_, Self>, View<'_, Self>)>,
        _mean: View<'_, Self>,
        _beta: View<'_, Self>,
        _gamma: View<'_, Self>,
    ) -> Result<Option<Self>> {
        Ok(None)
    }

    /// Adds the sum of squares of the elements under `layout` into the f64 scalar `acc`
    /// (on this backend, for gradient clipping without a host round trip); `false` when
    /// the backend has no such path.
    fn sum_squares_into(&self, _layout: &Layout, _acc: &Self) -> Result<bool> {
        Ok(false)
    }

    /// Whether [`BackendStorage::cross_entropy`] reads f16/bf16 logits as they are and
    /// honours an f32 `out_dtype` (so mixed precision needs no f32 copy of the logits).
    fn cross_entropy_reads_half(&self) -> bool {
        false
    }

    /// Whether [`BackendStorage::flash_attention`] is the fast way to attend over queries
    /// like `self` (of `dtype`, heads of `head_dim`) here; where it is not, attention runs
    /// as GEMMs and a softmax.
    fn prefers_fused_attention(&self, _dtype: DType, _head_dim: usize) -> bool {
        false
    }

    /// Whether [`BackendStorage::linear_epilogue`] exists here (asked before preparing its
    /// operands).
    fn has_linear_epilogue(&self) -> bool {
        false
    }

    /// `epilogue(x @ w^T + b) (+ residual)` in one GEMM for `self` = `x [rows, k]`, or
    /// `None` when the backend has none or the operands do not suit it.
    fn linear_epilogue(
        &self,
        _layout: &Layout,
        _weight: View<'_, Self>,
        _bias: View<'_, Self>,
        _epilogue: Epilogue,
        _residual: Option<View<'_, Self>>,
    ) -> Result<Option<Self>> {
        Ok(None)
    }
}
