//! torchvision's classification preprocessing (`weights.transforms()` of its ImageNet
//! classifiers) on decoded images: the shorter side resized to `resize_size` (bilinear,
//! antialiased), a centered `crop_size` square, values scaled to [0, 1] and normalised by
//! the channel means and deviations, in f32.

use super::{resize_bilinear, RgbImage};
use crate::{Device, Error, Result, Tensor};

/// ImageNet's channel means (RGB), as torchvision normalises.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The preprocessing of a classifier's inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassificationPreset {
    /// The shorter side's length after resizing.
    pub resize_size: usize,
    /// The side of the centered square kept.
    pub crop_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for ClassificationPreset {
    /// torchvision's ImageNet preset: resize 256, crop 224, ImageNet mean and std.
    fn default() -> Self {
        ClassificationPreset {
            resize_size: 256,
            crop_size: 224,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

/// Python's `round` (halves to even) of `x / 2` for an integer `x`.
fn half_round_even(x: i64) -> i64 {
    let (q, r) = (x.div_euclid(2), x.rem_euclid(2));
    if r == 0 || q % 2 == 0 {
        q
    } else {
        q + 1
    }
}

/// The centered `width x height` region of `img`, as torchvision's `center_crop` takes it
/// (offsets `round((size - crop) / 2)`, halves to even); a crop larger than the image
/// pads it with black first, as torchvision does.
pub fn center_crop(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(
            "center_crop",
            format!("cannot crop to {width}x{height}"),
        ));
    }
    // Padding first, split as torchvision splits it (the extra pixel after).
    let (pw, ph) = (
        width.saturating_sub(img.width),
        height.saturating_sub(img.height),
    );
    let padded = if pw > 0 || ph > 0 {
        let (left, top) = (pw / 2, ph / 2);
        let (w, h) = (img.width + pw, img.height + ph);
        let mut data = vec![0u8; w * h * 3];
        for y in 0..img.height {
            let src = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
            let at = ((y + top) * w + left) * 3;
            data[at..at + src.len()].copy_from_slice(src);
        }
        RgbImage::new(w, h, data)?
    } else {
        img.clone()
    };
    let top = half_round_even(padded.height as i64 - height as i64) as usize;
    let left = half_round_even(padded.width as i64 - width as i64) as usize;
    let mut data = Vec::with_capacity(width * height * 3);
    for y in top..top + height {
        let row = (y * padded.width + left) * 3;
        data.extend_from_slice(&padded.data[row..row + width * 3]);
    }
    RgbImage::new(width, height, data)
}

impl ClassificationPreset {
    /// The size `img` is resized to: the shorter side to `resize_size`, the longer scaled
    /// and truncated, as torchvision computes it.
    pub fn resized_size(&self, img: &RgbImage) -> (usize, usize) {
        let (w, h) = (img.width, img.height);
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        let new_long = ((self.resize_size * long) as f64 / short as f64) as usize;
        if w <= h {
            (self.resize_size, new_long)
        } else {
            (new_long, self.resize_size)
        }
    }

    /// `img` preprocessed: `[3, crop, crop]` f32 values, channel-major.
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>> {
        if self.resize_size == 0 || self.crop_size == 0 {
            return Err(Error::invalid(
                "preprocess",
                format!(
                    "resize {} and crop {} must be positive",
                    self.resize_size, self.crop_size
                ),
            ));
        }
        let (w, h) = self.resized_size(img);
        let resized = resize_bilinear(img, w, h)?;
        let c = self.crop_size;
        Ok(normalized_planes(
            &center_crop(&resized, c, c)?,
            self.mean,
            self.std,
        ))
    }

    /// A batch of images preprocessed into one `[N, 3, crop, crop]` f32 tensor.
    pub fn batch(&self, images: &[RgbImage], device: Device) -> Result<Tensor> {
        batch_of(images, self.crop_size, device, |img| self.apply(img))
    }
}

/// A square 8-bit image as `[3, side, side]` f32 planes: values scaled to [0, 1], less the
/// channel means, over the channel deviations.
pub(crate) fn normalized_planes(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for ch in 0..3 {
            out[ch * n + i] = (f32::from(px[ch]) / 255.0 - mean[ch]) / std[ch];
        }
    }
    out
}

/// `images` each preprocessed by `one` into `[3, side, side]`, as one `[N, 3, side, side]`
/// tensor on `device`.
pub(crate) fn batch_of(
    images: &[RgbImage],
    side: usize,
    device: Device,
    one: impl Fn(&RgbImage) -> Result<Vec<f32>>,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(images.len() * 3 * side * side);
    for img in images {
        data.extend(one(img)?);
    }
    Tensor::from_vec(data, &[images.len(), 3, side, side], Device::Cpu)?.to_device(device)
}
