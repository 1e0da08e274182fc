//! Antialiased bilinear and bicubic resizing of 8-bit images with Pillow's algorithm (the
//! resampler torchvision's transforms and CLIP's processor call on PIL images): a filter
//! (triangle, or Keys' cubic with a = -0.5) widened by the
//! downscaling factor, weights normalised per output pixel and rounded to fixed point
//! with 22 fractional bits, a horizontal pass then a vertical one, each rounded and
//! clipped to 8 bits. Pillow 13 equals this byte for byte when it makes the horizontal
//! pass first; where it makes the vertical pass first (some shapes that shrink the height)
//! its results differ by at most one level.

use super::RgbImage;
use crate::{Error, Result};

/// Fractional bits of the fixed-point weights (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// The taps of one output pixel: the first input index and its integer weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// The interpolation filter of a resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeFilter {
    /// Pillow's `BILINEAR`: the triangle, support 1.
    Bilinear,
    /// Pillow's `BICUBIC`: Keys' cubic with a = -0.5, support 2.
    Bicubic,
}

impl ResizeFilter {
    /// The filter's half-width at scale 1.
    fn support(self) -> f64 {
        match self {
            ResizeFilter::Bilinear => 1.0,
            ResizeFilter::Bicubic => 2.0,
        }
    }

    /// The filter's weight at distance `x`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            ResizeFilter::Bilinear if x < 1.0 => 1.0 - x,
            ResizeFilter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            ResizeFilter::Bilinear => 0.0,
        }
    }
}

/// The taps of every output pixel when `in_len` pixels become `out_len`.
fn taps(in_len: usize, out_len: usize, filter: ResizeFilter) -> Vec<Taps> {
    let scale = in_len as f64 / out_len as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    (0..out_len)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            // Truncation toward zero, then clamping, as the C casts do.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
            let raw: Vec<f64> = (lo..hi)
                .map(|x| filter.weight((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let fixed = w * f64::from(1u32 << PRECISION_BITS);
                    (if fixed < 0.0 {
                        fixed - 0.5
                    } else {
                        fixed + 0.5
                    }) as i32
                })
                .collect();
            Taps { start: lo, weights }
        })
        .collect()
}

/// A fixed-point sum back to 8 bits, clipped.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along rows (`horizontal`) or columns: `src` is `width x height` RGB.
fn pass(src: &[u8], width: usize, height: usize, taps: &[Taps], horizontal: bool) -> Vec<u8> {
    let (out_w, out_h) = if horizontal {
        (taps.len(), height)
    } else {
        (width, taps.len())
    };
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let t = if horizontal { &taps[x] } else { &taps[y] };
            let mut sums = [1i64 << (PRECISION_BITS - 1); 3];
            for (k, &w) in t.weights.iter().enumerate() {
                let (sx, sy) = if horizontal {
                    (t.start + k, y)
                } else {
                    (x, t.start + k)
                };
                let at = (sy * width + sx) * 3;
                for c in 0..3 {
                    sums[c] += i64::from(src[at + c]) * i64::from(w);
                }
            }
            let at = (y * out_w + x) * 3;
            for c in 0..3 {
                out[at + c] = clip8(sums[c]);
            }
        }
    }
    out
}

/// `img` resized to `width x height` with antialiased bilinear filtering, exactly as
/// Pillow's `Image.resize(..., BILINEAR)` computes it.
pub fn resize_bilinear(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    resize(img, width, height, ResizeFilter::Bilinear)
}

/// `img` resized to `width x height` with `filter`, antialiased when shrinking, as
/// Pillow's `Image.resize(..., BILINEAR | BICUBIC)` computes it.
pub fn resize(
    img: &RgbImage,
    width: usize,
    height: usize,
    filter: ResizeFilter,
) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(
            "resize",
            format!("cannot resize to {width}x{height}"),
        ));
    }
    let mut data = img.data.clone();
    let mut w = img.width;
    if width != img.width {
        data = pass(&data, w, img.height, &taps(img.width, width, filter), true);
        w = width;
    }
    if height != img.height {
        data = pass(
            &data,
            w,
            img.height,
            &taps(img.height, height, filter),
            false,
        );
    }
    RgbImage::new(width, height, data)
}
