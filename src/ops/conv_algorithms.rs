//! The algorithms a convolution can run with, how one is picked, and the two besides
//! im2col: direct (one product per kernel tap, no column matrix) and Winograd F(2×2, 3×3).
//! Each is built from differentiable ops, so each has its backward on every backend.
//!
//! Picked by fixed rules ([`ConvAlgorithm::Auto`]):
//! - on CUDA, f16 and bf16 convolutions with one group run implicit GEMM on tensor cores
//!   (`conv_implicit.rs`), the layout cuDNN runs ResNets in, with channels-last output;
//! - everything else runs im2col + GEMM, set by measurement (forward + backward, f32,
//!   2 CPU cores, best of four):
//! - Winograd, from the same composable ops, measured within ±15% of im2col on ResNet's
//!   3×3 layers at 56² and 28² and 1.5-2.3x slower at 14² and 7²: its transforms are
//!   memory-bound passes that eat the 2.25x it saves in the products.
//! - Direct measured 1.0-1.3x slower than im2col on dense 3×3 layers and 1.2-1.35x slower
//!   on depthwise ones (8×128×28²: 135 against 100 ms).
//!
//! Either becomes a rule when a fused kernel makes it the faster one.
//!
//! [`set_conv_algorithm`] or `SMITH_CONV_ALGO=auto|direct|im2col|winograd|implicit-gemm`
//! forces one (Winograd and implicit GEMM only where they apply: elsewhere forcing one
//! is an error that says why).

use super::conv::{index, pad_dim, ConvShape};
use crate::{Device, Error, Result, Tensor};
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// How [`Tensor::conv2d`] computes a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// By the rules in the module docs.
    Auto,
    /// A product per kernel tap, accumulated; no column matrix.
    Direct,
    /// Gathered columns and one batched GEMM (the column matrix capped by chunking).
    Im2col,
    /// Winograd F(2×2, 3×3): 4×4 input tiles, 2×2 output tiles, 16 batched products.
    Winograd,
    /// Implicit GEMM on CUDA tensor cores (f16/bf16, one group): NHWC tiles gathered
    /// straight from the image, KRSC weights, no column matrix; channels-last output.
    ImplicitGemm,
}

impl ConvAlgorithm {
    /// The algorithm named `name` (`auto`, `direct`, `im2col`, `winograd`,
    /// `implicit-gemm`).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => ConvAlgorithm::Auto,
            "direct" => ConvAlgorithm::Direct,
            "im2col" => ConvAlgorithm::Im2col,
            "winograd" => ConvAlgorithm::Winograd,
            "implicit-gemm" | "implicit_gemm" | "igemm" => ConvAlgorithm::ImplicitGemm,
            other => {
                return Err(Error::invalid(
                    "conv2d",
                    format!(
                        "unknown convolution algorithm `{other}` (auto, direct, im2col, winograd, implicit-gemm)"
                    ),
                ))
            }
        })
    }
    fn code(self) -> u8 {
        self as u8 + 1
    }
    fn from_code(c: u8) -> Self {
        match c {
            2 => ConvAlgorithm::Direct,
            3 => ConvAlgorithm::Im2col,
            4 => ConvAlgorithm::Winograd,
            5 => ConvAlgorithm::ImplicitGemm,
            _ => ConvAlgorithm::Auto,
        }
    }
}

/// 0: not set yet (read `SMITH_CONV_ALGO` on first use), else `code()`.
static FORCED: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// This thread's override (0: none), set by [`force_conv_algorithm`].
    static FORCED_HERE: Cell<u8> = const { Cell::new(0) };
}

/// Forces every convolution of the process onto `algorithm` (`Auto` restores the rules).
pub fn set_conv_algorithm(algorithm: ConvAlgorithm) {
    FORCED.store(algorithm.code(), Ordering::Relaxed);
}

/// Restores the calling thread's previous override when dropped.
#[must_use = "the override ends when the guard is dropped"]
pub struct ConvAlgorithmGuard {
    previous: u8,
}

impl Drop for ConvAlgorithmGuard {
    fn drop(&mut self) {
        FORCED_HERE.with(|c| c.set(self.previous));
    }
}

/// Forces the calling thread's convolutions onto `algorithm` until the guard drops, over
/// whatever [`set_conv_algorithm`] or `SMITH_CONV_ALGO` say (for tests and benchmarks that
/// compare algorithms side by side).
pub fn force_conv_algorithm(algorithm: ConvAlgorithm) -> ConvAlgorithmGuard {
    let previous = FORCED_HERE.with(|c| c.replace(algorithm.code()));
    ConvAlgorithmGuard { previous }
}

/// The algorithm in force: this thread's [`force_conv_algorithm`], else
/// [`set_conv_algorithm`]'s, else `SMITH_CONV_ALGO`'s, else `Auto`.
pub fn conv_algorithm() -> Result<ConvAlgorithm> {
    let here = FORCED_HERE.with(|c| c.get());
    if here != 0 {
        return Ok(ConvAlgorithm::from_code(here));
    }
    match FORCED.load(Ordering::Relaxed) {
        0 => {
            let a = match std::env::var("SMITH_CONV_ALGO") {
                Ok(v) => ConvAlgorithm::parse(&v)
                    .map_err(|e| Error::invalid("conv2d", format!("SMITH_CONV_ALGO: {e}")))?,
                Err(_) => ConvAlgorithm::Auto,
            };
            FORCED.store(a.code(), Ordering::Relaxed);
            Ok(a)
        }
        c => Ok(ConvAlgorithm::from_code(c)),
    }
}

/// Whether Winograd F(2×2, 3×3) computes this convolution.
pub(super) fn winograd_applies(s: &ConvShape) -> bool {
    s.rows.taps == 3
        && s.cols.taps == 3
        && s.rows.stride == 1
        && s.cols.stride == 1
        && s.rows.dilation == 1
        && s.cols.dilation == 1
        && s.groups == 1
}

/// The algorithm the rules pick for this shape (see the module docs).
pub(super) fn pick(x: &Tensor, shape: &ConvShape) -> ConvAlgorithm {
    if super::conv_implicit::implicit_gemm_applies(x, shape) {
        ConvAlgorithm::ImplicitGemm
    } else {
        ConvAlgorithm::Im2col
    }
}

/// Direct convolution: for each kernel tap, the input positions it reads (a strided
/// gather of the padded input) times that tap's weights, summed. `[N, O, OH, OW]`.
pub(super) fn direct(x: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Tensor> {
    let n = x.shape()[0];
    let (g, cg, og) = (s.groups, s.channels / s.groups, s.out_channels / s.groups);
    let (oh, ow) = (s.out_rows, s.out_cols);
    let x = pad_dim(x, 2, s.rows.before, s.rows.after, 0.0)?;
    let x = pad_dim(&x, 3, s.cols.before, s.cols.after, 0.0)?;
    let positions = |start: usize, stride: usize, count: usize| -> Vec<i64> {
        (0..count).map(|o| (start + o * stride) as i64).collect()
    };
    let mut out: Option<Tensor> = None;
    for kh in 0..s.rows.taps {
        let rows = index(
            positions(kh * s.rows.dilation, s.rows.stride, oh),
            x.device(),
        )?;
        let xr = x.index_select(2, &rows)?;
        for kw in 0..s.cols.taps {
            let cols = index(
                positions(kw * s.cols.dilation, s.cols.stride, ow),
                x.device(),
            )?;
            // [n, g, cg, OH*OW] input and [g, og, cg] weights of this tap.
            let xt = xr.index_select(3, &cols)?.reshape(&[n, g, cg, oh * ow])?;
            let wt = w
                .narrow(2, kh, 1)?
                .narrow(3, kw, 1)?
                .reshape(&[g, og, cg])?;
            let term = if cg == 1 {
                // One input channel per group: a broadcast multiply, no product.
                xt.mul(&wt.reshape(&[1, g, og, 1])?)?
            } else {
                wt.matmul(&xt)?
            };
            out = Some(match out {
                Some(acc) => acc.add(&term)?,
                None => term,
            });
        }
    }
    let out = out.ok_or_else(|| Error::invalid("conv2d", "a kernel without taps"))?;
    out.reshape(&[n, s.out_channels, oh, ow])
}

/// `m @ x @ mᵀ`-style transforms along two axes of small tiles, as products with a
/// constant matrix: `t` is `[.., a, b]`, `left` is `[p, a]`, `right` is `[b, q]`.
fn two_sided(t: &Tensor, left: &Tensor, right: &Tensor) -> Result<Tensor> {
    left.matmul(t)?.matmul(right)
}

fn constant(values: &[f64], rows: usize, cols: usize, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(values.to_vec(), &[rows, cols], Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())
}

/// Every second entry of `x` along `dim` from `offset`, `count` of them.
fn every_second(x: &Tensor, dim: usize, offset: usize, count: usize) -> Result<Tensor> {
    let ids = (0..count).map(|t| (offset + 2 * t) as i64).collect();
    x.index_select(dim, &index(ids, x.device())?)
}

/// The input transform `Bᵀ d B` of F(2×2, 3×3) along one axis: from the four tile
/// positions `d0..d3` (each the input at `2t + i`), the four transformed rows
/// `d0 − d2, d1 + d2, d2 − d1, d1 − d3`.
fn input_transform(x: &Tensor, dim: usize, tiles: usize) -> Result<[Tensor; 4]> {
    let d: Vec<Tensor> = (0..4)
        .map(|i| every_second(x, dim, i, tiles))
        .collect::<Result<_>>()?;
    Ok([
        d[0].sub(&d[2])?,
        d[1].add(&d[2])?,
        d[2].sub(&d[1])?,
        d[1].sub(&d[3])?,
    ])
}

/// The output transform `Aᵀ m A` along one axis: from four transformed values, the two
/// outputs `m0 + m1 + m2` and `m1 − m2 − m3`.
fn output_transform(m: [&Tensor; 4]) -> Result<[Tensor; 2]> {
    Ok([m[0].add(m[1])?.add(m[2])?, m[1].sub(m[2])?.sub(m[3])?])
}

/// Winograd F(2×2, 3×3) (Lavin and Gray, 2016): the padded input cut into 4×4 tiles
/// overlapping by two and transformed (`Bᵀ d B`, as adds of strided slices), multiplied by
/// the transformed weights (`G g Gᵀ`) in 16 batched products over the channels, and
/// transformed back to 2×2 output tiles (`Aᵀ m A`). 2.25x fewer multiplications than a
/// direct 3×3; the transforms are memory-bound passes. `[N, O, OH, OW]`.
pub(super) fn winograd(x: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Tensor> {
    let n = x.shape()[0];
    let (c, o) = (s.channels, s.out_channels);
    let (oh, ow) = (s.out_rows, s.out_cols);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    // Pad so that every tile is whole: 2 * tiles + 2 rows and columns.
    let x = pad_dim(
        x,
        2,
        s.rows.before,
        (2 * th + 2) - s.rows.len - s.rows.before,
        0.0,
    )?;
    let x = pad_dim(
        &x,
        3,
        s.cols.before,
        (2 * tw + 2) - s.cols.len - s.cols.before,
        0.0,
    )?;
    // V: the 16 transformed tile values, each [n, C, th, tw], as [16, C, n*th*tw].
    let mut v = Vec::with_capacity(16);
    for r in input_transform(&x, 2, th)? {
        v.extend(input_transform(&r, 3, tw)?);
    }
    let v = Tensor::stack(&v, 0)?
        .permute(&[0, 2, 1, 3, 4])?
        .reshape(&[16, c, n * th * tw])?;
    #[rustfmt::skip]
    let g = constant(&[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ], 4, 3, &x)?;
    // U = G w Gᵀ: [O, C, 4, 4] -> [16, O, C]
    let u = two_sided(w, &g, &g.transpose(0, 1)?)?
        .reshape(&[o, c, 16])?
        .permute(&[2, 0, 1])?;
    // M = U V over the channels: [16, O, n*th*tw], each of the 16 as [O, n, th, tw].
    let m = u.matmul(&v)?.reshape(&[16, o, n, th, tw])?;
    let m: Vec<Tensor> = (0..16)
        .map(|k| m.narrow(0, k, 1)?.reshape(&[o, n, th, tw]))
        .collect::<Result<_>>()?;
    // Y = Aᵀ M A: rows first, then columns, interleaved into [O, n, th, 2, tw, 2].
    let [r0, r1, r2, r3] =
        [0, 1, 2, 3].map(|b| output_transform([&m[b], &m[4 + b], &m[8 + b], &m[12 + b]]));
    let rows = [r0?, r1?, r2?, r3?];
    let y: Vec<Tensor> = (0..2)
        .map(|r| {
            let [y0, y1] = output_transform(rows.each_ref().map(|cols| &cols[r]))?;
            Tensor::stack(&[y0, y1], 4)
        })
        .collect::<Result<_>>()?;
    Tensor::stack(&y, 3)?
        .reshape(&[o, n, 2 * th, 2 * tw])?
        .permute(&[1, 0, 2, 3])?
        .narrow(2, 0, oh)?
        .narrow(3, 0, ow)
}
