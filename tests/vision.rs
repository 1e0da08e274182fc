//! Images: PNG and JPEG decoding (round trips through the `image` encoders, gray, alpha
//! and 16-bit inputs converted, hostile bytes refused), antialiased bilinear resizing
//! (weights worked out by hand, constant images stay constant), torchvision's center-crop
//! offsets and padding, and the classification preset's sizes and normalisation.

mod common;

use image::ImageEncoder;
use smith::vision::{
    center_crop, decode_image, read_image, resize_bilinear, ClassificationPreset, ImageFolder,
    RgbImage, IMAGENET_MEAN, IMAGENET_STD,
};
use smith::{Device, Rng};

fn main() {
    common::run_suite(vec![
        (
            "png_and_jpeg_decode_to_rgb",
            png_and_jpeg_decode_to_rgb,
            None,
        ),
        (
            "bad_image_bytes_are_errors",
            bad_image_bytes_are_errors,
            None,
        ),
        ("bilinear_resize_weights", bilinear_resize_weights, None),
        (
            "center_crop_like_torchvision",
            center_crop_like_torchvision,
            None,
        ),
        ("classification_preset", classification_preset, None),
        (
            "image_folders_like_torchvision",
            image_folders_like_torchvision,
            None,
        ),
    ]);
}

fn random_image(w: usize, h: usize, rng: &mut Rng) -> RgbImage {
    let data = (0..w * h * 3)
        .map(|_| (rng.uniform() * 256.0) as u8)
        .collect();
    RgbImage::new(w, h, data).unwrap()
}

fn png(data: &[u8], w: u32, h: u32, color: image::ExtendedColorType) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(data, w, h, color)
        .unwrap();
    out
}

fn png_and_jpeg_decode_to_rgb() {
    let mut rng = Rng::new(51);
    let img = random_image(13, 7, &mut rng);
    let bytes = png(&img.data, 13, 7, image::ExtendedColorType::Rgb8);
    assert_eq!(decode_image(&bytes, "rgb.png").unwrap(), img);
    // Gray becomes three equal channels; alpha is dropped.
    let gray: Vec<u8> = (0..20).map(|i| (i * 12) as u8).collect();
    let g = decode_image(&png(&gray, 5, 4, image::ExtendedColorType::L8), "gray.png").unwrap();
    assert_eq!(g.pixel(3, 2), [gray[13]; 3]);
    let rgba: Vec<u8> = img
        .data
        .chunks(3)
        .flat_map(|p| [p[0], p[1], p[2], 7])
        .collect();
    let a = decode_image(
        &png(&rgba, 13, 7, image::ExtendedColorType::Rgba8),
        "rgba.png",
    )
    .unwrap();
    assert_eq!(a, img);
    // 16-bit samples (the encoder takes them native-endian).
    let wide: Vec<u8> = img
        .data
        .iter()
        .flat_map(|&v| (u16::from(v) << 8 | 0x55).to_ne_bytes())
        .collect();
    let w16 = decode_image(
        &png(&wide, 13, 7, image::ExtendedColorType::Rgb16),
        "16.png",
    )
    .unwrap();
    // Scaled to 8 bits with rounding: within one level of the high byte.
    assert!(w16
        .data
        .iter()
        .zip(&img.data)
        .all(|(&a, &b)| (i32::from(a) - i32::from(b)).abs() <= 1));
    // JPEG is lossy: a smooth image comes back close.
    let smooth: Vec<u8> = (0..32 * 16)
        .flat_map(|i| {
            let (x, y) = (i % 32, i / 32);
            [(x * 8) as u8, (y * 16) as u8, 128]
        })
        .collect();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .write_image(&smooth, 32, 16, image::ExtendedColorType::Rgb8)
        .unwrap();
    let j = decode_image(&jpeg, "smooth.jpg").unwrap();
    assert_eq!((j.width, j.height), (32, 16));
    let worst = j
        .data
        .iter()
        .zip(&smooth)
        .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
        .max()
        .unwrap();
    assert!(worst <= 12, "JPEG round trip off by {worst}");
    let dir = std::env::temp_dir().join(format!("smith-vision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.png");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read_image(&path).unwrap(), img);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bad_image_bytes_are_errors() {
    let err = |b: &[u8]| {
        decode_image(b, "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err(b"definitely not an image").contains("not a PNG or JPEG"));
    assert!(err(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").contains("not supported"));
    let mut rng = Rng::new(52);
    let img = random_image(16, 16, &mut rng);
    let bytes = png(&img.data, 16, 16, image::ExtendedColorType::Rgb8);
    assert!(
        !err(&bytes[..bytes.len() / 2]).is_empty(),
        "a truncated PNG"
    );
    let mut corrupt = bytes.clone();
    for b in &mut corrupt[40..60] {
        *b ^= 0x5a;
    }
    assert!(!err(&corrupt).is_empty(), "a corrupted PNG");
    let missing = read_image(std::path::Path::new("/no/such/image.png"));
    assert!(missing
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("/no/such/image.png"));
    assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
}

fn bilinear_resize_weights() {
    // One row [0, 100, 200, 255] to two pixels: the filter spans two input pixels each
    // way, weights 3/7, 3/7, 1/7 and 1/7, 3/7, 3/7.
    let row: Vec<u8> = [0u8, 100, 200, 255].iter().flat_map(|&v| [v; 3]).collect();
    let img = RgbImage::new(4, 1, row).unwrap();
    let half = resize_bilinear(&img, 2, 1).unwrap();
    assert_eq!(half.pixel(0, 0), [71; 3]); // 500 / 7 = 71.4
    assert_eq!(half.pixel(1, 0), [209; 3]); // 1465 / 7 = 209.3
                                            // Doubling [0, 100]: centers at 0.25 and 0.75 of a pixel: 0, 25, 75, 100.
    let pair = RgbImage::new(2, 1, [0u8, 100].iter().flat_map(|&v| [v; 3]).collect()).unwrap();
    let up = resize_bilinear(&pair, 4, 1).unwrap();
    let got: Vec<u8> = (0..4).map(|x| up.pixel(x, 0)[0]).collect();
    assert_eq!(got, [0, 25, 75, 100]);
    // A constant image stays constant at any size; the same size is the identity.
    let flat = RgbImage::new(9, 5, [10u8, 200, 33].repeat(45)).unwrap();
    for (w, h) in [(3, 2), (20, 11), (9, 2), (4, 5)] {
        let r = resize_bilinear(&flat, w, h).unwrap();
        assert!(r.data.chunks(3).all(|p| p == [10, 200, 33]), "{w}x{h}");
    }
    let mut rng = Rng::new(53);
    let img = random_image(6, 4, &mut rng);
    assert_eq!(resize_bilinear(&img, 6, 4).unwrap(), img);
    assert!(resize_bilinear(&img, 0, 4).is_err());
}

fn center_crop_like_torchvision() {
    let mut rng = Rng::new(54);
    let img = random_image(7, 6, &mut rng);
    // Offsets round((7 - 4) / 2) = round(1.5) = 2 and round((6 - 3) / 2) = round(1.5) = 2
    // (halves to even), round((7 - 2) / 2) = round(2.5) = 2.
    let c = center_crop(&img, 4, 3).unwrap();
    assert_eq!(c.pixel(0, 0), img.pixel(2, 2));
    assert_eq!(c.pixel(3, 2), img.pixel(5, 4));
    let c = center_crop(&img, 2, 6).unwrap();
    assert_eq!(c.pixel(0, 0), img.pixel(2, 0));
    // Larger than the image: black padding around it, the extra pixel after.
    let p = center_crop(&img, 10, 6).unwrap();
    assert_eq!(p.pixel(0, 0), [0, 0, 0]);
    assert_eq!(p.pixel(1, 0), img.pixel(0, 0));
    assert_eq!(p.pixel(7, 5), img.pixel(6, 5));
    assert_eq!(p.pixel(8, 5), [0, 0, 0]);
    assert!(center_crop(&img, 0, 3).is_err());
}

fn classification_preset() {
    let preset = ClassificationPreset::default();
    let mut rng = Rng::new(55);
    let wide = random_image(300, 200, &mut rng);
    // The shorter side to 256, the longer int(256 * 300 / 200) = 384.
    assert_eq!(preset.resized_size(&wide), (384, 256));
    let tall = random_image(100, 333, &mut rng);
    assert_eq!(preset.resized_size(&tall), (256, 852));
    let batch = preset.batch(&[wide.clone(), tall], Device::Cpu).unwrap();
    assert_eq!(batch.shape(), [2, 3, 224, 224]);
    // Channel c of pixel (x, y) of the crop is (v / 255 - mean) / std of that pixel.
    let (w, h) = preset.resized_size(&wide);
    let crop = center_crop(&resize_bilinear(&wide, w, h).unwrap(), 224, 224).unwrap();
    let values = batch.narrow(0, 0, 1).unwrap().to_vec::<f32>().unwrap();
    for (c, (mean, std)) in IMAGENET_MEAN.iter().zip(IMAGENET_STD).enumerate() {
        for (x, y) in [(0, 0), (100, 37), (223, 223)] {
            let want = (f32::from(crop.pixel(x, y)[c]) / 255.0 - mean) / std;
            assert_eq!(values[c * 224 * 224 + y * 224 + x], want);
        }
    }
    let zero = ClassificationPreset {
        crop_size: 0,
        ..preset
    };
    assert!(zero.apply(&wide).is_err());
}

fn image_folders_like_torchvision() {
    let root = std::env::temp_dir().join(format!("smith-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut rng = Rng::new(56);
    let img = random_image(4, 4, &mut rng);
    let bytes = png(&img.data, 4, 4, image::ExtendedColorType::Rgb8);
    // Classes sort by name; images sort by path, found recursively; other files skipped.
    for file in [
        "cat/b.png",
        "cat/a.PNG",
        "cat/more/c.jpg",
        "ant/z.png",
        "cat/notes.txt",
    ] {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let f = ImageFolder::open(&root).unwrap();
    assert_eq!(f.classes, ["ant", "cat"]);
    let names: Vec<(String, usize)> = f
        .samples
        .iter()
        .map(|(p, l)| (p.strip_prefix(&root).unwrap().display().to_string(), *l))
        .collect();
    assert_eq!(
        names,
        [
            ("ant/z.png".to_string(), 0),
            ("cat/a.PNG".to_string(), 1),
            ("cat/b.png".to_string(), 1),
            ("cat/more/c.jpg".to_string(), 1),
        ]
    );
    assert_eq!(f.class_counts(), [1, 3]);
    assert_eq!(read_image(&f.samples[0].0).unwrap(), img);
    // A class without images, and a root without classes, are errors naming the folder.
    std::fs::create_dir_all(root.join("dog")).unwrap();
    let e = ImageFolder::open(&root)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("dog") && e.contains("no PNG or JPEG"), "{e}");
    let e = ImageFolder::open(&root.join("ant"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("no class folders"), "{e}");
    assert!(ImageFolder::open(&root.join("missing")).is_err());
    std::fs::remove_dir_all(&root).unwrap();
}
