//! Devices as a whole: mixing devices, the profiler and memory accounting, the buffer pool, gradients of a function using every op, GPT training, and pretrained models on the GPU against transformers.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::devices::*;
use smith::backend::cuda;
use smith::models::{Gpt, GptConfig};
use smith::optim::{clip_grad_norm, AdamW, AdamWConfig};
use smith::{DType, Device, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "mixing_devices_is_an_error",
            mixing_devices_is_an_error,
            needs_gpu(),
        ),
        (
            "profiler_and_memory_accounting",
            profiler_and_memory_accounting,
            needs_gpu(),
        ),
        (
            "released_buffers_are_reused_and_never_stale",
            released_buffers_are_reused_and_never_stale,
            needs_gpu(),
        ),
        (
            "gradients_match_the_cpu",
            gradients_match_the_cpu,
            needs_gpu(),
        ),
        (
            "gpt_training_on_the_gpu_follows_the_cpu",
            gpt_training_on_the_gpu_follows_the_cpu,
            needs_gpu(),
        ),
        (
            "hf_gpt2_on_the_gpu_matches_transformers",
            hf_gpt2_on_the_gpu_matches_transformers,
            needs_gpu(),
        ),
        (
            "gguf_models_on_the_gpu_match_transformers",
            gguf_models_on_the_gpu_match_transformers,
            needs_gpu(),
        ),
    ]);
}

fn mixing_devices_is_an_error() {
    let (dev, _gpu) = require_gpu();
    let cpu = Tensor::zeros(&[2], DType::F32, Device::Cpu).unwrap();
    let err = cpu
        .add(&Tensor::zeros(&[2], DType::F32, dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("device"), "{err}");
}
fn profiler_and_memory_accounting() {
    let (dev, _gpu) = require_gpu();
    let (before, _) = dev.memory_stats().unwrap().unwrap();
    let x = Tensor::ones(&[1 << 20], DType::F32, dev).unwrap();
    let (during, peak) = dev.memory_stats().unwrap().unwrap();
    assert!(
        during >= before + (4 << 20) && peak >= during,
        "{before} {during} {peak}"
    );
    {
        let _profile = smith::profile::scope();
        let _ = smith::profile::take_report().unwrap();
        for _ in 0..3 {
            x.gelu().unwrap().softmax(0).unwrap();
        }
        x.reshape(&[1024, 1024])
            .unwrap()
            .matmul(&x.reshape(&[1024, 1024]).unwrap())
            .unwrap();
        let report = smith::profile::take_report().unwrap();
        let names: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
        assert!(
            names.contains(&"unary_vec_f32") && names.contains(&"cublas_gemm_f32"),
            "{names:?}"
        );
        let gelu = report
            .kernels
            .iter()
            .find(|k| k.name == "unary_vec_f32")
            .unwrap();
        assert_eq!(gelu.calls, 3);
        assert!(report.total_ms() > 0.0);
        let path = std::env::temp_dir().join(format!("smith-trace-{}.json", std::process::id()));
        report.write_chrome_trace(&path).unwrap();
        let trace: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(trace["traceEvents"].as_array().unwrap().len() >= 5);
        let _ = std::fs::remove_file(path);
        eprintln!("{}", report.table(10));
    }
    drop(x);
    let (after, _) = dev.memory_stats().unwrap().unwrap();
    assert!(after < during, "{after} {during}");
}
fn released_buffers_are_reused_and_never_stale() {
    let (dev, _gpu) = require_gpu();
    let handle = cuda::device(0).unwrap();
    handle.release_cached();
    let a = Tensor::full(3.0, &[1000, 1000], DType::F32, dev).unwrap();
    drop(a);
    let cached = handle.cached_bytes();
    assert!(cached >= 4_000_000, "{cached}");
    // Same size class: served from the pool, and fully rewritten.
    let z = Tensor::zeros(&[1000, 1000], DType::F32, dev).unwrap();
    assert!(handle.cached_bytes() < cached);
    assert!(z.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
    let x = Tensor::arange(1_000_000, DType::F32, Device::Cpu).unwrap();
    drop(z);
    let y = x
        .to_device(dev)
        .unwrap()
        .affine(2.0, 1.0)
        .unwrap()
        .affine(0.5, -0.5)
        .unwrap();
    let back = y.to_vec::<f32>().unwrap();
    assert!(back
        .iter()
        .enumerate()
        .all(|(i, &v)| (v - i as f32).abs() <= 1e-3 * (i as f32).max(1.0)));
    handle.release_cached();
    assert_eq!(handle.cached_bytes(), 0);
}
/// A function that uses every differentiable op the GPU has; its gradients on both devices.
fn composite_grads(dev: Device) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(7);
    let emb = randn(&[50, 32], &mut rng)
        .to_device(dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let w = randn(&[32, 32], &mut rng)
        .affine(0.2, 0.0)
        .unwrap()
        .to_device(dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let gain = randn(&[32], &mut rng)
        .to_device(dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let ids = Tensor::from_vec(
        (0..24).map(|i| (i * 7 % 50) as i64).collect::<Vec<_>>(),
        &[2, 12],
        dev,
    )
    .unwrap();
    let targets = Tensor::from_vec(
        (0..24).map(|i| (i * 3 % 50) as i64).collect::<Vec<_>>(),
        &[2, 12],
        dev,
    )
    .unwrap();
    let x = Tensor::embedding(&ids, &emb).unwrap();
    let h = x
        .layer_norm(Some(&gain), None, 1e-5)
        .unwrap()
        .matmul(&w)
        .unwrap()
        .gelu()
        .unwrap();
    let att = h
        .matmul(&h.transpose(1, 2).unwrap())
        .unwrap()
        .mul_scalar(0.1)
        .unwrap()
        .softmax_causal()
        .unwrap();
    let y = att
        .matmul(&h)
        .unwrap()
        .add(&x)
        .unwrap()
        .rms_norm(None, 1e-6)
        .unwrap();
    let parts = y.split(&[16, 16], 2).unwrap();
    let y = Tensor::cat(&[parts[1].clone(), parts[0].exp().unwrap()], 2).unwrap();
    let logits = y.matmul(&emb.t().unwrap()).unwrap();
    let loss = logits
        .cross_entropy(&targets, -100)
        .unwrap()
        .add(
            &logits
                .max(2, false)
                .unwrap()
                .mean_all()
                .unwrap()
                .mul_scalar(0.01)
                .unwrap(),
        )
        .unwrap();
    let grads = loss.backward().unwrap();
    [&emb, &w, &gain]
        .iter()
        .map(|p| grads.get(p).unwrap().to_vec_f64().unwrap())
        .collect()
}
fn gradients_match_the_cpu() {
    let _tf32 = tf32_lock();
    let (dev, _gpu) = require_gpu();
    cuda::set_tf32(false);
    let want = composite_grads(Device::Cpu);
    let got = composite_grads(dev);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = rel_err(g, w);
        eprintln!("gradient {i}: relative error {err:.1e}");
        assert!(err < 1e-4, "gradient {i}: relative error {err:e}");
    }
    cuda::set_tf32(true);
}
fn train_losses(dev: Device, steps: usize) -> Vec<f64> {
    let cfg = GptConfig {
        vocab_size: 65,
        block_size: 32,
        n_layer: 2,
        n_head: 4,
        n_embd: 64,
        dropout: 0.0,
    };
    let model = Gpt::new(cfg, &mut Rng::new(11), dev).unwrap();
    let mut opt = AdamW::new(model.params(), AdamWConfig::default()).unwrap();
    let params = model.params();
    let mut data_rng = Rng::new(12);
    (0..steps)
        .map(|_| {
            let ids: Vec<i64> = (0..8 * 33).map(|_| data_rng.below(65) as i64).collect();
            let all = Tensor::from_vec(ids, &[8, 33], dev).unwrap();
            let x = all.narrow(1, 0, 32).unwrap().contiguous().unwrap();
            let y = all.narrow(1, 1, 32).unwrap().contiguous().unwrap();
            let loss = model.loss(&x, &y, None).unwrap();
            let mut grads = loss.backward().unwrap();
            clip_grad_norm(&mut grads, &params, 1.0).unwrap();
            opt.step(&grads, 3e-3).unwrap();
            loss.to_scalar().unwrap()
        })
        .collect()
}
fn gpt_training_on_the_gpu_follows_the_cpu() {
    let _tf32 = tf32_lock();
    let (dev, _gpu) = require_gpu();
    let cpu = train_losses(Device::Cpu, 15);
    cuda::set_tf32(false);
    let exact = train_losses(dev, 15);
    cuda::set_tf32(true);
    let tf32 = train_losses(dev, 15);
    for i in 0..15 {
        eprintln!(
            "step {i}: cpu {:.5} cuda {:.5} cuda+tf32 {:.5}",
            cpu[i], exact[i], tf32[i]
        );
        assert!(
            (exact[i] - cpu[i]).abs() / cpu[i] < 1e-4,
            "step {i}: {} vs {}",
            exact[i],
            cpu[i]
        );
        assert!(
            (tf32[i] - cpu[i]).abs() / cpu[i] < 1e-2,
            "step {i}: {} vs {}",
            tf32[i],
            cpu[i]
        );
    }
    assert!(cpu[14] < cpu[0]);
}
fn hf_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf_gpt2")
        .join(name)
}
fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
/// A Hugging Face GPT-2 on the GPU against transformers' outputs (TF32 off): logits,
/// 32 greedy tokens through the KV cache, and strided perplexity.
fn hf_gpt2_on_the_gpu_matches_transformers() {
    let _tf32 = tf32_lock();
    let (dev, _gpu) = require_gpu();
    cuda::set_tf32(false);
    let model = smith::models::load_hf_gpt2(&hf_fixture(""), dev).unwrap();
    let refs = smith::io::load_safetensors(&hf_fixture("logits.safetensors")).unwrap();
    let got = model
        .forward(&refs["ids"].to_device(dev).unwrap(), None)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let err = rel_err(&got, &refs["logits"].to_vec_f64().unwrap());
    eprintln!("HF GPT-2 logits on the GPU: relative error {err:.1e}");
    assert!(err < 1e-4, "{err:e}");
    let greedy: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf_fixture("greedy.json")).unwrap()).unwrap();
    let want = json_ids(&greedy["tokens"]);
    let out = common::greedy(&model, &[json_ids(&greedy["prompt"])], want.len(), &[], dev).unwrap();
    assert_eq!(out[0], want);
    let ppl: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf_fixture("perplexity.json")).unwrap()).unwrap();
    let (got, _) = smith::infer::perplexity(
        &model,
        &json_ids(&ppl["ids"]),
        ppl["ctx"].as_u64().unwrap() as usize,
        ppl["stride"].as_u64().unwrap() as usize,
        dev,
    )
    .unwrap();
    let want = ppl["perplexity"].as_f64().unwrap();
    eprintln!("HF GPT-2 perplexity on the GPU: {got} vs {want}");
    assert!((got - want).abs() / want < 1e-3);
    cuda::set_tf32(true);
}
/// The GGUF model fixtures (`common::GGUF_MODEL_FIXTURES`) on the GPU against
/// transformers, TF32 off.
fn gguf_models_on_the_gpu_match_transformers() {
    let _tf32 = tf32_lock();
    let (dev, _gpu) = require_gpu();
    cuda::set_tf32(false);
    for name in common::GGUF_MODEL_FIXTURES {
        let (logits, ppl) = common::check_gguf_fixture(name, dev);
        eprintln!("{name} on the GPU: logits error {logits:.1e}, perplexity error {ppl:.1e}");
        assert!(logits < 1e-4, "{name}: logits error {logits:e}");
        assert!(ppl < 1e-3, "{name}: perplexity error {ppl:e}");
    }
    cuda::set_tf32(true);
}
