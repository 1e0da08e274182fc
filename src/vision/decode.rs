//! PNG and JPEG files to 8-bit RGB, through the `image` crate, with bounded dimensions and
//! memory so that a hostile file cannot ask for more than a large photo needs.

use crate::{Error, Result};
use std::path::Path;

/// The largest width or height accepted.
const MAX_SIDE: u32 = 1 << 15;
/// The most bytes a decoder may allocate.
const MAX_ALLOC: u64 = 1 << 30;

/// An 8-bit RGB image, rows top to bottom, pixels left to right, `[r, g, b]` each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// An image from its bytes; the length must be `width * height * 3`.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width.checked_mul(height).and_then(|n| n.checked_mul(3)) != Some(data.len()) {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} bytes do not hold a {width}x{height} RGB image",
                    data.len()
                ),
            ));
        }
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// The `[r, g, b]` of pixel (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Decodes PNG or JPEG `bytes` (the format read from the bytes, not a name) to RGB; gray,
/// palette and 16-bit images are converted, an alpha channel dropped. `what` names the
/// source in errors.
pub fn decode_image(bytes: &[u8], what: &str) -> Result<RgbImage> {
    let bad = |msg: String| Error::invalid("image", format!("{what}: {msg}"));
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg) => {}
        Some(other) => {
            return Err(bad(format!(
                "{other:?} images are not supported (PNG and JPEG are)"
            )))
        }
        None => return Err(bad("not a PNG or JPEG image".into())),
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| bad(e.to_string()))?;
    let rgb = decoded.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    if w == 0 || h == 0 {
        return Err(bad("the image is empty".into()));
    }
    RgbImage::new(w, h, rgb.into_raw())
}

/// Reads and decodes the image file at `path` (see [`decode_image`]).
pub fn read_image(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, &path.display().to_string())
}

/// Reads and decodes every file of `paths`, in order; the first that fails is the error.
pub fn read_images(paths: &[std::path::PathBuf]) -> Result<Vec<RgbImage>> {
    paths.iter().map(|p| read_image(p)).collect()
}
