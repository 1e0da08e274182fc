//! Images for the vision models: decoding PNG and JPEG files to RGB, and the
//! preprocessing torchvision's classification weights expect (resize of the shorter side
//! with antialiased bilinear filtering, center crop, scaling to [0, 1], normalisation),
//! batched into `[N, 3, H, W]` tensors; CLIP's preprocessing (bicubic); labelled images in torchvision's `ImageFolder`
//! layout.

mod clip_preprocess;
mod decode;
mod folder;
mod resize;
mod transforms;

pub use clip_preprocess::{ClipPreprocess, CLIP_MEAN, CLIP_STD};
pub use decode::{decode_image, read_image, read_images, RgbImage};
pub use folder::ImageFolder;
pub use resize::{resize, resize_bilinear, ResizeFilter};
pub use transforms::{center_crop, ClassificationPreset, IMAGENET_MEAN, IMAGENET_STD};
