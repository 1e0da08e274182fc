//! Optimizers and clipping: multi-tensor AdamW, SGD with momentum, gradient-norm clipping.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::devices::*;
use smith::optim::{clip_grad_norm, AdamW, AdamWConfig};
use smith::{DType, Device, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "multi_tensor_adamw_matches_the_cpu",
            multi_tensor_adamw_matches_the_cpu,
            needs_gpu(),
        ),
        ("sgd_matches_the_cpu", sgd_matches_the_cpu, needs_gpu()),
        (
            "clipping_matches_the_cpu",
            clipping_matches_the_cpu,
            needs_gpu(),
        ),
    ]);
}

/// Multi-tensor AdamW against the CPU loop: more tensors than one launch carries (24), a
/// tensor longer than one launch's 320 chunks, lengths that are not multiples of 4, a
/// transposed gradient, a half-precision gradient, a parameter without a gradient, and
/// a parameter that is a view at an offset.
fn multi_tensor_adamw_matches_the_cpu() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(11);
    let mut shapes: Vec<Vec<usize>> = (0..30).map(|i| vec![1 + 37 * i]).collect();
    shapes.push(vec![320 * 65536 + 70_001]);
    shapes.push(vec![65536 * 2 + 3]);
    shapes.push(vec![33, 65]);
    let inits: Vec<Tensor> = shapes.iter().map(|s| randn(s, &mut rng)).collect();
    let grad_values: Vec<Tensor> = shapes.iter().map(|s| randn(s, &mut rng)).collect();
    let run = |device: Device| -> Vec<Vec<f64>> {
        // The last parameter is a view at an offset into a larger buffer.
        let backing = Tensor::zeros(&[2, 33, 65], DType::F32, device).unwrap();
        let params: Vec<smith::nn::Param> = inits
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let tensor = if i + 1 == inits.len() {
                    let view = backing.narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
                    view.assign(&v.to_device(device).unwrap()).unwrap();
                    view
                } else {
                    // A fresh copy: on the CPU, to_device would share `inits`' storage.
                    v.copy().unwrap().to_device(device).unwrap()
                };
                smith::nn::Param {
                    name: format!("p{i}"),
                    tensor: tensor.requires_grad().unwrap(),
                    decay: i % 2 == 0,
                }
            })
            .collect();
        let mut opt = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
        for step in 0..3 {
            let mut grads = smith::GradStore::new();
            for (i, (p, g)) in params.iter().zip(&grad_values).enumerate() {
                let g = g.affine(1.0 + step as f64, 0.1).unwrap();
                let g = match i {
                    5 => continue,
                    7 => g.to_dtype(DType::F16).unwrap(),
                    i if i + 1 == params.len() => g.t().unwrap().contiguous().unwrap().t().unwrap(),
                    _ => g,
                };
                grads.insert(&p.tensor, g.to_device(device).unwrap());
            }
            opt.step(&grads, 1e-2).unwrap();
        }
        params
            .iter()
            .map(|p| p.tensor.to_vec_f64().unwrap())
            .collect()
    };
    let (want, got) = (run(Device::Cpu), run(dev));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = rel_err(g, w);
        assert!(err < 1e-6, "parameter {i}: relative error {err:e}");
    }
    eprintln!("multi-tensor AdamW: {} parameters match the CPU", got.len());
}
/// SGD with momentum and weight decay on the GPU follows the CPU.
fn sgd_matches_the_cpu() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(13);
    let inits: Vec<Tensor> = [vec![40, 30], vec![30]]
        .iter()
        .map(|s| randn(s, &mut rng))
        .collect();
    let grad_values: Vec<Tensor> = inits.iter().map(|t| randn(t.shape(), &mut rng)).collect();
    let run = |device: Device| -> Vec<Vec<f64>> {
        let params: Vec<smith::nn::Param> = inits
            .iter()
            .enumerate()
            .map(|(i, v)| smith::nn::Param {
                name: format!("p{i}"),
                tensor: v
                    .copy()
                    .unwrap()
                    .to_device(device)
                    .unwrap()
                    .requires_grad()
                    .unwrap(),
                decay: i == 0,
            })
            .collect();
        let mut opt = smith::optim::Sgd::new(params.clone(), 0.9, 0.01);
        for step in 0..3 {
            let mut grads = smith::GradStore::new();
            for (p, g) in params.iter().zip(&grad_values) {
                let g = g.affine(1.0 + step as f64, 0.0).unwrap();
                grads.insert(&p.tensor, g.to_device(device).unwrap());
            }
            opt.step(&grads, 0.1).unwrap();
        }
        params
            .iter()
            .map(|p| p.tensor.to_vec_f64().unwrap())
            .collect()
    };
    let (want, got) = (run(Device::Cpu), run(dev));
    for (g, w) in got.iter().zip(&want) {
        let err = rel_err(g, w);
        assert!(err < 1e-6, "SGD on the GPU: relative error {err:e}");
    }
}
fn clipping_matches_the_cpu() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(10);
    let values: Vec<Tensor> = [vec![300, 70], vec![70], vec![5, 5, 5]]
        .iter()
        .map(|s| randn(s, &mut rng))
        .collect();
    let run = |device: Device| -> (f64, Vec<Vec<f64>>) {
        let params: Vec<smith::nn::Param> = values
            .iter()
            .enumerate()
            .map(|(i, v)| smith::nn::Param {
                name: format!("p{i}"),
                tensor: Tensor::zeros(v.shape(), DType::F32, device)
                    .unwrap()
                    .requires_grad()
                    .unwrap(),
                decay: false,
            })
            .collect();
        let mut grads = smith::GradStore::new();
        for (p, v) in params.iter().zip(&values) {
            grads.insert(&p.tensor, v.to_device(device).unwrap());
        }
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        (
            norm,
            params
                .iter()
                .map(|p| grads.get(&p.tensor).unwrap().to_vec_f64().unwrap())
                .collect(),
        )
    };
    let ((n_cpu, g_cpu), (n_gpu, g_gpu)) = (run(Device::Cpu), run(dev));
    assert!((n_cpu - n_gpu).abs() / n_cpu < 1e-6, "{n_cpu} vs {n_gpu}");
    for (a, b) in g_gpu.iter().zip(&g_cpu) {
        assert!(rel_err(a, b) < 1e-6);
    }
}
