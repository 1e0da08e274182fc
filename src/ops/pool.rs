//! 2-D pooling with PyTorch's semantics: max (padding with −inf, dilation, `ceil_mode`),
//! average (`count_include_pad`, `ceil_mode`), adaptive average and max (PyTorch's window
//! rule: output i covers `floor(i·L/O) .. ceil((i+1)·L/O)`) and global average.
//!
//! Like [`Tensor::conv2d`], pooling gathers each window's taps with `index_select` and
//! reduces them, so it runs on every backend and differentiates through their ops. Max
//! pooling keeps the index of each window's first largest element (`argmax`) and reads
//! the output through it, so its gradient goes to that element alone, as PyTorch's does.

use super::conv::{index, pad_dim};
use crate::{Error, Result, Tensor};

/// The geometry of [`Tensor::max_pool2d`] and [`Tensor::avg_pool2d`];
/// `Pool2dSpec::new(k)` is a `k`-window with stride `k`, no padding, dilation 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dSpec {
    /// Window size (rows, columns).
    pub kernel: (usize, usize),
    /// Step between windows.
    pub stride: (usize, usize),
    /// Implicit padding on each side: −inf for max pooling, zeros for average pooling; at
    /// most half the window.
    pub padding: (usize, usize),
    /// Step between a window's taps (max pooling only).
    pub dilation: (usize, usize),
    /// Round the output size up, so a last partial window that starts inside the input
    /// (or its left padding) counts.
    pub ceil_mode: bool,
    /// Average pooling divides by the whole window, padding included (PyTorch's default),
    /// rather than by the input elements it covers.
    pub count_include_pad: bool,
}

impl Pool2dSpec {
    /// A `kernel` window moved by its own size.
    pub fn new(kernel: (usize, usize)) -> Self {
        Pool2dSpec {
            kernel,
            stride: kernel,
            padding: (0, 0),
            dilation: (1, 1),
            ceil_mode: false,
            count_include_pad: true,
        }
    }
}

/// One axis of a pooling window.
#[derive(Clone, Copy, Debug)]
struct PoolAxis {
    len: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    out: usize,
}

impl PoolAxis {
    fn new(
        op: &'static str,
        len: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        ceil: bool,
    ) -> Result<Self> {
        let bad = |m: String| Err(Error::invalid(op, m));
        if k == 0 || s == 0 || d == 0 {
            return bad(format!(
                "kernel {k}, stride {s} and dilation {d} must be positive"
            ));
        }
        if p > k / 2 {
            return bad(format!("padding {p} is more than half the window {k}"));
        }
        let reach = d * (k - 1) + 1;
        let span = len + 2 * p;
        if span < reach {
            return bad(format!(
                "the window reaches {reach} but the padded input is {span}"
            ));
        }
        let mut out = (span - reach + if ceil { s - 1 } else { 0 }) / s + 1;
        // A last window must start inside the input or its left padding.
        if ceil && (out - 1) * s >= len + p {
            out -= 1;
        }
        Ok(PoolAxis {
            len,
            kernel: k,
            stride: s,
            pad: p,
            dilation: d,
            out,
        })
    }

    /// Entries of padding after the input that the last window reaches.
    fn pad_after(&self) -> usize {
        let end = (self.out - 1) * self.stride + self.dilation * (self.kernel - 1) + 1;
        end.saturating_sub(self.len + self.pad)
    }

    /// The padded input's index of every tap of every window, window-major.
    fn taps(&self) -> Vec<i64> {
        (0..self.out)
            .flat_map(|o| {
                (0..self.kernel).map(move |k| (o * self.stride + k * self.dilation) as i64)
            })
            .collect()
    }

    /// The divisor of average pooling for window `o`.
    fn count(&self, o: usize, include_pad: bool) -> usize {
        let start = (o * self.stride) as isize - self.pad as isize;
        let end = start + self.kernel as isize;
        let (lo, hi) = if include_pad {
            (start, end.min((self.len + self.pad) as isize))
        } else {
            (start.max(0), end.min(self.len as isize))
        };
        (hi - lo).max(0) as usize
    }
}

fn check_input(op: &'static str, x: &Tensor) -> Result<()> {
    super::check_float(op, x)?;
    if x.rank() != 4 {
        return Err(Error::invalid(
            op,
            format!("expected an input [N, C, H, W], got {:?}", x.shape()),
        ));
    }
    Ok(())
}

/// `[N, C, OH, OW, taps]`: the taps of every window of `x` (padded by `pad` in value),
/// `taps_h` / `taps_w` indexing the padded input, `kh` / `kw` taps per window.
fn windows(
    x: &Tensor,
    (rows, cols): (&PoolAxis, &PoolAxis),
    (taps_h, kh): (Vec<i64>, usize),
    (taps_w, kw): (Vec<i64>, usize),
    fill: f64,
) -> Result<Tensor> {
    let [n, c, ..] = x.shape()[..] else {
        return Err(Error::invalid("pool2d", "expected [N, C, H, W]"));
    };
    let x = pad_dim(x, 2, rows.pad, rows.pad_after(), fill)?;
    let x = pad_dim(&x, 3, cols.pad, cols.pad_after(), fill)?;
    x.index_select(2, &index(taps_h, x.device())?)?
        .index_select(3, &index(taps_w, x.device())?)?
        .reshape(&[n, c, rows.out, kh, cols.out, kw])?
        .permute(&[0, 1, 2, 4, 3, 5])?
        .contiguous()?
        .reshape(&[n, c, rows.out, cols.out, kh * kw])
}

/// The largest tap of each window: the output and the index of its tap.
fn max_of(w: &Tensor) -> Result<(Tensor, Tensor)> {
    let at = w.argmax(4, true)?;
    Ok((w.gather(4, &at)?.squeeze(4)?, at.squeeze(4)?))
}

/// PyTorch's adaptive window of output `o` of `out` over `len` inputs.
fn adaptive_window(o: usize, out: usize, len: usize) -> (usize, usize) {
    (o * len / out, ((o + 1) * len).div_ceil(out))
}

/// The adaptive windows of one axis as a pooling axis of `out` windows, each padded to the
/// longest by repeating its first index (which changes neither a max nor its first index).
fn adaptive_axis(len: usize, out: usize) -> (PoolAxis, Vec<i64>, usize) {
    let longest = (0..out)
        .map(|o| {
            let (a, b) = adaptive_window(o, out, len);
            b - a
        })
        .max()
        .unwrap_or(1);
    let taps = (0..out)
        .flat_map(|o| {
            let (a, b) = adaptive_window(o, out, len);
            (0..longest).map(move |k| (if a + k < b { a + k } else { a }) as i64)
        })
        .collect();
    let axis = PoolAxis {
        len,
        kernel: 1,
        stride: 1,
        pad: 0,
        dilation: 1,
        out,
    };
    (axis, taps, longest)
}

/// `[out, len]`: the averaging matrix of adaptive average pooling along one axis.
fn adaptive_mean_matrix(len: usize, out: usize, like: &Tensor) -> Result<Tensor> {
    let mut m = vec![0.0; out * len];
    for o in 0..out {
        let (a, b) = adaptive_window(o, out, len);
        for v in &mut m[o * len + a..o * len + b] {
            *v = 1.0 / (b - a) as f64;
        }
    }
    Tensor::from_vec(m, &[out, len], like.device())?.to_dtype(like.dtype())
}

fn check_output_size(op: &'static str, x: &Tensor, out: (usize, usize)) -> Result<()> {
    if out.0 == 0 || out.1 == 0 {
        return Err(Error::invalid(
            op,
            format!("output size {out:?} must be positive"),
        ));
    }
    if x.shape()[2] == 0 || x.shape()[3] == 0 {
        return Err(Error::invalid(
            op,
            format!("input {:?} has no rows or columns to pool", x.shape()),
        ));
    }
    Ok(())
}

impl Tensor {
    fn pool_axes(&self, op: &'static str, s: &Pool2dSpec) -> Result<(PoolAxis, PoolAxis)> {
        check_input(op, self)?;
        let sh = self.shape();
        let rows = PoolAxis::new(
            op,
            sh[2],
            s.kernel.0,
            s.stride.0,
            s.padding.0,
            s.dilation.0,
            s.ceil_mode,
        )?;
        let cols = PoolAxis::new(
            op,
            sh[3],
            s.kernel.1,
            s.stride.1,
            s.padding.1,
            s.dilation.1,
            s.ceil_mode,
        )?;
        Ok((rows, cols))
    }

    /// The windowed max and each output's tap index.
    fn max_pool_taps(&self, spec: &Pool2dSpec) -> Result<(Tensor, Tensor, PoolAxis, PoolAxis)> {
        let (rows, cols) = self.pool_axes("max_pool2d", spec)?;
        let w = windows(
            self,
            (&rows, &cols),
            (rows.taps(), rows.kernel),
            (cols.taps(), cols.kernel),
            f64::NEG_INFINITY,
        )?;
        let (out, at) = max_of(&w)?;
        Ok((out, at, rows, cols))
    }

    /// Max pooling of `[N, C, H, W]` (PyTorch's `max_pool2d`): `[N, C, OH, OW]`.
    pub fn max_pool2d(&self, spec: Pool2dSpec) -> Result<Tensor> {
        Ok(self.max_pool_taps(&spec)?.0)
    }

    /// [`Tensor::max_pool2d`] and, for each output, the flat index `h * W + w` into its
    /// input plane of the element it took (i64, as PyTorch's `return_indices`; computed on
    /// the host).
    pub fn max_pool2d_with_indices(&self, spec: Pool2dSpec) -> Result<(Tensor, Tensor)> {
        let (out, at, rows, cols) = self.max_pool_taps(&spec)?;
        // The tap index of each output, as a position in the unpadded input plane.
        let taps = at.to_vec::<i64>()?;
        let (oh, ow, kw) = (rows.out, cols.out, cols.kernel as i64);
        let flat: Vec<i64> = taps
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let (y, x) = ((i / ow) % oh, i % ow);
                let r =
                    (y * rows.stride) as i64 + (t / kw) * rows.dilation as i64 - rows.pad as i64;
                let c =
                    (x * cols.stride) as i64 + (t % kw) * cols.dilation as i64 - cols.pad as i64;
                r * self.shape()[3] as i64 + c
            })
            .collect();
        let indices = Tensor::from_vec(flat, out.shape(), self.device())?;
        Ok((out, indices))
    }

    /// Average pooling of `[N, C, H, W]` (PyTorch's `avg_pool2d`; no dilation).
    pub fn avg_pool2d(&self, spec: Pool2dSpec) -> Result<Tensor> {
        if spec.dilation != (1, 1) {
            return Err(Error::invalid(
                "avg_pool2d",
                format!("average pooling has no dilation (got {:?})", spec.dilation),
            ));
        }
        let (rows, cols) = self.pool_axes("avg_pool2d", &spec)?;
        let w = windows(
            self,
            (&rows, &cols),
            (rows.taps(), rows.kernel),
            (cols.taps(), cols.kernel),
            0.0,
        )?;
        let counts: Vec<f64> = (0..rows.out)
            .flat_map(|y| {
                (0..cols.out).map(move |x| {
                    let n = rows.count(y, spec.count_include_pad)
                        * cols.count(x, spec.count_include_pad);
                    n.max(1) as f64
                })
            })
            .collect();
        let counts = Tensor::from_vec(counts, &[1, 1, rows.out, cols.out], self.device())?
            .to_dtype(self.dtype())?;
        w.sum(&[4])?.div(&counts)
    }

    /// Adaptive average pooling to `[N, C, out.0, out.1]` (PyTorch's
    /// `adaptive_avg_pool2d`): two products with averaging matrices.
    pub fn adaptive_avg_pool2d(&self, out: (usize, usize)) -> Result<Tensor> {
        check_input("adaptive_avg_pool2d", self)?;
        check_output_size("adaptive_avg_pool2d", self, out)?;
        let [n, c, h, w] = self.shape()[..] else {
            return Err(Error::invalid(
                "adaptive_avg_pool2d",
                "expected [N, C, H, W]",
            ));
        };
        let along_w = adaptive_mean_matrix(w, out.1, self)?.t()?;
        let along_h = adaptive_mean_matrix(h, out.0, self)?.t()?;
        self.reshape(&[n * c * h, w])?
            .matmul(&along_w)?
            .reshape(&[n * c, h, out.1])?
            .transpose(1, 2)?
            .reshape(&[n * c * out.1, h])?
            .matmul(&along_h)?
            .reshape(&[n, c, out.1, out.0])?
            .transpose(2, 3)
    }

    /// Adaptive max pooling to `[N, C, out.0, out.1]` (PyTorch's `adaptive_max_pool2d`).
    pub fn adaptive_max_pool2d(&self, out: (usize, usize)) -> Result<Tensor> {
        check_input("adaptive_max_pool2d", self)?;
        check_output_size("adaptive_max_pool2d", self, out)?;
        let (rows, taps_h, kh) = adaptive_axis(self.shape()[2], out.0);
        let (cols, taps_w, kw) = adaptive_axis(self.shape()[3], out.1);
        let w = windows(
            self,
            (&rows, &cols),
            (taps_h, kh),
            (taps_w, kw),
            f64::NEG_INFINITY,
        )?;
        Ok(max_of(&w)?.0)
    }

    /// The mean of each channel's plane: `[N, C, 1, 1]`.
    pub fn global_avg_pool2d(&self) -> Result<Tensor> {
        check_input("global_avg_pool2d", self)?;
        self.mean_keepdim(&[2, 3])
    }
}
