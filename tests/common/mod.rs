//! Helpers shared by the integration tests: seeded random tensors, closeness checks and a
//! central-difference gradient checker in f64.
#![allow(dead_code)]

pub mod devices;

use smith::{DType, Device, Result, Rng, Tensor};
use std::path::{Path, PathBuf};

/// Where scikit-image's four photos are (`SMITH_PHOTOS`, else target/photos, filled by
/// tools/fetch_photos.sh).
pub fn photo_dir() -> PathBuf {
    std::env::var_os("SMITH_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/photos"))
}

/// Why a test of the photos cannot run (`SMITH_REQUIRE_PHOTOS` makes it a failure instead).
pub fn photos_missing() -> Option<String> {
    if photo_dir().join("rocket.jpg").exists() {
        return None;
    }
    assert!(
        std::env::var_os("SMITH_REQUIRE_PHOTOS").is_none(),
        "SMITH_REQUIRE_PHOTOS is set but {} has no photos (bash tools/fetch_photos.sh)",
        photo_dir().display()
    );
    Some(format!(
        "no photos in {} (bash tools/fetch_photos.sh)",
        photo_dir().display()
    ))
}

/// A random f64 tensor with values in [-1, 1).
pub fn rand64(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::rand(shape, -1.0, 1.0, DType::F64, Device::Cpu, rng).unwrap()
}

/// Asserts that two vectors agree elementwise within `tol * max(1, |expected|)`.
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(!g.is_nan() || w.is_nan(), "{what}: NaN at {i} (want {w})");
        let err = (g - w).abs();
        assert!(
            err <= tol * w.abs().max(1.0),
            "{what}: element {i}: got {g}, want {w} (err {err:e})"
        );
    }
}

/// Relative error ||got - want|| / ||want||.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt().max(1e-30);
    num / den
}

/// Checks the analytic gradients of `f` against central differences in f64.
///
/// `inputs` are the leaf values and shapes; `f` maps the leaves to an output of any shape,
/// which is reduced to a scalar through a fixed random projection so that every output
/// element matters. `f` is where views (transpose, narrow, broadcast) are applied, so the
/// checks cover non-contiguous inputs.
pub fn gradcheck(inputs: &[(Vec<f64>, Vec<usize>)], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let build = |vals: &[(Vec<f64>, Vec<usize>)], grad: bool| -> Vec<Tensor> {
        vals.iter()
            .map(|(v, s)| {
                let t = Tensor::from_vec(v.clone(), s, Device::Cpu).unwrap();
                if grad {
                    t.requires_grad().unwrap()
                } else {
                    t
                }
            })
            .collect()
    };
    let probe_shape = f(&build(inputs, false)).unwrap().shape().to_vec();
    let mut rng = Rng::new(12345);
    let probe = rand64(&probe_shape, &mut rng);
    let loss = |vals: &[(Vec<f64>, Vec<usize>)]| -> f64 {
        let _g = smith::no_grad();
        f(&build(vals, false))
            .unwrap()
            .mul(&probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let leaves = build(inputs, true);
    let out = f(&leaves).unwrap().mul(&probe).unwrap().sum_all().unwrap();
    let grads = out.backward().unwrap();
    let eps = 1e-6;
    for (k, leaf) in leaves.iter().enumerate() {
        let analytic = match grads.get(leaf) {
            Some(g) => g.to_vec_f64().unwrap(),
            None => vec![0.0; leaf.numel()],
        };
        assert_eq!(
            grads
                .get(leaf)
                .map(|g| g.shape().to_vec())
                .unwrap_or(leaf.shape().to_vec()),
            leaf.shape()
        );
        let mut vals = inputs.to_vec();
        for (i, &analytic_i) in analytic.iter().enumerate() {
            let orig = vals[k].0[i];
            vals[k].0[i] = orig + eps;
            let up = loss(&vals);
            vals[k].0[i] = orig - eps;
            let down = loss(&vals);
            vals[k].0[i] = orig;
            let numeric = (up - down) / (2.0 * eps);
            let err = (analytic_i - numeric).abs();
            assert!(
                err <= 1e-6 * numeric.abs().max(1.0),
                "input {k} element {i}: analytic {analytic_i} vs numeric {numeric} (err {err:e})"
            );
        }
    }
}

/// Random leaf values of a shape, for [`gradcheck`].
pub fn leaf(shape: &[usize], rng: &mut Rng) -> (Vec<f64>, Vec<usize>) {
    let n = shape.iter().product();
    (
        (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect(),
        shape.to_vec(),
    )
}

/// Random leaf values bounded away from zero (for log, sqrt, div, pow).
pub fn positive_leaf(shape: &[usize], rng: &mut Rng) -> (Vec<f64>, Vec<usize>) {
    let n = shape.iter().product();
    (
        (0..n).map(|_| 0.5 + rng.uniform()).collect(),
        shape.to_vec(),
    )
}

/// The GGUF model fixtures of tools/make_gguf_model_fixtures.py: a Llama (GQA, untied
/// head) and a GPT-2 in F16, BF16, Q8_0 and Q4_0, a Phi-2 (parallel block, partial rotary,
/// biases) with separate Q/K/V in F16 and fused in Q8_0, and a Llama with Llama 3.1 rope
/// scaling (`rope_freqs`) and one with YaRN.
pub const GGUF_MODEL_FIXTURES: [&str; 12] = [
    "llama_f16",
    "llama_bf16",
    "llama_q8_0",
    "llama_q4_0",
    "gpt2_f16",
    "gpt2_bf16",
    "gpt2_q8_0",
    "gpt2_q4_0",
    "phi2_f16",
    "phi2_q8_0",
    "llama31_f16",
    "llama_yarn_f16",
];

/// Checks the GGUF model fixture `name` (tests/fixtures/gguf_models) on `device` against
/// transformers: asserts the 32 greedy tokens, returns (logits error, perplexity error).
pub fn check_gguf_fixture(name: &str, device: Device) -> (f64, f64) {
    use smith::infer::perplexity;
    use smith::models::from_gguf::load_gguf_model;
    use smith::models::LanguageModel;
    use std::path::{Path, PathBuf};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_models");
    let path: PathBuf = dir.join(format!("{name}.gguf"));
    let refs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u32> {
        refs[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let (model, _) = load_gguf_model(&path, device, DType::F32).unwrap();
    let _g = smith::no_grad();
    let input: Vec<i64> = ids("ids").iter().map(|&t| t as i64).collect();
    let n = input.len();
    let x = Tensor::from_vec(input, &[1, n], device).unwrap();
    let logits = model.forward(&x).unwrap();
    let vocab = model.vocab_size();
    let got = logits.narrow(1, n - 4, 4).unwrap().to_vec_f64().unwrap();
    let want: Vec<f64> = refs["logits_last4"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), 4 * vocab);
    let logit_err = rel_err(&got, &want);
    let want_greedy = ids("greedy");
    let out = greedy(&model, &[ids("prompt")], want_greedy.len(), &[], device).unwrap();
    assert_eq!(out[0], want_greedy, "{name}: greedy tokens differ");
    let ctx = refs["ctx"].as_u64().unwrap() as usize;
    let stride = refs["stride"].as_u64().unwrap() as usize;
    let (ppl, _) = perplexity(&model, &ids("text"), ctx, stride, device).unwrap();
    let want_ppl = refs["perplexity"].as_f64().unwrap();
    (logit_err, (ppl - want_ppl).abs() / want_ppl)
}

/// Greedy continuations of `prompts` (one length) by up to `n` tokens, stopping a row at
/// any of `stop`: the generation call most tests make.
pub fn greedy(
    model: &dyn smith::models::LanguageModel,
    prompts: &[Vec<u32>],
    n: usize,
    stop: &[u32],
    device: Device,
) -> smith::Result<Vec<Vec<u32>>> {
    smith::infer::generate::generate_batch(
        model,
        prompts,
        n,
        &smith::infer::generate::Sampling::default(),
        stop,
        &mut Rng::new(0),
        device,
        |_, _| Ok(true),
    )
}

/// Every quantized ggml type [`smith::QMatrix`] holds.
pub const QUANT_TYPES: [smith::ggml_types::GgmlType; 10] = {
    use smith::ggml_types::GgmlType::*;
    [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K]
};

/// `rows` random rows of `cols` values of type `ty` as raw blocks: random quant bytes with
/// every f16 scale (and min) drawn from ±0.05, so that every value is finite.
pub fn random_quant_rows(
    ty: smith::ggml_types::GgmlType,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> Vec<u8> {
    use smith::ggml_types::GgmlType::*;
    let (per, bytes) = ty.block();
    let halves: &[usize] = match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4K | Q5K => &[0, 2],
        Q2K => &[80, 82],
        Q3K => &[108],
        Q6K => &[208],
        _ => &[],
    };
    let mut out = Vec::with_capacity(rows * cols / per * bytes);
    for _ in 0..rows * cols / per {
        let mut block: Vec<u8> = (0..bytes).map(|_| rng.below(256) as u8).collect();
        for &at in halves {
            let h = half::f16::from_f64((rng.uniform() - 0.5) * 0.1).to_le_bytes();
            block[at..at + 2].copy_from_slice(&h);
        }
        out.extend(block);
    }
    out
}

/// A small random Gemma-3-shaped model: GQA (4 query heads, 2 key/value heads), a head dim
/// wider than dim / heads, per-head QK norms, post norms, GeGLU, scaled embeddings, and
/// sliding-window layers of `window` keys (every third layer global).
pub fn tiny_gemma(window: usize, rng: &mut Rng, device: Device) -> smith::models::Llama {
    use smith::models::llama::{Llama, LlamaConfig, SlidingWindow};
    let mut cfg = LlamaConfig::llama(97, 64, 3, 4, 2, 24, 40, 10000.0);
    cfg.head_dim = Some(16);
    cfg.mlp = smith::nn::MlpKind::GeGlu;
    cfg.qk_norm = true;
    cfg.post_norms = true;
    cfg.embed_scale = true;
    cfg.norm_eps = 1e-6;
    cfg.sliding = Some(SlidingWindow {
        size: window,
        global_every: 3,
        rope_base: 100.0,
    });
    let model = Llama::with_init_std(cfg, 0.3, rng, Device::Cpu).unwrap();
    // Norm gains away from 1, so that a missing norm shows.
    for p in model.params() {
        if p.tensor.rank() == 1 {
            let n = p.tensor.numel();
            let g: Vec<f32> = (0..n).map(|_| 0.5 + rng.uniform() as f32).collect();
            p.tensor
                .assign(&Tensor::from_vec(g, &[n], Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let _ = device;
    model.to_dtype(DType::F32).unwrap()
}

/// A test of a suite that runs under [`run_suite`]: its name, its body, and why it cannot
/// run here (`Some(reason)`: an input is missing), if it cannot.
pub type SuiteTest = (&'static str, fn(), Option<String>);

/// Runs `tests` with the standard test arguments (filters, `--ignored`, `--list`): a test
/// whose input is missing is reported as ignored, with the reason printed once, never as
/// passed. `--ignored` runs such tests anyway (they then fail, saying what is missing).
pub fn run_suite(tests: Vec<SuiteTest>) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    let mut reasons: Vec<&str> = Vec::new();
    for r in tests.iter().filter_map(|t| t.2.as_deref()) {
        if !reasons.contains(&r) {
            eprintln!("ignored: {r}");
            reasons.push(r);
        }
    }
    let trials = tests
        .into_iter()
        .map(|(name, body, missing)| {
            libtest_mimic::Trial::test(name, move || {
                body();
                Ok(())
            })
            .with_ignored_flag(missing.is_some())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// `x` moved into the domain of `op` (see `UnaryOp::domain`): `|x| + 0.1` for ops defined
/// on positive numbers, `x ± 0.1` away from zero for ops with a kink there.
pub fn unary_input(op: smith::UnaryOp, x: &Tensor) -> Result<Tensor> {
    use smith::backend::Domain;
    match op.domain() {
        Domain::Any => Ok(x.clone()),
        Domain::Positive => x.abs()?.add_scalar(0.1),
        Domain::AwayFromZero => {
            let zero = Tensor::scalar(0.0, x.dtype(), x.device())?;
            Tensor::where_cond(&x.gt(&zero)?, &x.add_scalar(0.1)?, &x.add_scalar(-0.1)?)
        }
    }
}
