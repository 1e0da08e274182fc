//! The GPT trained by smith gives the same losses as PyTorch for the first 20 AdamW steps
//! from the same initial weights and batches (fixture made by tools/make_gpt_fixture.py).

use smith::io::load_safetensors;
use smith::models::{Gpt, GptConfig};
use smith::optim::{clip_grad_norm, AdamW, AdamWConfig, WarmupCosine};
use smith::{Device, Rng};
use std::path::Path;

#[test]
fn twenty_adamw_steps_match_pytorch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt_adamw");
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("expected.json")).expect("fixture expected.json"),
    )
    .unwrap();
    let cfg = &expected["config"];
    let num = |k: &str| cfg[k].as_f64().unwrap_or_else(|| panic!("config key {k}"));
    let model_cfg = GptConfig {
        vocab_size: expected["vocab"].as_str().unwrap().chars().count(),
        block_size: num("block_size") as usize,
        n_layer: num("n_layer") as usize,
        n_head: num("n_head") as usize,
        n_embd: num("n_embd") as usize,
        dropout: 0.0,
    };
    let model = Gpt::new(model_cfg, &mut Rng::new(99), Device::Cpu).unwrap();
    model
        .load_weights(&load_safetensors(&dir.join("weights.safetensors")).unwrap())
        .unwrap();
    let batches = load_safetensors(&dir.join("batches.safetensors")).unwrap();
    let (xs, ys) = (&batches["x"], &batches["y"]);
    let mut opt = AdamW::new(
        model.params(),
        AdamWConfig {
            beta1: num("beta1"),
            beta2: num("beta2"),
            eps: num("eps"),
            weight_decay: num("weight_decay"),
        },
    )
    .unwrap();
    let steps = num("steps") as u64;
    let schedule = WarmupCosine {
        max_lr: num("lr"),
        min_lr: num("min_lr"),
        warmup: num("warmup") as u64,
        total: steps,
    };
    let want_losses: Vec<f64> = expected["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want_norms: Vec<f64> = expected["grad_norms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(want_losses.len() as u64, steps);
    let params = model.params();
    for step in 0..steps as usize {
        let x = xs.narrow(0, step, 1).unwrap().squeeze(0).unwrap();
        let y = ys.narrow(0, step, 1).unwrap().squeeze(0).unwrap();
        let loss = model.loss(&x, &y, None).unwrap();
        let mut grads = loss.backward().unwrap();
        let norm = clip_grad_norm(&mut grads, &params, num("grad_clip")).unwrap();
        opt.step(&grads, schedule.lr(step as u64)).unwrap();
        let got = loss.to_scalar().unwrap();
        let rel = (got - want_losses[step]).abs() / want_losses[step].abs();
        eprintln!("step {step}: smith {got:.6} pytorch {:.6} (rel {rel:.1e}), grad norm {norm:.5} vs {:.5}", want_losses[step], want_norms[step]);
        assert!(
            rel < 1e-4,
            "step {step}: loss {got} vs PyTorch {} (relative {rel:e})",
            want_losses[step]
        );
        let norm_rel = (norm - want_norms[step]).abs() / want_norms[step];
        assert!(
            norm_rel < 1e-3,
            "step {step}: grad norm {norm} vs PyTorch {}",
            want_norms[step]
        );
    }
}
