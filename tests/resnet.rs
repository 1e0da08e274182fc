//! ResNet in torchvision's layout: parameter counts and state-dict names of all five
//! depths, forward shapes in both modes, gradients for every parameter, running statistics
//! that move in training only, a safetensors round trip of the state dict, and load errors
//! that name the tensor.

mod common;

use smith::io::{load_safetensors, save_safetensors};
use smith::models::{ResNet, ResNetConfig};
use smith::{DType, Device, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "parameter_counts_and_names_are_torchvisions",
            parameter_counts_and_names_are_torchvisions,
            None,
        ),
        (
            "forward_backward_and_running_statistics",
            forward_backward_and_running_statistics,
            None,
        ),
        (
            "state_dicts_round_trip_through_safetensors",
            state_dicts_round_trip_through_safetensors,
            None,
        ),
        (
            "bad_state_dicts_and_images_are_errors",
            bad_state_dicts_and_images_are_errors,
            None,
        ),
    ]);
}

fn images(n: usize, size: usize, rng: &mut Rng) -> Tensor {
    Tensor::randn(&[n, 3, size, size], 0.0, 1.0, DType::F32, Device::Cpu, rng).unwrap()
}

fn parameter_counts_and_names_are_torchvisions() {
    // torchvision's figures: sum(p.numel() for p in model.parameters()), len(state_dict()).
    for (name, params, keys) in [
        ("resnet18", 11_689_512, 122),
        ("resnet34", 21_797_672, 218),
        ("resnet50", 25_557_032, 320),
        ("resnet101", 44_549_160, 626),
        ("resnet152", 60_192_808, 932),
    ] {
        let model = ResNet::new(
            ResNetConfig::named(name).unwrap(),
            &mut Rng::new(1),
            Device::Cpu,
        )
        .unwrap();
        let count: usize = model
            .params()
            .unwrap()
            .iter()
            .map(|p| p.tensor.numel())
            .sum();
        assert_eq!(count, params, "{name} parameters");
        assert_eq!(model.state_dict().unwrap().len(), keys, "{name} state dict");
    }
    let r18 = ResNet::new(ResNetConfig::resnet18(), &mut Rng::new(1), Device::Cpu).unwrap();
    let sd = r18.state_dict().unwrap();
    for (key, shape) in [
        ("conv1.weight", vec![64, 3, 7, 7]),
        ("bn1.running_var", vec![64]),
        ("layer1.0.conv2.weight", vec![64, 64, 3, 3]),
        ("layer2.0.downsample.0.weight", vec![128, 64, 1, 1]),
        ("layer2.0.downsample.1.running_mean", vec![128]),
        ("layer4.1.bn2.num_batches_tracked", vec![]),
        ("fc.weight", vec![1000, 512]),
    ] {
        assert_eq!(
            sd.get(key).map(|t| t.shape().to_vec()),
            Some(shape),
            "{key}"
        );
    }
    let r50 = ResNet::new(ResNetConfig::resnet50(), &mut Rng::new(1), Device::Cpu).unwrap();
    let sd = r50.state_dict().unwrap();
    // v1.5: the stride sits on the 3x3 convolution, so its weight is the bottleneck's.
    for (key, shape) in [
        ("layer1.0.conv3.weight", vec![256, 64, 1, 1]),
        ("layer1.0.downsample.0.weight", vec![256, 64, 1, 1]),
        ("layer2.0.conv2.weight", vec![128, 128, 3, 3]),
        ("layer4.2.bn3.weight", vec![2048]),
        ("fc.weight", vec![1000, 2048]),
    ] {
        assert_eq!(
            sd.get(key).map(|t| t.shape().to_vec()),
            Some(shape),
            "{key}"
        );
    }
    // Weight decay on convolution and classifier weights only.
    for p in r50.params().unwrap() {
        assert_eq!(
            p.decay,
            p.name.ends_with("weight")
                && !p.name.contains("bn")
                && !p.name.contains("downsample.1"),
            "{}",
            p.name
        );
    }
}

fn small_config() -> ResNetConfig {
    ResNetConfig {
        num_classes: 10,
        ..ResNetConfig::resnet18()
    }
}

fn forward_backward_and_running_statistics() {
    let mut rng = Rng::new(2);
    let mut model = ResNet::new(small_config(), &mut rng, Device::Cpu).unwrap();
    let x = images(2, 32, &mut rng);
    let before = model.state_dict().unwrap()["bn1.running_mean"]
        .to_vec_f64()
        .unwrap();
    let eval = model.forward(&x, false).unwrap();
    assert_eq!(eval.shape(), [2, 10]);
    assert_eq!(
        model.state_dict().unwrap()["bn1.running_mean"]
            .to_vec_f64()
            .unwrap(),
        before,
        "eval leaves the statistics"
    );
    assert_eq!(
        model.forward(&x, false).unwrap().to_vec_f64().unwrap(),
        eval.to_vec_f64().unwrap()
    );
    let logits = model.forward(&x, true).unwrap();
    let after = model.state_dict().unwrap()["bn1.running_mean"]
        .to_vec_f64()
        .unwrap();
    assert_ne!(after, before, "training moves the statistics");
    let targets = Tensor::from_vec(vec![3i64, 7], &[2], Device::Cpu).unwrap();
    let grads = logits
        .cross_entropy(&targets, -100)
        .unwrap()
        .backward()
        .unwrap();
    for p in model.params().unwrap() {
        let g = grads
            .get(&p.tensor)
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        assert!(
            g.to_vec_f64().unwrap().iter().all(|v| v.is_finite()),
            "{}",
            p.name
        );
    }
    // zero_init_residual zeroes each block's last batch-norm scale.
    let zero = ResNet::new(
        ResNetConfig {
            zero_init_residual: true,
            ..small_config()
        },
        &mut rng,
        Device::Cpu,
    )
    .unwrap();
    let sd = zero.state_dict().unwrap();
    assert!(sd["layer3.1.bn2.weight"]
        .to_vec_f64()
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));
    assert!(sd["layer3.1.bn1.weight"]
        .to_vec_f64()
        .unwrap()
        .iter()
        .all(|&v| v == 1.0));
}

fn state_dicts_round_trip_through_safetensors() {
    let mut rng = Rng::new(3);
    let mut model = ResNet::new(small_config(), &mut rng, Device::Cpu).unwrap();
    let x = images(2, 32, &mut rng);
    model.forward(&x, true).unwrap();
    let want = model.forward(&x, false).unwrap().to_vec_f64().unwrap();
    let dir = std::env::temp_dir().join(format!("smith-resnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet.safetensors");
    let mut tensors: Vec<(String, Tensor)> = model.state_dict().unwrap().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save_safetensors(&path, &tensors).unwrap();
    let mut fresh = ResNet::new(small_config(), &mut Rng::new(99), Device::Cpu).unwrap();
    assert_ne!(
        fresh.forward(&x, false).unwrap().to_vec_f64().unwrap(),
        want
    );
    fresh
        .load_state_dict(&load_safetensors(&path).unwrap())
        .unwrap();
    assert_eq!(
        fresh.forward(&x, false).unwrap().to_vec_f64().unwrap(),
        want
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bad_state_dicts_and_images_are_errors() {
    let mut rng = Rng::new(4);
    let mut model = ResNet::new(small_config(), &mut rng, Device::Cpu).unwrap();
    let good = model.state_dict().unwrap();
    let err = |model: &mut ResNet, sd: &std::collections::HashMap<String, Tensor>| {
        model
            .load_state_dict(sd)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut missing = good.clone();
    missing.remove("layer2.1.bn1.running_var");
    assert!(err(&mut model, &missing).contains("layer2.1.bn1.running_var"));
    let mut extra = good.clone();
    extra.insert(
        "layer5.0.conv1.weight".into(),
        Tensor::zeros(&[1], DType::F32, Device::Cpu).unwrap(),
    );
    assert!(err(&mut model, &extra).contains("layer5.0.conv1.weight"));
    let mut wrong = good.clone();
    wrong.insert(
        "fc.weight".into(),
        Tensor::zeros(&[1000, 512], DType::F32, Device::Cpu).unwrap(),
    );
    assert!(err(&mut model, &wrong).contains("fc.weight"));
    let gray = Tensor::zeros(&[1, 1, 32, 32], DType::F32, Device::Cpu).unwrap();
    let e = model
        .forward(&gray, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("[N, 3, H, W]"), "{e}");
    assert!(ResNetConfig::named("resnet19").is_err());
}
