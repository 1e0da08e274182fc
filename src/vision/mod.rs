//! Images for the vision models: decoding PNG and JPEG files to RGB, and the
//! preprocessing torchvision's classification weights expect (resize of the shorter side
//! with antialiased bilinear filtering, center crop, scaling to [0, 1], normalisation),
//! batched into `[N, 3, H, W]` tensors; labelled images in torchvision's `ImageFolder`
//! layout.

mod decode;
mod folder;
mod resize;
mod transforms;

pub use decode::{decode_image, read_image, RgbImage};
pub use folder::ImageFolder;
pub use resize::resize_bilinear;
pub use transforms::{center_crop, ClassificationPreset, IMAGENET_MEAN, IMAGENET_STD};
