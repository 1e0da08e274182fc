//! 2-D convolution with PyTorch's semantics (`torch.nn.functional.conv2d`): N×C×H×W
//! inputs, O×(C/groups)×KH×KW weights, stride, padding (numbers or `same`), dilation,
//! groups, optional bias.
//!
//! The general algorithm here is im2col + GEMM built from differentiable ops (direct and
//! Winograd, and the rules that pick among them, are in `conv_algorithms.rs`), so it runs on every
//! backend and its backward (input, weight and bias gradients) comes from theirs: the
//! padded input's rows and columns are gathered once per kernel tap (`index_select`), laid
//! out as one `[groups, N·OH·OW, C/groups·KH·KW]` column matrix, and multiplied by the
//! weights in one batched product. The column matrix is bounded by running the batch in
//! chunks of at most [`CONV_COLUMN_CAP_BYTES`].

use super::check_same;
use super::conv_algorithms::{
    conv_algorithm, direct, pick, winograd, winograd_applies, ConvAlgorithm,
};
use super::conv_implicit::{implicit_gemm, implicit_gemm_refusal};
use crate::{Device, Error, Result, Tensor};

/// The most bytes one chunk's column matrix may take; larger batches run in chunks.
pub const CONV_COLUMN_CAP_BYTES: usize = 256 << 20;

/// Padding of a 2-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding2d {
    /// Zeros on each side: (rows above and below, columns left and right).
    Explicit(usize, usize),
    /// The output keeps the input's size (stride 1 only); an odd total puts the extra row
    /// or column at the bottom or right, as PyTorch does.
    Same,
}

/// The geometry of [`Tensor::conv2d`]: `Conv2dSpec::default()` is stride 1, no padding,
/// dilation 1, one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Step between output positions (rows, columns).
    pub stride: (usize, usize),
    pub padding: Padding2d,
    /// Step between kernel taps (rows, columns).
    pub dilation: (usize, usize),
    /// Input and output channels split into this many independent groups (the channel
    /// count for a depthwise convolution).
    pub groups: usize,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec {
            stride: (1, 1),
            padding: Padding2d::Explicit(0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// One axis of a convolution: input length, kernel taps, padding before and after.
#[derive(Clone, Copy, Debug)]
pub(super) struct Axis {
    pub(super) len: usize,
    pub(super) taps: usize,
    pub(super) before: usize,
    pub(super) after: usize,
    pub(super) stride: usize,
    pub(super) dilation: usize,
}

impl Axis {
    /// The kernel's reach on the padded input.
    fn reach(&self) -> usize {
        self.dilation * (self.taps - 1) + 1
    }

    /// Output positions, or `None` when the kernel does not fit the padded input.
    fn out_len(&self) -> Option<usize> {
        let padded = self.len + self.before + self.after;
        (padded >= self.reach()).then(|| (padded - self.reach()) / self.stride + 1)
    }

    /// The padded input's index read by output `o` at tap `k`, for every (o, k), o-major.
    fn taps_index(&self, out: usize) -> Vec<i64> {
        (0..out)
            .flat_map(|o| (0..self.taps).map(move |k| (o * self.stride + k * self.dilation) as i64))
            .collect()
    }
}

/// The checked shape of one convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvShape {
    pub(super) batch: usize,
    pub(super) channels: usize,
    pub(super) out_channels: usize,
    pub(super) groups: usize,
    pub(super) rows: Axis,
    pub(super) cols: Axis,
    pub(super) out_rows: usize,
    pub(super) out_cols: usize,
}

fn conv_error(msg: String) -> Error {
    Error::invalid("conv2d", msg)
}

fn conv_shape(x: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<ConvShape> {
    if x.rank() != 4 || w.rank() != 4 {
        return Err(conv_error(format!(
            "expected input [N, C, H, W] and weight [O, C/groups, KH, KW], got {:?} and {:?}",
            x.shape(),
            w.shape()
        )));
    }
    let (xs, ws) = (x.shape(), w.shape());
    let g = spec.groups;
    if g == 0 || xs[1] % g != 0 || ws[0] % g != 0 || ws[1] * g != xs[1] {
        return Err(conv_error(format!(
            "input has {} channels and weight {:?} with {g} groups: the input's channels must be groups x weight.shape[1] and the output channels a multiple of groups",
            xs[1], ws
        )));
    }
    let (sh, sw) = spec.stride;
    let (dh, dw) = spec.dilation;
    if sh == 0 || sw == 0 || dh == 0 || dw == 0 || ws[2] == 0 || ws[3] == 0 {
        return Err(conv_error(format!(
            "stride {:?}, dilation {:?} and kernel {:?} must be positive",
            spec.stride,
            spec.dilation,
            &ws[2..]
        )));
    }
    let split = |total: usize| (total / 2, total - total / 2);
    let ((pt, pb), (pl, pr)) = match spec.padding {
        Padding2d::Explicit(ph, pw) => ((ph, ph), (pw, pw)),
        Padding2d::Same => {
            if spec.stride != (1, 1) {
                return Err(conv_error(format!(
                    "padding `same` needs stride 1, got {:?}",
                    spec.stride
                )));
            }
            (split(dh * (ws[2] - 1)), split(dw * (ws[3] - 1)))
        }
    };
    let axis = |len, taps, before, after, stride, dilation| Axis {
        len,
        taps,
        before,
        after,
        stride,
        dilation,
    };
    let rows = axis(xs[2], ws[2], pt, pb, sh, dh);
    let cols = axis(xs[3], ws[3], pl, pr, sw, dw);
    let (Some(out_rows), Some(out_cols)) = (rows.out_len(), cols.out_len()) else {
        return Err(conv_error(format!(
            "the kernel {:?} (dilation {:?}) is larger than the padded input {:?}",
            &ws[2..],
            spec.dilation,
            [xs[2] + pt + pb, xs[3] + pl + pr]
        )));
    };
    Ok(ConvShape {
        batch: xs[0],
        channels: xs[1],
        out_channels: ws[0],
        groups: g,
        rows,
        cols,
        out_rows,
        out_cols,
    })
}

/// `x` with `before` and `after` entries of `value` along `dim` (differentiable).
pub(super) fn pad_dim(
    x: &Tensor,
    dim: usize,
    before: usize,
    after: usize,
    value: f64,
) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let fill = |n: usize| {
        let mut shape = x.shape().to_vec();
        shape[dim] = n;
        Tensor::full(value, &shape, x.dtype(), x.device())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(fill(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(fill(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// A 1-D i64 index tensor.
pub(super) fn index(ids: Vec<i64>, device: Device) -> Result<Tensor> {
    let n = ids.len();
    Tensor::from_vec(ids, &[n], device)
}

/// The im2col convolution of one chunk of the batch: `[n, O, OH, OW]`, contiguous.
fn conv_chunk(x: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Tensor> {
    let n = x.shape()[0];
    let (g, cg, og) = (s.groups, s.channels / s.groups, s.out_channels / s.groups);
    let (kh, kw) = (s.rows.taps, s.cols.taps);
    let (oh, ow) = (s.out_rows, s.out_cols);
    let x = pad_dim(x, 2, s.rows.before, s.rows.after, 0.0)?;
    let x = pad_dim(&x, 3, s.cols.before, s.cols.after, 0.0)?;
    // [n, C, OH*KH, OW*KW]: every tap of every output position.
    let taps = x
        .index_select(2, &index(s.rows.taps_index(oh), x.device())?)?
        .index_select(3, &index(s.cols.taps_index(ow), x.device())?)?;
    // [g, n*OH*OW, Cg*KH*KW]: the column matrix of each group.
    let columns = taps
        .reshape(&[n, g, cg, oh, kh, ow, kw])?
        .permute(&[1, 0, 3, 5, 2, 4, 6])?
        .contiguous()?
        .reshape(&[g, n * oh * ow, cg * kh * kw])?;
    let weights = w.reshape(&[g, og, cg * kh * kw])?.transpose(1, 2)?;
    // [g, n*OH*OW, Og] -> [n, g, Og, OH, OW] -> [n, O, OH, OW].
    columns
        .matmul(&weights)?
        .reshape(&[g, n, oh, ow, og])?
        .permute(&[1, 0, 4, 2, 3])?
        .contiguous()?
        .reshape(&[n, s.out_channels, oh, ow])
}

impl Tensor {
    /// 2-D convolution of `self` (`[N, C, H, W]`) with `weight` (`[O, C/groups, KH, KW]`)
    /// and an optional `bias` (`[O]`), as `torch.nn.functional.conv2d` computes it (a
    /// cross-correlation): `[N, O, OH, OW]` with `OH = (H + pads - dilation*(KH-1) - 1) /
    /// stride + 1`. Float dtypes; differentiable in all three inputs.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        spec: Conv2dSpec,
    ) -> Result<Tensor> {
        check_same("conv2d", self, weight)?;
        super::check_float("conv2d", self)?;
        let s = conv_shape(self, weight, &spec)?;
        if let Some(b) = bias {
            check_same("conv2d", self, b)?;
            if b.shape() != [s.out_channels] {
                return Err(conv_error(format!(
                    "bias {:?} must be [{}], one per output channel",
                    b.shape(),
                    s.out_channels
                )));
            }
        }
        let per_image = (s.channels * s.rows.taps * s.cols.taps)
            .saturating_mul(s.out_rows * s.out_cols)
            .saturating_mul(self.dtype().size_in_bytes().max(1));
        let chunk = (CONV_COLUMN_CAP_BYTES / per_image.max(1)).clamp(1, s.batch.max(1));
        let requested = conv_algorithm()?;
        let forced_implicit = requested == ConvAlgorithm::ImplicitGemm;
        let algorithm = match requested {
            ConvAlgorithm::Auto => pick(self, &s),
            ConvAlgorithm::ImplicitGemm => {
                if let Some(why) = implicit_gemm_refusal(self, &s) {
                    return Err(conv_error(why));
                }
                ConvAlgorithm::ImplicitGemm
            }
            ConvAlgorithm::Winograd if !winograd_applies(&s) => {
                return Err(conv_error(format!(
                    "Winograd F(2x2, 3x3) needs a 3x3 kernel, stride 1, dilation 1 and one group; got kernel {:?} with {spec:?}",
                    &weight.shape()[2..]
                )))
            }
            forced => forced,
        };
        let out = if s.batch == 0 || s.out_channels == 0 {
            Tensor::zeros(
                &[s.batch, s.out_channels, s.out_rows, s.out_cols],
                self.dtype(),
                self.device(),
            )?
        } else if let Some(out) = match algorithm {
            ConvAlgorithm::ImplicitGemm => implicit_gemm(self, weight, &s)?,
            _ => None,
        } {
            out
        } else if algorithm == ConvAlgorithm::ImplicitGemm && forced_implicit {
            return Err(conv_error(
                "implicit GEMM was forced but this GPU has no tensor-core kernels for it (sm_80 or newer)".into(),
            ));
        } else if algorithm == ConvAlgorithm::Direct {
            direct(self, weight, &s)?
        } else if algorithm == ConvAlgorithm::Winograd {
            winograd(self, weight, &s)?
        } else if chunk >= s.batch {
            conv_chunk(self, weight, &s)?
        } else {
            let parts = (0..s.batch)
                .step_by(chunk)
                .map(|start| {
                    let n = chunk.min(s.batch - start);
                    conv_chunk(&self.narrow(0, start, n)?, weight, &s)
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?
        };
        match bias {
            Some(b) => out.add(&b.reshape(&[1, s.out_channels, 1, 1])?),
            None => Ok(out),
        }
    }
}

/// The geometry of [`Tensor::conv_transpose2d`] (PyTorch's `conv_transpose2d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dSpec {
    pub stride: (usize, usize),
    /// Rows and columns taken off each side of the full output.
    pub padding: (usize, usize),
    /// Rows and columns added at the bottom and right (less than the stride or the
    /// dilation), to reach sizes a strided convolution maps to the same input size.
    pub output_padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for ConvTranspose2dSpec {
    fn default() -> Self {
        ConvTranspose2dSpec {
            stride: (1, 1),
            padding: (0, 0),
            output_padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

/// `x` with `s - 1` zeros between its entries along `dim` (differentiable).
fn spread(x: &Tensor, dim: usize, s: usize) -> Result<Tensor> {
    let len = x.shape()[dim];
    if s == 1 || len <= 1 {
        return Ok(x.clone());
    }
    // Row `len` of the extended input is the zero row every gap reads.
    let extended = pad_dim(x, dim, 0, 1, 0.0)?;
    let ids = (0..(len - 1) * s + 1)
        .map(|r| {
            if r % s == 0 {
                (r / s) as i64
            } else {
                len as i64
            }
        })
        .collect();
    extended.index_select(dim, &index(ids, x.device())?)
}

/// `x` padded (or, for a negative amount, cropped) along `dim`.
fn pad_or_crop(x: &Tensor, dim: usize, before: isize, after: isize) -> Result<Tensor> {
    let x = pad_dim(x, dim, before.max(0) as usize, after.max(0) as usize, 0.0)?;
    let (cut_before, cut_after) = ((-before).max(0) as usize, (-after).max(0) as usize);
    let len = x.shape()[dim];
    if cut_before + cut_after > len {
        return Err(conv_error(format!(
            "conv_transpose2d: padding crops {} of {len} rows",
            cut_before + cut_after
        )));
    }
    x.narrow(dim, cut_before, len - cut_before - cut_after)
}

impl Tensor {
    /// Transposed 2-D convolution (the input gradient of [`Tensor::conv2d`]) of `self`
    /// (`[N, C, H, W]`) with `weight` (`[C, O/groups, KH, KW]`) and an optional `bias`
    /// (`[O]`), as `torch.nn.functional.conv_transpose2d`: `[N, O, OH, OW]` with
    /// `OH = (H - 1)·stride - 2·padding + dilation·(KH - 1) + output_padding + 1`.
    /// Differentiable in all three inputs.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        spec: ConvTranspose2dSpec,
    ) -> Result<Tensor> {
        check_same("conv_transpose2d", self, weight)?;
        super::check_float("conv_transpose2d", self)?;
        let bad = |m: String| Err(Error::invalid("conv_transpose2d", m));
        if self.rank() != 4 || weight.rank() != 4 {
            return bad(format!(
                "expected input [N, C, H, W] and weight [C, O/groups, KH, KW], got {:?} and {:?}",
                self.shape(),
                weight.shape()
            ));
        }
        let (xs, ws) = (self.shape(), weight.shape());
        let g = spec.groups;
        if g == 0 || ws[0] != xs[1] || xs[1] % g != 0 {
            return bad(format!(
                "input has {} channels and weight {ws:?} with {g} groups: weight.shape[0] must be the input's channels, a multiple of groups",
                xs[1]
            ));
        }
        let (s, d, op) = (spec.stride, spec.dilation, spec.output_padding);
        if [s.0, s.1, d.0, d.1, ws[2], ws[3]].contains(&0) {
            return bad(format!(
                "stride {s:?}, dilation {d:?} and kernel {:?} must be positive",
                &ws[2..]
            ));
        }
        if op.0 >= s.0.max(d.0) || op.1 >= s.1.max(d.1) {
            return bad(format!(
                "output padding {op:?} must be smaller than the stride {s:?} or the dilation {d:?}"
            ));
        }
        let (cig, cog) = (xs[1] / g, ws[1]);
        let (kh, kw) = (ws[2], ws[3]);
        // The equivalent convolution's weight: [O, C/groups, KH, KW], flipped in space.
        let flip = |n: usize| (0..n).rev().map(|i| i as i64).collect::<Vec<_>>();
        let w = weight
            .reshape(&[g, cig, cog, kh, kw])?
            .permute(&[0, 2, 1, 3, 4])?
            .contiguous()?
            .reshape(&[g * cog, cig, kh, kw])?
            .index_select(2, &index(flip(kh), weight.device())?)?
            .index_select(3, &index(flip(kw), weight.device())?)?;
        let reach = |d: usize, k: usize| (d * (k - 1)) as isize;
        let (ph, pw) = (spec.padding.0 as isize, spec.padding.1 as isize);
        let x = spread(self, 2, s.0)?;
        let x = spread(&x, 3, s.1)?;
        let x = pad_or_crop(
            &x,
            2,
            reach(d.0, kh) - ph,
            reach(d.0, kh) - ph + op.0 as isize,
        )?;
        let x = pad_or_crop(
            &x,
            3,
            reach(d.1, kw) - pw,
            reach(d.1, kw) - pw + op.1 as isize,
        )?;
        x.conv2d(
            &w,
            bias,
            Conv2dSpec {
                dilation: d,
                groups: g,
                ..Conv2dSpec::default()
            },
        )
    }
}
