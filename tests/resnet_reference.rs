//! ResNet against torchvision (fixtures from tools/make_resnet_fixtures.py, run in f32 on
//! the CPU with torchvision 0.26): eval-mode logits of ResNet-18 and ResNet-50 on four real
//! photos, 20 SGD steps of ResNet-18 in training mode, a small ResNet loaded whole from a
//! `.pth` and from safetensors, and torchvision's resize + center crop of the photos.
//!
//! The ImageNet ResNets' parameters follow a deterministic scheme both sides compute
//! (below); their batch-norm buffers, moved by three training-mode passes in PyTorch, are
//! in the fixtures. The photos come from tools/fetch_photos.sh (scikit-image's wheel).

mod common;

use common::devices::*;
use common::{photo_dir, photos_missing};
use smith::io::{load_pth, load_safetensors};
use smith::models::{ResNet, ResNetConfig, Stem};
use smith::optim::Sgd;
use smith::vision::{
    center_crop, read_image, resize_bilinear, ClassificationPreset, IMAGENET_MEAN, IMAGENET_STD,
};
use smith::{Device, Rng, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn main() {
    let photos = photos_missing();
    common::run_suite(vec![
        ("resnet18_logits_match_torchvision", resnet18_logits, None),
        ("resnet50_logits_match_torchvision", resnet50_logits, None),
        ("resnet18_sgd_steps_track_pytorch", resnet18_sgd_steps, None),
        ("twenty_sgd_steps_match_pytorch", twenty_sgd_steps, None),
        ("small_resnet_from_pth_and_safetensors", small_resnet, None),
        (
            "preprocessing_matches_torchvision",
            preprocessing,
            photos.clone(),
        ),
        ("smith_classify_prints_top_classes", smith_classify, photos),
    ]);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vision")
        .join(name)
}

fn fnv1a32(name: &str) -> u32 {
    name.bytes().fold(0x811C_9DC5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// u[i] in [-1, 1): the murmur3 finaliser of `i * 0x9E3779B1 + fnv1a32(name)`, top 24 bits.
fn uniform(name: &str, n: usize) -> Vec<f32> {
    let salt = fnv1a32(name);
    (0..n as u32)
        .map(|i| {
            let mut h = i.wrapping_mul(0x9E37_79B1).wrapping_add(salt);
            h ^= h >> 16;
            h = h.wrapping_mul(0x85EB_CA6B);
            h ^= h >> 13;
            h = h.wrapping_mul(0xC2B2_AE35);
            h ^= h >> 16;
            (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// The deterministic parameters of `model` (see the module docs and the fixture script).
fn deterministic_params(model: &ResNet) -> HashMap<String, Tensor> {
    let params = model.params().unwrap();
    let fan_in = params
        .iter()
        .find(|p| p.name == "fc.weight")
        .map(|p| p.tensor.shape()[1])
        .unwrap();
    params
        .iter()
        .map(|p| {
            let shape = p.tensor.shape().to_vec();
            let u = uniform(&p.name, p.tensor.numel());
            let v: Vec<f32> = if shape.len() == 4 {
                let fan_out = shape[0] * shape[2] * shape[3];
                let s = (3f64.sqrt() * (2.0 / fan_out as f64).sqrt()) as f32;
                u.iter().map(|x| x * s).collect()
            } else if p.name.starts_with("fc.") {
                let s = (1.0 / (fan_in as f64).sqrt()) as f32;
                u.iter().map(|x| x * s).collect()
            } else if p.name.ends_with("weight") {
                u.iter().map(|x| x * 0.25 + 1.0).collect()
            } else {
                u.iter().map(|x| x * 0.1).collect()
            };
            (
                p.name.clone(),
                Tensor::from_vec(v, &shape, Device::Cpu).unwrap(),
            )
        })
        .collect()
}

/// A torchvision ResNet with the deterministic parameters and the fixture's buffers.
fn reference_model(name: &str, reference: &HashMap<String, Tensor>, device: Device) -> ResNet {
    let mut model =
        ResNet::new(ResNetConfig::named(name).unwrap(), &mut Rng::new(0), device).unwrap();
    let mut state = deterministic_params(&model);
    for (k, v) in reference {
        if k.contains("running_") || k.contains("num_batches_tracked") {
            state.insert(k.clone(), v.clone());
        }
    }
    model.load_state_dict(&state).unwrap();
    model
}

/// The normalised crops `[4, 3, 224, 224]`, as ToTensor + Normalize compute them in f32.
fn normalised_crops() -> Tensor {
    let photos = load_safetensors(&fixture("photos_224.safetensors")).unwrap();
    let crops = photos["crops"].to_vec_f64().unwrap();
    let (n, h, w) = (4, 224, 224);
    let mut x = vec![0f32; n * 3 * h * w];
    for b in 0..n {
        for c in 0..3 {
            for i in 0..h * w {
                let v = crops[(b * h * w + i) * 3 + c] as f32 / 255.0;
                x[(b * 3 + c) * h * w + i] = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
    }
    Tensor::from_vec(x, &[n, 3, h, w], Device::Cpu).unwrap()
}

/// Every device present: the CPU, and the GPU with TF32 off (f32 products in f32).
fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    if needs_gpu().is_none() {
        d.push(Device::Cuda(0));
    }
    d
}

fn logits_match(name: &str) {
    let reference = load_safetensors(&fixture(&format!("{name}_reference.safetensors"))).unwrap();
    let want = reference["logits"].to_vec_f64().unwrap();
    let x = normalised_crops();
    for device in devices() {
        let _exact = exact_f32();
        let mut model = reference_model(name, &reference, device);
        let got = model
            .forward(&x.to_device(device).unwrap(), false)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let err = rel_err(&got, &want);
        eprintln!("{name} on {device:?}: relative error {err:.2e}");
        assert!(
            err < 1e-4,
            "{name} logits on {device:?}: relative error {err}"
        );
        // The same top-5 classes for every photo.
        for (g, w) in got.chunks(1000).zip(want.chunks(1000)) {
            let top = |v: &[f64]| {
                let mut i: Vec<usize> = (0..v.len()).collect();
                i.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
                i.truncate(5);
                i
            };
            assert_eq!(top(g), top(w), "{name} on {device:?}");
        }
    }
}

fn resnet18_logits() {
    logits_match("resnet18");
}

fn resnet50_logits() {
    logits_match("resnet50");
}

/// ResNet-18 with the deterministic weights, trained on four photos: the first step
/// matches PyTorch to 1e-5; later steps drift by up to a few percent, because this batch is
/// ill-conditioned (float rounding flips ReLU masks in near-constant channels of the
/// four-image batch norms: smith's own f32 and f64 gradients differ by 2% in
/// `layer3.1.conv1.weight`; on a GPU, whose reductions are not ordered, the drift differs
/// from run to run and reached 3.5% by step 18), so the 20-step match is checked on the
/// small ResNet below.
fn resnet18_sgd_steps() {
    let reference = load_safetensors(&fixture("resnet18_reference.safetensors")).unwrap();
    let want = reference["train_losses"].to_vec_f64().unwrap();
    let labels = reference["train_labels"].clone();
    let batch = normalised_crops()
        .narrow(2, 64, 96)
        .unwrap()
        .narrow(3, 64, 96)
        .unwrap()
        .contiguous()
        .unwrap();
    for device in devices() {
        let _exact = exact_f32();
        let mut model = reference_model("resnet18", &reference, device);
        let mut opt = Sgd::new(model.params().unwrap(), 0.9, 1e-4);
        let x = batch.to_device(device).unwrap();
        let y = labels.to_device(device).unwrap();
        let got = sgd_losses(&mut model, &mut opt, 1e-4, |_| (x.clone(), y.clone()));
        assert_losses(&got, &want, &[(0, 1e-6), (1, 1e-5), (19, 5e-2)], device);
    }
}

/// The losses of `steps.len()` SGD steps in training mode on the batches `batch(step)`.
fn sgd_losses(
    model: &mut ResNet,
    opt: &mut Sgd,
    lr: f64,
    batch: impl Fn(usize) -> (Tensor, Tensor),
) -> Vec<f64> {
    (0..20)
        .map(|step| {
            let (x, y) = batch(step);
            let loss = model
                .forward(&x, true)
                .unwrap()
                .cross_entropy(&y, -100)
                .unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads, lr).unwrap();
            loss.to_vec_f64().unwrap()[0]
        })
        .collect()
}

/// Each loss within the tolerance of the first bound whose step is at least its own.
fn assert_losses(got: &[f64], want: &[f64], bounds: &[(usize, f64)], device: Device) {
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = bounds.iter().find(|(s, _)| *s >= step).map_or(0.0, |b| b.1);
        let err = (g - w).abs() / w.abs();
        assert!(
            err < tol,
            "step {step} on {device:?}: loss {g} against PyTorch's {w} (relative {err:.2e}, tolerance {tol:.0e})\n{got:?}\n{want:?}"
        );
    }
}

/// A batch of the deterministic scheme: 16 inputs `u * sqrt(3)`, labels `floor((u + 1) * 5)`.
fn small_batch(step: usize, device: Device) -> (Tensor, Tensor) {
    let s = 3f32.sqrt();
    let x: Vec<f32> = uniform(&format!("train_input.{step}"), 16 * 3 * 32 * 32)
        .iter()
        .map(|u| u * s)
        .collect();
    let y: Vec<i64> = uniform(&format!("train_labels.{step}"), 16)
        .iter()
        .map(|u| ((u + 1.0) * 5.0).floor() as i64)
        .collect();
    (
        Tensor::from_vec(x, &[16, 3, 32, 32], device).unwrap(),
        Tensor::from_vec(y, &[16], device).unwrap(),
    )
}

/// The small ResNet from PyTorch's own initialisation: 20 SGD steps, a new batch each.
/// The first ten losses match PyTorch's within 1e-5 (they agree to ~1e-7). From step 10
/// the trajectory itself is sensitive: smith in f64 against PyTorch in f32 agrees to 1e-8
/// at step 10 and drifts to 1.2e-4 by step 13, so f32 rounding on either side grows
/// there; the later steps are held to 1e-2.
fn twenty_sgd_steps() {
    let pth = load_pth(&fixture("resnet_small.pth")).unwrap().state_dict();
    let io = load_safetensors(&fixture("resnet_small_logits.safetensors")).unwrap();
    let want = io["train_losses"].to_vec_f64().unwrap();
    for device in devices() {
        let _exact = exact_f32();
        let mut model = ResNet::new(small_config(), &mut Rng::new(0), device).unwrap();
        model.load_state_dict(&pth).unwrap();
        let mut opt = Sgd::new(model.params().unwrap(), 0.9, 5e-4);
        let got = sgd_losses(&mut model, &mut opt, 0.05, |step| small_batch(step, device));
        assert_losses(&got, &want, &[(9, 1e-5), (19, 1e-2)], device);
    }
}

/// The fixture's small ResNet: the 3×3 stem, one basic block per stage, widths 8 to 64.
fn small_config() -> ResNetConfig {
    ResNetConfig {
        widths: [8, 16, 32, 64],
        ..ResNetConfig::small(10)
    }
}

fn small_resnet() {
    let pth = load_pth(&fixture("resnet_small.pth")).unwrap().state_dict();
    let st = load_safetensors(&fixture("resnet_small.safetensors")).unwrap();
    assert_eq!(pth.len(), st.len());
    for (k, v) in &st {
        assert_eq!(pth[k].to_vec_f64().unwrap(), v.to_vec_f64().unwrap(), "{k}");
    }
    let io = load_safetensors(&fixture("resnet_small_logits.safetensors")).unwrap();
    let cfg = small_config();
    assert_eq!(cfg.stem, Stem::Small);
    for device in devices() {
        let _exact = exact_f32();
        let mut model = ResNet::new(cfg, &mut Rng::new(0), device).unwrap();
        model.load_state_dict(&pth).unwrap();
        let got = model
            .forward(&io["input"].to_device(device).unwrap(), false)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let err = rel_err(&got, &io["logits"].to_vec_f64().unwrap());
        assert!(
            err < 1e-5,
            "small ResNet on {device:?}: relative error {err}"
        );
    }
}

fn preprocessing() {
    let photos = load_safetensors(&fixture("photos_224.safetensors")).unwrap();
    let crops = photos["crops"].to_vec_f64().unwrap();
    let resized = photos["resized"].to_vec_f64().unwrap();
    let names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"];
    for (i, name) in names.iter().enumerate() {
        let img = read_image(&photo_dir().join(name)).unwrap();
        let (h, w) = (resized[2 * i] as usize, resized[2 * i + 1] as usize);
        assert_eq!(
            ClassificationPreset::default().resized_size(&img),
            (w, h),
            "{name}"
        );
        let r = resize_bilinear(&img, w, h).unwrap();
        let c = center_crop(&r, 224, 224).unwrap();
        let want = &crops[i * 224 * 224 * 3..(i + 1) * 224 * 224 * 3];
        let diffs: Vec<f64> = c
            .data
            .iter()
            .zip(want)
            .map(|(&a, &b)| (f64::from(a) - b).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f64::max);
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        eprintln!("{name}: resized to {w}x{h}, max difference {max} levels, mean {mean:.4}");
        // PNG decoding is exact; Pillow's fixed-point resampling can round a pixel one
        // level the other way; JPEG decoders differ by a few levels (IDCT rounding).
        let (max_ok, mean_ok) = if name.ends_with(".png") {
            (1.0, 0.01)
        } else {
            (8.0, 0.5)
        };
        assert!(
            max <= max_ok && mean <= mean_ok,
            "{name}: max {max}, mean {mean}"
        );
    }
}

/// The `smith` binary under test (`SMITH_BIN` when the tests run apart from their build).
fn smith_bin() -> PathBuf {
    std::env::var_os("SMITH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_smith").into())
}

fn smith_classify() {
    let model = fixture("resnet_small.pth");
    let images = [
        photo_dir().join("chelsea.png"),
        photo_dir().join("rocket.jpg"),
    ];
    let labels = std::env::temp_dir().join(format!("smith_labels_{}.txt", std::process::id()));
    let names: Vec<String> = (0..10).map(|i| format!("digit-{i}")).collect();
    std::fs::write(&labels, names.join("\n")).unwrap();
    let out = std::process::Command::new(smith_bin())
        .args(["classify", "--device", "cpu", "--top-k", "3", "--model"])
        .arg(&model)
        .arg("--labels")
        .arg(&labels)
        .arg("--image")
        .args(&images)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The library on the same images: the CLI prints its top classes, in order.
    let mut classifier = smith::infer::Classifier::load(&model, Device::Cpu).unwrap();
    let decoded: Vec<_> = images.iter().map(|p| read_image(p).unwrap()).collect();
    let want = classifier.classify(&decoded, 3).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{stdout}");
    for (i, preds) in want.iter().enumerate() {
        assert!(lines[i * 4].ends_with(images[i].file_name().unwrap().to_str().unwrap()));
        for (r, p) in preds.iter().enumerate() {
            let line = lines[i * 4 + 1 + r];
            assert!(line.contains(&format!("digit-{}", p.class)), "{line}");
            assert!(
                line.contains(&format!("{:.2}%", 100.0 * p.probability)),
                "{line}"
            );
        }
        assert!(preds
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability));
    }
    // A labels file of the wrong length is an error naming it.
    std::fs::write(&labels, "a\nb\n").unwrap();
    let out = std::process::Command::new(smith_bin())
        .args(["classify", "--device", "cpu", "--model"])
        .arg(&model)
        .arg("--labels")
        .arg(&labels)
        .arg("--image")
        .arg(&images[0])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("2 labels") && stderr.contains("10 classes"),
        "{stderr}"
    );
    std::fs::remove_file(&labels).ok();
}
