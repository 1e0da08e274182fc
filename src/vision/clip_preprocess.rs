//! CLIP's image preprocessing as transformers' `CLIPImageProcessor` computes it on PIL
//! images: the shorter side resized to `size` with Pillow's antialiased bicubic filter
//! (the longer side scaled and truncated), the centered `crop` square (offsets rounded
//! down), values scaled to [0, 1] and normalised by CLIP's channel means and deviations.

use super::transforms::{batch_of, normalized_planes};
use super::{resize, ResizeFilter, RgbImage};
use crate::{Device, Error, Result, Tensor};
use std::path::Path;

/// CLIP's channel means (RGB).
#[allow(clippy::excessive_precision)] // the published constants, as written
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's channel standard deviations (RGB).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The preprocessing of a CLIP model's images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipPreprocess {
    /// The shorter side's length after resizing.
    pub size: usize,
    /// The side of the centered square kept.
    pub crop: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The fields of `preprocessor_config.json` that change the preprocessing.
#[derive(serde::Deserialize)]
struct ProcessorFile {
    #[serde(default)]
    size: Option<serde_json::Value>,
    #[serde(default)]
    crop_size: Option<serde_json::Value>,
    #[serde(default)]
    image_mean: Option<[f32; 3]>,
    #[serde(default)]
    image_std: Option<[f32; 3]>,
}

/// A side length from `224`, `{"shortest_edge": 224}` or `{"height": 224, "width": 224}`.
fn side(v: &serde_json::Value) -> Option<usize> {
    let n = v
        .as_u64()
        .or_else(|| v.get("shortest_edge").and_then(|s| s.as_u64()))
        .or_else(|| match (v.get("height"), v.get("width")) {
            (Some(h), Some(w)) if h == w => h.as_u64(),
            _ => None,
        })?;
    usize::try_from(n).ok().filter(|&n| n > 0)
}

impl ClipPreprocess {
    /// CLIP's preprocessing for images of `image_size`: resize and crop to it, CLIP's
    /// mean and std.
    pub fn new(image_size: usize) -> Self {
        ClipPreprocess {
            size: image_size,
            crop: image_size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// The preprocessing `dir/preprocessor_config.json` describes, where the folder has
    /// one, else [`ClipPreprocess::new`]`(image_size)`. The crop must equal `image_size`.
    pub fn for_model(dir: &Path, image_size: usize) -> Result<Self> {
        let mut p = ClipPreprocess::new(image_size);
        let path = dir.join("preprocessor_config.json");
        if !path.exists() {
            return Ok(p);
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.clone(),
            msg,
        };
        let f: ProcessorFile = crate::io::parse_json(&bytes).map_err(bad)?;
        if let Some(v) = &f.size {
            p.size = side(v).ok_or_else(|| bad(format!("`size` = {v}: not a side length")))?;
        }
        if let Some(v) = &f.crop_size {
            p.crop = side(v)
                .ok_or_else(|| bad(format!("`crop_size` = {v}: not a square side length")))?;
        }
        if p.crop != image_size {
            return Err(bad(format!(
                "`crop_size` {} differs from the model's image_size {image_size}",
                p.crop
            )));
        }
        p.mean = f.image_mean.unwrap_or(p.mean);
        p.std = f.image_std.unwrap_or(p.std);
        if p.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return Err(bad(format!("`image_std` {:?} must be positive", p.std)));
        }
        Ok(p)
    }

    /// The resized and cropped image, before scaling (8-bit RGB, `crop x crop`).
    pub fn crop_image(&self, img: &RgbImage) -> Result<RgbImage> {
        if self.size == 0 || self.crop == 0 || self.crop > self.size {
            return Err(Error::invalid(
                "preprocess",
                format!(
                    "resize {} and crop {} must be positive, the crop no larger",
                    self.size, self.crop
                ),
            ));
        }
        let (w, h) = (img.width, img.height);
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        let new_long = ((self.size * long) as f64 / short as f64) as usize;
        let (nw, nh) = if w <= h {
            (self.size, new_long)
        } else {
            (new_long, self.size)
        };
        let resized = resize(img, nw, nh, ResizeFilter::Bicubic)?;
        let c = self.crop;
        let (top, left) = ((nh - c) / 2, (nw - c) / 2);
        let mut data = Vec::with_capacity(c * c * 3);
        for y in top..top + c {
            let row = (y * nw + left) * 3;
            data.extend_from_slice(&resized.data[row..row + c * 3]);
        }
        RgbImage::new(c, c, data)
    }

    /// `img` preprocessed: `[3, crop, crop]` f32 values, channel-major.
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>> {
        Ok(normalized_planes(
            &self.crop_image(img)?,
            self.mean,
            self.std,
        ))
    }

    /// A batch of images preprocessed into one `[N, 3, crop, crop]` f32 tensor.
    pub fn batch(&self, images: &[RgbImage], device: Device) -> Result<Tensor> {
        batch_of(images, self.crop, device, |img| self.apply(img))
    }
}
