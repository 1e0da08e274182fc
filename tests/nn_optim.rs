//! Layers, optimizers, schedules, clipping, data and sampling against hand computations.
mod common;

use smith::infer::generate::{penalize_repeats, sample_next, Sampling};
use smith::nn::{
    AttentionConfig, Block, BlockConfig, CausalSelfAttention, Mlp, MlpKind, NormKind, Param,
};
use smith::optim::{clip_grad_norm, AdamW, AdamWConfig, Sgd, WarmupCosine};
use smith::text::CharTokenizer;
use smith::train::data::{Split, TextDataset};
use smith::{DType, Device, GradStore, Rng, RotaryStyle, Tensor};

const CPU: Device = Device::Cpu;

fn attn_cfg(n_head: usize, n_kv_head: usize, rope: bool) -> AttentionConfig {
    AttentionConfig {
        dim: 16,
        n_head,
        n_kv_head,
        bias: true,
        rope: rope.then_some((10000.0, RotaryStyle::RotateHalf)),
        ..AttentionConfig::default()
    }
}

fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, CPU, rng).unwrap()
}

#[test]
fn grouped_query_attention_equals_multi_head_with_repeated_kv() {
    let mut rng = Rng::new(1);
    let gqa = CausalSelfAttention::new(attn_cfg(4, 2, true), 0.3, 0.3, &mut rng, CPU).unwrap();
    let mha = CausalSelfAttention::new(attn_cfg(4, 4, true), 0.3, 0.3, &mut rng, CPU).unwrap();
    // Build MHA weights whose key/value head h is GQA's head h / 2.
    let hd = 4;
    let expand = |t: &Tensor| -> Tensor {
        let q = t.narrow(0, 0, 4 * hd).unwrap();
        let k = t.narrow(0, 4 * hd, 2 * hd).unwrap();
        let v = t.narrow(0, 6 * hd, 2 * hd).unwrap();
        let rep = |x: &Tensor| {
            let heads: Vec<Tensor> = (0..4)
                .map(|h| x.narrow(0, (h / 2) * hd, hd).unwrap())
                .collect();
            Tensor::cat(&heads, 0).unwrap()
        };
        Tensor::cat(&[q, rep(&k), rep(&v)], 0).unwrap()
    };
    mha.qkv.weight.assign(&expand(&gqa.qkv.weight)).unwrap();
    mha.qkv
        .bias
        .as_ref()
        .unwrap()
        .assign(&expand(gqa.qkv.bias.as_ref().unwrap()))
        .unwrap();
    mha.proj.weight.assign(&gqa.proj.weight).unwrap();
    mha.proj
        .bias
        .as_ref()
        .unwrap()
        .assign(gqa.proj.bias.as_ref().unwrap())
        .unwrap();
    let x = randn(&[2, 5, 16], &mut rng);
    let a = gqa.forward(&x).unwrap().to_vec_f64().unwrap();
    let b = mha.forward(&x).unwrap().to_vec_f64().unwrap();
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-5, "{p} vs {q}");
    }
}

#[test]
fn attention_never_looks_ahead() {
    let mut rng = Rng::new(2);
    for cfg in [attn_cfg(4, 4, false), attn_cfg(4, 1, true)] {
        let layer = CausalSelfAttention::new(cfg, 0.3, 0.3, &mut rng, CPU).unwrap();
        let x = randn(&[1, 6, 16], &mut rng);
        let mut changed = x.to_vec::<f32>().unwrap();
        for v in &mut changed[4 * 16..5 * 16] {
            *v += 1.0;
        }
        let x2 = Tensor::from_vec(changed, &[1, 6, 16], CPU).unwrap();
        let (y1, y2) = (
            layer.forward(&x).unwrap().to_vec::<f32>().unwrap(),
            layer.forward(&x2).unwrap().to_vec::<f32>().unwrap(),
        );
        assert_eq!(
            y1[..4 * 16],
            y2[..4 * 16],
            "positions before the change must not move"
        );
        assert_ne!(y1[4 * 16..5 * 16], y2[4 * 16..5 * 16]);
    }
}

#[test]
fn swiglu_matches_hand_computation() {
    let mut rng = Rng::new(3);
    let mlp = Mlp::new(MlpKind::SwiGlu, 2, 3, false, 0.5, 0.5, &mut rng, CPU).unwrap();
    let Mlp::SwiGlu { gate, up, down } = &mlp else {
        panic!("expected SwiGLU")
    };
    let x = [0.3f64, -1.2];
    let (g, u, d) = (
        gate.weight.to_vec_f64().unwrap(),
        up.weight.to_vec_f64().unwrap(),
        down.weight.to_vec_f64().unwrap(),
    );
    let h: Vec<f64> = (0..3)
        .map(|j| {
            let a = g[j * 2] * x[0] + g[j * 2 + 1] * x[1];
            let b = u[j * 2] * x[0] + u[j * 2 + 1] * x[1];
            a / (1.0 + (-a).exp()) * b
        })
        .collect();
    let want: Vec<f64> = (0..2)
        .map(|i| (0..3).map(|j| d[i * 3 + j] * h[j]).sum())
        .collect();
    let got = mlp
        .forward(&Tensor::from_vec(vec![0.3f32, -1.2], &[1, 2], CPU).unwrap())
        .unwrap()
        .to_vec_f64()
        .unwrap();
    for (p, q) in got.iter().zip(&want) {
        assert!((p - q).abs() < 1e-6, "{p} vs {q}");
    }
}

/// A Phi-2 block: `x + attn(ln(x)) + mlp(ln(x))` with rotary on half of each head; the
/// cached path agrees with the full one, and every parameter gets a gradient.
#[test]
fn parallel_block_with_partial_rotary_matches_its_formula_and_trains() {
    let mut rng = Rng::new(9);
    let mut attn = attn_cfg(4, 2, true);
    attn.rope_dims = Some(2);
    let cfg = BlockConfig {
        attn,
        mlp: MlpKind::Gelu,
        mlp_hidden: 32,
        norm: NormKind::Layer,
        norm_eps: 1e-5,
        dropout: 0.0,
        post_norms: false,
        parallel: true,
    };
    let block = Block::new(cfg, 0.3, 0.3, &mut rng, CPU).unwrap();
    assert!(block.norm2.is_none());
    let x = randn(&[2, 5, 16], &mut rng);
    let h = block.norm1.forward(&x).unwrap();
    let want = x
        .add(&block.attn.forward(&h).unwrap())
        .unwrap()
        .add(&block.mlp.forward(&h).unwrap())
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let y = block.forward(&x, None).unwrap();
    common::assert_close(&y.to_vec_f64().unwrap(), &want, 1e-6, "parallel block");
    // Rotating only 2 of 4 features per head differs from rotating them all.
    let mut full = block.clone();
    full.attn.cfg.rope_dims = None;
    let other = full.forward(&x, None).unwrap().to_vec_f64().unwrap();
    assert!(common::rel_err(&other, &want) > 1e-3);
    // Prefill of 3 positions, then 2 one at a time, equals the full forward.
    {
        let _g = smith::no_grad();
        let mut cache = smith::nn::KvCache::new(8, 2, 2, 4, DType::F32, CPU).unwrap();
        let mut parts = vec![block
            .forward_cached(&x.narrow(1, 0, 3).unwrap(), &mut cache)
            .unwrap()];
        for t in 3..5 {
            parts.push(
                block
                    .forward_cached(&x.narrow(1, t, 1).unwrap(), &mut cache)
                    .unwrap(),
            );
        }
        let cached = Tensor::cat(&parts, 1).unwrap().to_vec_f64().unwrap();
        common::assert_close(&cached, &want, 1e-5, "cached parallel block");
    }
    let grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let mut params = Vec::new();
    block.params("b", &mut params);
    assert_eq!(params.len(), 2 + 4 + 4); // one norm, qkv and proj, fc and proj, all biased
    for p in &params {
        let g = grads
            .get(&p.tensor)
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        assert!(
            g.to_vec_f64().unwrap().iter().any(|v| *v != 0.0),
            "{} has a zero gradient",
            p.name
        );
    }
}

#[test]
fn llama_style_block_trains_every_parameter() {
    let mut rng = Rng::new(4);
    let cfg = BlockConfig {
        attn: attn_cfg(4, 2, true),
        mlp: MlpKind::SwiGlu,
        mlp_hidden: 24,
        norm: NormKind::Rms,
        norm_eps: 1e-6,
        dropout: 0.0,
        post_norms: false,
        parallel: false,
    };
    let block = Block::new(cfg, 0.2, 0.2, &mut rng, CPU).unwrap();
    let x = randn(&[2, 5, 16], &mut rng);
    let loss = block
        .forward(&x, None)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let mut params = Vec::new();
    block.params("b", &mut params);
    assert_eq!(params.len(), 2 + 4 + 6); // two norms, qkv and proj with biases, gate/up/down with biases
    for p in &params {
        let g = grads
            .get(&p.tensor)
            .unwrap_or_else(|| panic!("no gradient for {}", p.name));
        assert_eq!(g.shape(), p.tensor.shape());
        assert!(
            g.to_vec_f64().unwrap().iter().any(|v| *v != 0.0),
            "{} has a zero gradient",
            p.name
        );
    }
    // Weight decay only on matrices of linear layers.
    let decayed: Vec<&str> = params
        .iter()
        .filter(|p| p.decay)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        decayed,
        [
            "b.attn.qkv.weight",
            "b.attn.proj.weight",
            "b.mlp.gate.weight",
            "b.mlp.up.weight",
            "b.mlp.down.weight"
        ]
    );
}

fn param(name: &str, values: &[f32], decay: bool) -> Param {
    Param {
        name: name.into(),
        tensor: Tensor::from_slice(values, &[values.len()], CPU)
            .unwrap()
            .requires_grad()
            .unwrap(),
        decay,
    }
}

fn grads_for(p: &[Param], values: &[&[f32]]) -> GradStore {
    let mut g = GradStore::new();
    for (p, v) in p.iter().zip(values) {
        g.insert(&p.tensor, Tensor::from_slice(v, &[v.len()], CPU).unwrap());
    }
    g
}

#[test]
fn adamw_matches_the_formula() {
    let params = vec![param("w", &[1.0, -2.0], true), param("b", &[0.5], false)];
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::new(params.clone(), cfg).unwrap();
    let steps: [(&[f32], &[f32], f64); 2] =
        [(&[0.5, -1.0], &[2.0], 0.1), (&[-0.25, 0.5], &[1.0], 0.05)];
    // Reference in f64.
    let mut w = [1.0f64, -2.0, 0.5];
    let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
    for (t, (gw, gb, lr)) in steps.iter().enumerate() {
        opt.step(&grads_for(&params, &[gw, gb]), *lr).unwrap();
        let g = [gw[0] as f64, gw[1] as f64, gb[0] as f64];
        for i in 0..3 {
            let decay = if i < 2 { 0.1 } else { 0.0 };
            w[i] *= 1.0 - lr * decay;
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
            let mhat = m[i] / (1.0 - 0.9f64.powi(t as i32 + 1));
            let vhat = v[i] / (1.0 - 0.99f64.powi(t as i32 + 1));
            w[i] -= lr * mhat / (vhat.sqrt() + 1e-8);
        }
    }
    let got: Vec<f64> = params
        .iter()
        .flat_map(|p| p.tensor.to_vec_f64().unwrap())
        .collect();
    for (p, q) in got.iter().zip(&w) {
        assert!((p - q).abs() < 1e-6, "{p} vs {q}");
    }
    assert_eq!(opt.steps_taken(), 2);
    // State round-trips.
    let (state, step) = opt.state().unwrap();
    let mut fresh = AdamW::new(params.clone(), cfg).unwrap();
    fresh.load_state(&state, step).unwrap();
    assert_eq!(fresh.steps_taken(), 2);
    assert!(fresh
        .load_state(&Default::default(), 0)
        .unwrap_err()
        .to_string()
        .contains("m.w"));
    let f64_param = Param {
        name: "x".into(),
        tensor: Tensor::zeros(&[1], DType::F64, CPU).unwrap(),
        decay: false,
    };
    assert!(AdamW::new(vec![f64_param], cfg).is_err());
}

#[test]
fn sgd_with_momentum_matches_the_formula() {
    let params = vec![param("w", &[1.0], false)];
    let mut opt = Sgd::new(params.clone(), 0.9, 0.0);
    opt.step(&grads_for(&params, &[&[1.0]]), 0.1).unwrap(); // v = 1, w = 0.9
    opt.step(&grads_for(&params, &[&[2.0]]), 0.1).unwrap(); // v = 2.9, w = 0.61
    let w = params[0].tensor.to_vec::<f32>().unwrap()[0];
    assert!((w - 0.61).abs() < 1e-6, "{w}");
}

#[test]
fn warmup_cosine_schedule() {
    let s = WarmupCosine {
        max_lr: 1.0,
        min_lr: 0.1,
        warmup: 10,
        total: 110,
    };
    assert!((s.lr(0) - 0.1).abs() < 1e-12);
    assert!((s.lr(9) - 1.0).abs() < 1e-12);
    assert!((s.lr(10) - 1.0).abs() < 1e-12);
    assert!((s.lr(60) - 0.55).abs() < 1e-12);
    assert!((s.lr(110) - 0.1).abs() < 1e-12);
    assert!((s.lr(500) - 0.1).abs() < 1e-12);
    assert!(s.lr(30) > s.lr(31));
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let params = vec![param("a", &[0.0, 0.0], false), param("b", &[0.0], false)];
    let mut grads = grads_for(&params, &[&[3.0, 0.0], &[4.0]]);
    let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-9);
    let a = grads
        .get(&params[0].tensor)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let b = grads
        .get(&params[1].tensor)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!((a[0] - 0.6).abs() < 1e-6 && (b[0] - 0.8).abs() < 1e-6);
    // Below the threshold nothing changes.
    let norm = clip_grad_norm(&mut grads, &params, 10.0).unwrap();
    assert!((norm - 1.0).abs() < 1e-5);
    assert_eq!(
        grads
            .get(&params[1].tensor)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        b
    );
    // Gradients of a loss scaled by 1024: the norm and the clipping are the unscaled
    // ones, and the result is unscaled (below the threshold only the division remains).
    let mut grads = grads_for(&params, &[&[3072.0, 0.0], &[4096.0]]);
    let norm = smith::optim::clip_grad_norm_scaled(&mut grads, &params, 1.0, 1024.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-9);
    let a = grads
        .get(&params[0].tensor)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!((a[0] - 0.6).abs() < 1e-6, "{a:?}");
    let mut grads = grads_for(&params, &[&[3072.0, 0.0], &[4096.0]]);
    smith::optim::clip_grad_norm_scaled(&mut grads, &params, 10.0, 1024.0).unwrap();
    let b = grads
        .get(&params[1].tensor)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(b, [4.0]);
}

#[test]
fn tokenizer_and_batches() {
    let text = "to be, or not to be: that is the question.\n".repeat(20);
    let tok = CharTokenizer::from_text(&text);
    let ids = tok.encode(&text).unwrap();
    assert_eq!(tok.decode(&ids), text);
    assert!(tok.encode("z").unwrap_err().to_string().contains("'z'"));
    let data = TextDataset::new(ids, 8).unwrap();
    let (x, y) = data
        .batch(Split::Train, 3, 8, &mut Rng::new(0), CPU)
        .unwrap();
    assert_eq!(x.shape(), &[3, 8]);
    let (x, y) = (x.to_vec::<i64>().unwrap(), y.to_vec::<i64>().unwrap());
    for r in 0..3 {
        assert_eq!(
            x[r * 8 + 1..r * 8 + 8],
            y[r * 8..r * 8 + 7],
            "targets are inputs shifted by one"
        );
    }
    assert!(data.len(Split::Val) > 8);
    assert!(TextDataset::new(vec![1, 2, 3], 8).is_err());
}

#[test]
fn sampling_respects_its_settings() {
    let logits = [1.0f32, 3.0, 2.0, 0.5];
    let mut rng = Rng::new(0);
    let greedy = Sampling {
        temperature: 0.0,
        top_k: None,
        top_p: None,
        ..Sampling::default()
    };
    assert_eq!(sample_next(&logits, &greedy, &mut rng), 1);
    let top1 = Sampling {
        temperature: 1.0,
        top_k: Some(1),
        top_p: None,
        ..Sampling::default()
    };
    let nucleus = Sampling {
        temperature: 1.0,
        top_k: None,
        top_p: Some(0.01),
        ..Sampling::default()
    };
    for _ in 0..50 {
        assert_eq!(sample_next(&logits, &top1, &mut rng), 1);
        assert_eq!(sample_next(&logits, &nucleus, &mut rng), 1);
    }
    // Temperature 1 follows the softmax.
    let full = Sampling {
        temperature: 1.0,
        top_k: None,
        top_p: None,
        ..Sampling::default()
    };
    let mut counts = [0usize; 4];
    let n = 40_000;
    for _ in 0..n {
        counts[sample_next(&logits, &full, &mut rng) as usize] += 1;
    }
    let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
    for (i, &c) in counts.iter().enumerate() {
        let p = (logits[i] as f64).exp() / z;
        assert!(
            (c as f64 / n as f64 - p).abs() < 0.01,
            "token {i}: {} vs {p}",
            c as f64 / n as f64
        );
    }
    assert!(Sampling {
        temperature: f64::NAN,
        top_k: None,
        ..Sampling::default()
    }
    .validate()
    .is_err());
    // min-p keeps tokens at least that fraction as likely as the best: here only token 1
    // (token 2 is e^-1 = 0.37 as likely).
    let min_p = Sampling {
        temperature: 1.0,
        min_p: Some(0.5),
        ..Sampling::default()
    };
    for _ in 0..50 {
        assert_eq!(sample_next(&logits, &min_p, &mut rng), 1);
    }
    assert!(Sampling {
        min_p: Some(0.0),
        ..Sampling::default()
    }
    .validate()
    .is_err());
    // The repetition penalty divides positive logits and multiplies negative ones, once
    // per distinct token of the context.
    let mut l = vec![2.0f32, -1.0, 3.0];
    penalize_repeats(&mut l, &[0, 1, 0], 2.0);
    assert_eq!(l, vec![1.0, -2.0, 3.0]);
    assert!(Sampling {
        repetition_penalty: 0.0,
        ..Sampling::default()
    }
    .validate()
    .is_err());
}

#[test]
fn sliding_window_attention_sees_exactly_the_window() {
    // Rotary scores depend only on relative positions, so a query with a window of w sees
    // what it would see as the last of those w positions alone.
    let mut rng = Rng::new(21);
    let _g = smith::no_grad();
    let w = 4;
    let mut cfg = attn_cfg(4, 2, true);
    cfg.window = Some(w);
    let windowed = CausalSelfAttention::new(cfg, 0.4, 0.4, &mut rng, CPU).unwrap();
    let mut full = windowed.clone();
    full.cfg.window = None;
    let x = randn(&[2, 9, 16], &mut rng);
    let y = windowed.forward(&x).unwrap();
    for i in 0..9usize {
        let from = (i + 1).saturating_sub(w);
        let alone = full
            .forward(&x.narrow(1, from, i + 1 - from).unwrap())
            .unwrap();
        let want = alone.narrow(1, i - from, 1).unwrap().to_vec_f64().unwrap();
        let got = y.narrow(1, i, 1).unwrap().to_vec_f64().unwrap();
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() < 1e-5, "position {i}: {g} vs {e}");
        }
    }
    // Without the window the later positions differ.
    let y_full = full
        .forward(&x)
        .unwrap()
        .narrow(1, 8, 1)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let y_win = y.narrow(1, 8, 1).unwrap().to_vec_f64().unwrap();
    assert!(y_full.iter().zip(&y_win).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn gemma_shaped_model_decodes_with_the_cache_as_it_runs_whole() {
    use smith::models::LanguageModel;
    let mut rng = Rng::new(22);
    let _g = smith::no_grad();
    let model = common::tiny_gemma(5, &mut rng, CPU);
    let ids: Vec<i64> = (0..2 * 14).map(|_| rng.below(97) as i64).collect();
    let x = Tensor::from_vec(ids, &[2, 14], CPU).unwrap();
    let whole = model.forward(&x).unwrap();
    let mut caches = model.new_caches(2, 14).unwrap();
    // Prefill 3 positions, then one at a time past the window.
    let mut got = vec![model
        .forward_cached(&x.narrow(1, 0, 3).unwrap(), &mut caches)
        .unwrap()];
    for t in 3..14 {
        got.push(
            model
                .forward_cached(&x.narrow(1, t, 1).unwrap(), &mut caches)
                .unwrap(),
        );
    }
    for (i, logits) in got.iter().enumerate() {
        let t = if i == 0 { 2 } else { i + 2 };
        let want = whole.narrow(1, t, 1).unwrap().to_vec_f64().unwrap();
        let err = common::rel_err(&logits.to_vec_f64().unwrap(), &want);
        assert!(err < 1e-5, "position {t}: error {err:e}");
    }
}

#[test]
fn linear_rope_scaling_divides_positions() {
    // Position 2q under a scale of 2 turns exactly like position q without scaling.
    let (c2, s2) = smith::rotary_tables_scaled(0, 16, 8, 10000.0, 2.0, DType::F64, CPU).unwrap();
    let (c1, s1) = smith::rotary_tables(0, 8, 8, 10000.0, DType::F64, CPU).unwrap();
    for q in 0..8 {
        let row = |t: &Tensor, p: usize| t.narrow(0, p, 1).unwrap().to_vec_f64().unwrap();
        assert_eq!(row(&c2, 2 * q), row(&c1, q));
        assert_eq!(row(&s2, 2 * q), row(&s1, q));
    }
    assert_ne!(
        c2.narrow(0, 1, 1).unwrap().to_vec_f64().unwrap(),
        c1.narrow(0, 1, 1).unwrap().to_vec_f64().unwrap()
    );
    assert!(smith::rotary_tables_scaled(0, 4, 8, 10000.0, 0.0, DType::F32, CPU).is_err());
}

#[test]
fn rope_frequency_factors_divide_each_frequency_and_yarn_ramps_between_kinds() {
    // Dividing frequency i by f_i at position p equals the plain angle at p / f_i, checked
    // on the angles themselves (atan2 of sin and cos, magnitude taken out).
    let factors = [1.0, 2.0, 4.0, 8.0];
    let spec = smith::RotarySpec {
        factors: &factors,
        magnitude: 1.5,
        ..smith::RotarySpec::plain(8, 10000.0)
    };
    let (c, s) = smith::rotary_tables_for(0, 5, &spec, DType::F64, CPU).unwrap();
    let (c, s) = (c.to_vec_f64().unwrap(), s.to_vec_f64().unwrap());
    for p in 0..5 {
        for (i, f) in factors.iter().enumerate() {
            let freq = 10000f64.powf(-(2.0 * i as f64) / 8.0);
            let (cv, sv) = (c[p * 4 + i], s[p * 4 + i]);
            assert!(((cv * cv + sv * sv).sqrt() - 1.5).abs() < 1e-12);
            assert!((cv - 1.5 * (p as f64 * freq / f).cos()).abs() < 1e-12);
        }
    }
    let short = smith::RotarySpec {
        factors: &[1.0],
        ..smith::RotarySpec::plain(8, 1e4)
    };
    assert!(smith::rotary_tables_for(0, 2, &short, DType::F32, CPU).is_err());
    let flat = smith::RotarySpec {
        magnitude: 0.0,
        ..smith::RotarySpec::plain(8, 1e4)
    };
    assert!(smith::rotary_tables_for(0, 2, &flat, DType::F32, CPU).is_err());
    // YaRN keeps the fastest frequencies, divides the slowest by the factor, and blends
    // monotonically between.
    let y = smith::models::gguf_rope::yarn_factors(64, 10000.0, 4.0, 256.0, 32.0, 1.0);
    assert_eq!(y.len(), 32);
    assert_eq!(y[0], 1.0);
    assert!((y[31] - 4.0).abs() < 1e-12);
    assert!(y.windows(2).all(|w| w[0] <= w[1]));
    assert!(y.iter().any(|v| *v > 1.0 && *v < 4.0));
}
