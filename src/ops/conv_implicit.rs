//! Implicit-GEMM convolution on tensor cores: f16/bf16 on CUDA, one group, no column
//! buffer. The image runs as NHWC (`[N, H, W, C]`, channels contiguous: a channels-last
//! tensor is read in place), the weights as KRSC, and the output comes back channels-last
//! (an `[N, O, OH, OW]` view of `[N, OH, OW, O]` memory), which the next convolution reads
//! without a copy. Channel counts that are not multiples of 8 (the 3-channel stem) are
//! padded with zeros. The backward runs the same kernels: the input gradient is a gather
//! of the output gradient against the weights as CRSK, the weight gradient a product over
//! pixels split into f32 partial sums.

use super::conv::{pad_dim, ConvShape};
use crate::autograd::{record, Op};
use crate::backend::interface::{ConvPass, GatherAxis};
use crate::backend::storage::Storage;
use crate::{DType, Device, Error, Layout, Result, Tensor};

/// The channel granule of the kernels: 8 halves, one 16-byte copy.
const GRANULE: usize = 8;

/// Whether the implicit-GEMM kernels can serve this convolution at all (device, dtype,
/// groups); the kernels still decline layouts they cannot read, and then the general path
/// runs.
pub(super) fn implicit_gemm_applies(x: &Tensor, s: &ConvShape) -> bool {
    matches!(x.device(), Device::Cuda(_))
        && matches!(x.dtype(), DType::F16 | DType::BF16)
        && s.groups == 1
}

/// Why a forced implicit GEMM cannot run this convolution, or `None` when it can.
pub(super) fn implicit_gemm_refusal(x: &Tensor, s: &ConvShape) -> Option<String> {
    if !matches!(x.device(), Device::Cuda(_)) {
        return Some(format!(
            "implicit GEMM runs on CUDA tensor cores; this input is on {:?}",
            x.device()
        ));
    }
    if !matches!(x.dtype(), DType::F16 | DType::BF16) {
        return Some(format!(
            "implicit GEMM runs f16 and bf16 convolutions; this one is {:?}",
            x.dtype()
        ));
    }
    if s.groups != 1 {
        return Some(format!(
            "implicit GEMM runs ungrouped convolutions; this one has {} groups",
            s.groups
        ));
    }
    None
}

fn axis(a: &super::conv::Axis, out: usize) -> Result<GatherAxis> {
    let int = |v: usize| {
        i32::try_from(v)
            .map_err(|_| Error::invalid("conv2d", format!("size {v} too large for implicit GEMM")))
    };
    Ok(GatherAxis {
        len: int(a.len)?,
        out: int(out)?,
        taps: int(a.taps)?,
        step: int(a.stride)?,
        offset: -int(a.before)?,
        tap_step: int(a.dilation)?,
        divisor: 1,
    })
}

/// The axis of the input gradient: input position `h` at tap `r` reads the output
/// gradient at `(h + pad - r * dilation) / stride`.
fn transposed(a: &GatherAxis) -> GatherAxis {
    GatherAxis {
        len: a.out,
        out: a.len,
        taps: a.taps,
        step: 1,
        offset: -a.offset,
        tap_step: -a.tap_step,
        divisor: a.step,
    }
}

/// Whether `t` (`[N, H, W, C]`) is a view the kernels read in place: channels contiguous
/// and every pixel on a 16-byte boundary.
fn reads_in_place(t: &Tensor) -> bool {
    let st = t.layout().strides();
    (t.shape()[3] <= 1 || st[3] == 1)
        && st[..3].iter().all(|&s| s.is_multiple_of(GRANULE))
        && t.layout().offset().is_multiple_of(GRANULE)
}

/// `t` (`[.., C]`) with zero channels appended up to a multiple of 8, in a layout the
/// kernels read in place.
fn granular(t: &Tensor, dim: usize) -> Result<Tensor> {
    let c = t.shape()[dim];
    let padded = pad_dim(t, dim, 0, c.next_multiple_of(GRANULE) - c, 0.0)?;
    if reads_in_place(&padded) {
        Ok(padded)
    } else {
        padded.copy()
    }
}

/// One kernel pass; the kernels declining means a layout this module should have made
/// readable, so it is an error rather than a silent fallback.
fn pass(src: &Tensor, other: &Tensor, pass: ConvPass) -> Result<(Storage, Layout)> {
    src.read_storage()
        .conv_pass(src.layout(), (&other.read_storage(), other.layout()), pass)?
        .ok_or_else(|| {
            Error::invalid(
                "conv2d",
                format!(
                    "implicit GEMM declined {:?} {:?} against {:?} {:?}",
                    src.shape(),
                    src.layout().strides(),
                    other.shape(),
                    other.layout().strides()
                ),
            )
        })
}

/// The convolution of `x` (`[N, C, H, W]`) by `w` (`[O, C, R, S]`) on tensor cores, or
/// `None` when the kernels do not take this GPU. The result is `[N, O, OH, OW]` with
/// channels-last strides.
pub(super) fn implicit_gemm(x: &Tensor, w: &Tensor, s: &ConvShape) -> Result<Option<Tensor>> {
    let rows = axis(&s.rows, s.out_rows)?;
    let cols = axis(&s.cols, s.out_cols)?;
    let image = granular(&x.permute(&[0, 2, 3, 1])?, 3)?;
    let o = s.out_channels;
    let weights = pad_dim(
        &granular(&w.permute(&[0, 2, 3, 1])?, 3)?,
        0,
        0,
        o.next_multiple_of(GRANULE) - o,
        0.0,
    )?
    .contiguous()?;
    let Some((out, layout)) = image.read_storage().conv_pass(
        image.layout(),
        (&weights.read_storage(), weights.layout()),
        ConvPass::Gather { rows, cols },
    )?
    else {
        return Ok(None);
    };
    let out = Tensor::from_storage_in(out, layout, None);
    let rec = record(&[&image, &weights], || Op::ConvImplicit {
        x: image.clone(),
        w: weights.clone(),
        rows,
        cols,
    });
    let out = out.view_with(out.layout().clone(), rec);
    let out = if out.shape()[3] == o {
        out
    } else {
        out.narrow(3, 0, o)?
    };
    Ok(Some(out.permute(&[0, 3, 1, 2])?))
}

/// The gradients of [`Op::ConvImplicit`]: `(dX, dW)` for the NHWC image and the KRSC
/// weights, given the output gradient `g` (`[N, P, Q, O]`); `dX` only when `x` tracks
/// gradients.
pub(crate) fn conv_implicit_grads(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    rows: GatherAxis,
    cols: GatherAxis,
) -> Result<(Option<Tensor>, Tensor)> {
    let g = if g.is_contiguous() && g.layout().offset().is_multiple_of(GRANULE) {
        g.clone()
    } else {
        g.copy()?
    };
    let dx = if x.tracks_grad() {
        let crsk = w.permute(&[3, 1, 2, 0])?.contiguous()?;
        let rows_t = transposed(&rows);
        let cols_t = transposed(&cols);
        let (storage, layout) = pass(
            &g,
            &crsk,
            ConvPass::Gather {
                rows: rows_t,
                cols: cols_t,
            },
        )?;
        Some(Tensor::from_storage_in(storage, layout, None))
    } else {
        None
    };
    let (storage, layout) = pass(&g, x, ConvPass::WeightGrad { rows, cols })?;
    let partial = Tensor::from_storage_in(storage, layout, None);
    let dw = partial.sum(&[0])?.reshape(w.shape())?.to_dtype(w.dtype())?;
    Ok((dx, dw))
}
