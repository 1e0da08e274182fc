//! Attention: the fused (FlashAttention) op on the CPU against naive attention (scores,
//! additive mask, softmax, weighted values) computed in f64 with the separately tested ops,
//! forward and all three gradients, on random shapes (odd lengths, query and key lengths
//! that differ, GQA and MQA, windows, causal and not, non-contiguous inputs) and finite
//! differences; on a GPU, the fused kernels and the decoding kernel with its cache append
//! against the CPU and naive attention.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::{assert_close, gradcheck, leaf};

use common::devices::*;
use smith::backend::cuda;
use smith::{AttnMask, DType, Device, Rng, RotaryStyle, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "fused_attention_matches_naive_attention_and_its_gradients",
            fused_attention_matches_naive_attention_and_its_gradients,
            None,
        ),
        (
            "fused_attention_passes_finite_differences",
            fused_attention_passes_finite_differences,
            None,
        ),
        (
            "queries_that_see_no_key_give_zero_and_bad_calls_are_errors",
            queries_that_see_no_key_give_zero_and_bad_calls_are_errors,
            None,
        ),
        (
            "decoding_attention_kernel_matches_the_cpu",
            decoding_attention_kernel_matches_the_cpu,
            needs_gpu(),
        ),
        (
            "decoding_attention_matches_naive_attention_on_short_and_split_caches",
            decoding_attention_matches_naive_attention_on_short_and_split_caches,
            needs_gpu(),
        ),
        (
            "fused_attention_matches_the_cpu",
            fused_attention_matches_the_cpu,
            needs_gpu(),
        ),
        (
            "attention_layer_in_bf16_uses_the_fused_kernel",
            attention_layer_in_bf16_uses_the_fused_kernel,
            needs_gpu(),
        ),
    ]);
}

fn decoding_attention_kernel_matches_the_cpu() {
    use smith::models::LanguageModel;
    let _tf = tf32_lock();
    let (dev, _gpu) = require_gpu();
    let _g = smith::no_grad();
    cuda::set_tf32(false);
    let mut rng = Rng::new(32);
    // A window of 5 over 20 positions (one key split), then a window of 40 over 64
    // positions (the keys split in two, the window start moving across tiles); GQA; head
    // dim 16; f32, then bf16 loosely.
    for (window, len) in [(5, 20), (40, 64)] {
        let cpu_model = common::tiny_gemma(window, &mut rng, Device::Cpu);
        for dtype in [DType::F32, DType::BF16] {
            let gpu_model = move_llama(cpu_model.to_dtype(dtype).unwrap(), dev);
            let ids: Vec<i64> = (0..3 * len).map(|_| rng.below(97) as i64).collect();
            let x = Tensor::from_vec(ids, &[3, len], Device::Cpu).unwrap();
            let xg = x.to_device(dev).unwrap();
            let mut cc = cpu_model.new_caches(3, len).unwrap();
            let mut gc = gpu_model.new_caches(3, len).unwrap();
            let step =
                |m: &smith::models::Llama, c: &mut [smith::nn::KvCache], x: &Tensor, t0, n| {
                    m.forward_cached(&x.narrow(1, t0, n).unwrap(), c)
                        .unwrap()
                        .to_vec_f64()
                        .unwrap()
                };
            let mut worst: f64 = 0.0;
            for (t0, n) in [(0, 2)].into_iter().chain((2..len).map(|t| (t, 1))) {
                let want = step(&cpu_model, &mut cc, &x, t0, n);
                let mut got = Vec::new();
                let names = kernels_run(|| got = step(&gpu_model, &mut gc, &xg, t0, n));
                // Single positions take the decoding kernel, one launch per layer.
                let decode = format!("decode_attention_d16_{}", dtype.as_str());
                let launches = names.iter().filter(|k| **k == decode).count();
                assert!(n > 1 || launches == 1, "{names:?}");
                worst = worst.max(rel_err(&got, &want));
            }
            let tolerance = if dtype == DType::F32 { 1e-5 } else { 3e-2 };
            assert!(worst < tolerance, "{dtype}: decode logits error {worst:e}");
            eprintln!("decode attention {dtype}, window {window} of {len}: worst logits error {worst:.1e}");
            assert_eq!(gc[0].len(), len);
        }
    }
    cuda::set_tf32(true);
}
/// The decoding kernel on short caches (one block per head) and long ones, where the keys
/// are split over many blocks and the last block combines them: against attention computed
/// in f64 on the host, for MHA, GQA, MQA-like groups, a window, a one-key cache, head dims
/// 64/80/96/128/256 (a key row over 8 to 64 lanes), f32, f16 and bf16; two runs agree bit
/// for bit.
fn decoding_attention_matches_naive_attention_on_short_and_split_caches() {
    let _tf = tf32_lock();
    let (dev, _gpu) = require_gpu();
    let _g = smith::no_grad();
    let mut rng = Rng::new(33);
    let cases = [
        (1, 12, 12, 64, 272, 0),
        (1, 3, 3, 256, 37, 0),
        (2, 6, 2, 96, 1, 0),
        (1, 4, 2, 64, 700, 0),
        (2, 8, 8, 128, 1500, 300),
        (3, 2, 1, 80, 4000, 0),
        (1, 12, 12, 64, 2100, 0),
    ];
    for (b, h, kvh, d, len, window) in cases {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            // Inputs rounded through `dtype`, so the reference sees what the kernel sees.
            let mut host = |shape: &[usize]| {
                randn(shape, &mut rng)
                    .to_dtype(dtype)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
            };
            let (kp, vp) = (host(&[b, kvh, len - 1, d]), host(&[b, kvh, len - 1, d]));
            let (q, kn, vn) = (
                host(&[b, h, 1, d]),
                host(&[b, kvh, 1, d]),
                host(&[b, kvh, 1, d]),
            );
            let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(dev).unwrap();
            let scale = 1.0 / (d as f64).sqrt();
            let run = || {
                let mut cache = smith::nn::KvCache::new(len, b, kvh, d, dtype, dev).unwrap();
                cache.append(&on(&kp), &on(&vp)).unwrap();
                let w = (window > 0).then_some(window);
                let y = cache
                    .attend_one(&on(&q), &on(&kn), &on(&vn), w, scale)
                    .unwrap()
                    .expect("the decoding kernel takes this step");
                assert_eq!(cache.len(), len);
                y.to_vec_f64().unwrap()
            };
            let got = run();
            assert_eq!(got, run(), "{dtype}: two runs differ");
            let keys = Tensor::cat(&[kp.clone(), kn.clone()], 2)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let vals = Tensor::cat(&[vp.clone(), vn.clone()], 2)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let qv = q.to_vec_f64().unwrap();
            let first = if window > 0 && len > window {
                len - window
            } else {
                0
            };
            let mut want = vec![0.0; b * h * d];
            for bi in 0..b {
                for hi in 0..h {
                    let g = hi / (h / kvh);
                    let at = |j: usize| ((bi * kvh + g) * len + j) * d;
                    let qr = &qv[(bi * h + hi) * d..(bi * h + hi + 1) * d];
                    let scores: Vec<f64> = (first..len)
                        .map(|j| scale * (0..d).map(|e| qr[e] * keys[at(j) + e]).sum::<f64>())
                        .collect();
                    let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - mx).exp()).sum();
                    for (j, sc) in (first..len).zip(&scores) {
                        let p = (sc - mx).exp() / total;
                        for e in 0..d {
                            want[(bi * h + hi) * d + e] += p * vals[at(j) + e];
                        }
                    }
                }
            }
            let err = rel_err(&got, &want);
            let tolerance = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
            eprintln!(
                "split decode b{b} h{h}/{kvh} d{d} len{len} window{window} {dtype}: {err:.1e}"
            );
            assert!(
                err < tolerance,
                "{dtype} b{b} h{h} d{d} len{len}: error {err:e}"
            );
        }
    }
}
/// Fused attention on the GPU against the CPU's (itself checked against naive attention
/// in f64): output and the three gradients, for head dims 16 to 128, GQA/MQA, windows,
/// both masks, odd and differing lengths, a non-contiguous q, f32 (TF32 off), f16 and
/// bf16; two runs agree bit for bit; an unsupported head dim is a clear error.
fn fused_attention_matches_the_cpu() {
    let _tf = tf32_lock();
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(35);
    let cases = [
        (2, 4, 4, 37, 37, 64, true, None),
        (1, 8, 2, 70, 70, 80, true, Some(23)),
        (2, 6, 1, 9, 45, 96, true, None),
        (1, 4, 4, 33, 50, 128, false, None),
        (3, 2, 2, 5, 5, 16, false, None),
        (1, 4, 2, 200, 200, 128, true, Some(77)),
        (1, 2, 2, 132, 260, 64, true, None),
        (1, 3, 1, 300, 700, 128, false, None),
        (2, 2, 2, 257, 257, 64, true, Some(100)),
        (1, 2, 2, 300, 300, 64, true, None),
    ];
    for (n, (b, h, kvh, tq, tk, d, causal, window)) in cases.into_iter().enumerate() {
        let mask = smith::AttnMask { causal, window };
        // One case with a negative scale: the kernels' online softmax takes another path
        // (the max over scaled scores) when the scale does not keep the scores' order.
        let scale = if n == 6 { -0.7 } else { 1.0 } / (d as f64).sqrt();
        let q_raw = randn(&[b, tq, h, d], &mut rng);
        // Keys and values contiguous, as head views of [B, T, heads, D] (read in place),
        // or with features that are not contiguous (copied first); made in the base
        // layout on each device and viewed there.
        let kind = n % 3;
        let base = match kind {
            0 => [b, kvh, tk, d],
            1 => [b, tk, kvh, d],
            _ => [b, kvh, d, tk],
        };
        let view = |t: &Tensor| match kind {
            0 => t.clone(),
            1 => t.transpose(1, 2).unwrap(),
            _ => t.transpose(2, 3).unwrap(),
        };
        let (mut k, v) = (randn(&base, &mut rng), randn(&base, &mut rng));
        if n == 9 {
            // Keys that grow along the sequence: each tile's scores pass the running max
            // by far, so the forward's rows cannot keep their max from one tile to the next.
            let mut grown = k.to_vec_f64().unwrap();
            for (i, x) in grown.iter_mut().enumerate() {
                *x *= 1.0 + ((i / d) % tk) as f64 / 8.0;
            }
            k = Tensor::from_vec(
                grown.into_iter().map(|x| x as f32).collect(),
                &base,
                Device::Cpu,
            )
            .unwrap();
        }
        let probe = randn(&[b, h, tq, d], &mut rng);
        // On sm_90 head dims 64 and 128 run on the warpgroup kernels, and once more on the
        // mma.sync ones.
        let arch = cuda::device(0).unwrap().arch.clone();
        // The warpgroup forward also runs without TMA.
        let mut families = vec![
            (DType::F32, true, true),
            (DType::F16, true, true),
            (DType::BF16, true, true),
        ];
        if arch == "sm_90" && cuda::FLASH_WG_HEAD_DIMS.contains(&d) {
            families.extend([(DType::F16, false, true), (DType::BF16, false, true)]);
            families.push((DType::BF16, true, false));
        }
        for (dtype, warpgroup, tma) in families {
            cuda::set_warpgroup_kernels(warpgroup);
            cuda::set_tma_kernels(tma);
            let run = |device: Device| {
                let on = |t: &Tensor| {
                    t.to_dtype(dtype)
                        .unwrap()
                        .to_device(device)
                        .unwrap()
                        .requires_grad()
                        .unwrap()
                };
                let (qr, kd, vd) = (on(&q_raw), on(&k), on(&v));
                let y = qr
                    .transpose(1, 2)
                    .unwrap()
                    .flash_attention(&view(&kd), &view(&vd), mask, scale)
                    .unwrap();
                let p = probe.to_dtype(dtype).unwrap().to_device(device).unwrap();
                let grads = y.mul(&p).unwrap().sum_all().unwrap().backward().unwrap();
                let g = |t: &Tensor| grads.get(t).unwrap().to_vec_f64().unwrap();
                [y.to_vec_f64().unwrap(), g(&qr), g(&kd), g(&vd)]
            };
            let mut got = Vec::new();
            let names = kernels_run(|| got = run(dev).to_vec());
            // Half types with a supported head dim take the tensor-core kernels.
            let tc = cuda::tensor_cores(&arch, dtype, d);
            let wg = cuda::warpgroup_attention(&arch, dtype, d);
            let by_tma = cuda::tma_attention(&arch, dtype, d);
            assert!(!wg || warpgroup);
            assert!(!by_tma || (wg && tma));
            for kernel in ["forward", "backward_dq", "backward_dkdv"] {
                let family = match (tc, wg) {
                    _ if by_tma && kernel != "backward_dkdv" => "tma_",
                    _ if cuda::tma_dkdv(&arch, dtype, d, tq) => "tma_",
                    (_, true) => "wg_",
                    (true, false) => "tc_",
                    _ => "",
                };
                let want = format!("flash_{kernel}_{family}d{d}_{}", dtype.as_str());
                assert!(names.contains(&want), "{want} not in {names:?}");
            }
            assert_eq!(got, run(dev).to_vec(), "{dtype}: two runs differ");
            let want = run(Device::Cpu);
            let tolerance = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            for (what, (g, w)) in ["out", "dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
                let err = rel_err(g, w);
                assert!(
                    err < tolerance,
                    "{dtype} (warpgroup {wg}, tma {by_tma}) b{b} h{h}/{kvh} tq{tq} tk{tk} d{d} {mask:?} {what}: {err:e}"
                );
            }
        }
        cuda::set_warpgroup_kernels(true);
        cuda::set_tma_kernels(true);
    }
    let q = randn(&[1, 1, 4, 48], &mut rng).to_device(dev).unwrap();
    let err = q
        .flash_attention(&q, &q, smith::AttnMask::default(), 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head dim 48"), "{err}");
}
/// The attention layer in bf16 on a GPU takes the fused kernel (GQA, a window) and agrees
/// with the same layer in f32 on the CPU, forward and backward.
fn attention_layer_in_bf16_uses_the_fused_kernel() {
    let _tf = tf32_lock();
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(37);
    let cfg = smith::nn::AttentionConfig {
        dim: 256,
        n_head: 4,
        n_kv_head: 2,
        bias: true,
        rope: Some((10000.0, RotaryStyle::RotateHalf)),
        window: Some(40),
        ..Default::default()
    };
    let layer =
        smith::nn::CausalSelfAttention::new(cfg, 0.05, 0.05, &mut rng, Device::Cpu).unwrap();
    let x = randn(&[2, 70, 256], &mut rng);
    let want = layer.forward(&x).unwrap().to_vec_f64().unwrap();
    let mut gpu_layer = layer.to_dtype(DType::BF16).unwrap();
    for l in [&mut gpu_layer.qkv, &mut gpu_layer.proj] {
        l.weight = l.weight.to_device(dev).unwrap();
        l.bias = l.bias.as_ref().map(|b| b.to_device(dev).unwrap());
    }
    let xg = x
        .to_dtype(DType::BF16)
        .unwrap()
        .to_device(dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let mut y = None;
    let names = kernels_run(|| y = Some(gpu_layer.forward(&xg).unwrap()));
    let y = y.unwrap();
    let arch = cuda::device(0).unwrap().arch.clone();
    let forward = if cuda::tma_attention(&arch, DType::BF16, 64) {
        "flash_forward_tma_d64_bf16"
    } else if cuda::warpgroup_attention(&arch, DType::BF16, 64) {
        "flash_forward_wg_d64_bf16"
    } else {
        "flash_forward_tc_d64_bf16"
    };
    assert!(names.iter().any(|n| n == forward), "{names:?}");
    let err = rel_err(&y.to_vec_f64().unwrap(), &want);
    assert!(err < 3e-2, "bf16 layer vs f32 CPU: {err:e}");
    let grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let gx = grads.get(&xg).unwrap().to_vec_f64().unwrap();
    assert!(gx.iter().all(|v| v.is_finite()) && gx.iter().any(|v| *v != 0.0));
}

const CPU: Device = Device::Cpu;

/// Additive `[tq, tk]` mask: 0 where query i (at position tk - tq + i) sees key j.
fn mask_of(tq: usize, tk: usize, mask: AttnMask) -> Tensor {
    let mut m = vec![0.0f64; tq * tk];
    for i in 0..tq {
        let pos = (i + tk) as i64 - tq as i64;
        for j in 0..tk {
            let after = mask.causal && j as i64 > pos;
            let before = mask.window.is_some_and(|w| (j as i64) <= pos - w as i64);
            if after || before {
                m[i * tk + j] = f64::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, &[tq, tk], CPU).unwrap()
}

/// softmax(q k^T * scale + mask) v with the key/value heads repeated for each group.
fn naive(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask, scale: f64) -> Tensor {
    let (b, h, tq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (kvh, tk) = (k.shape()[1], k.shape()[2]);
    let repeat = |t: &Tensor| {
        t.unsqueeze(2)
            .unwrap()
            .broadcast_as(&[b, kvh, h / kvh, tk, d])
            .unwrap()
            .reshape(&[b, h, tk, d])
            .unwrap()
    };
    let scores = q
        .matmul(&repeat(k).transpose(2, 3).unwrap())
        .unwrap()
        .mul_scalar(scale)
        .unwrap()
        .add(&mask_of(tq, tk, mask))
        .unwrap();
    scores.softmax(3).unwrap().matmul(&repeat(v)).unwrap()
}

struct Case {
    b: usize,
    h: usize,
    kvh: usize,
    tq: usize,
    tk: usize,
    d: usize,
    mask: AttnMask,
}

fn cases() -> Vec<Case> {
    let c = |b, h, kvh, tq, tk, d, causal, window| Case {
        b,
        h,
        kvh,
        tq,
        tk,
        d,
        mask: AttnMask { causal, window },
    };
    vec![
        c(2, 4, 4, 7, 7, 8, true, None),
        c(1, 4, 2, 13, 13, 16, false, None),
        c(2, 6, 1, 5, 19, 8, true, None), // prefill after cached keys, MQA
        c(1, 2, 2, 33, 33, 4, true, Some(5)),
        c(1, 4, 2, 9, 21, 12, true, Some(7)),
        c(2, 3, 3, 11, 6, 8, false, None), // more queries than keys, no mask
    ]
}

fn fused_attention_matches_naive_attention_and_its_gradients() {
    let mut rng = Rng::new(71);
    for case in cases() {
        let Case {
            b,
            h,
            kvh,
            tq,
            tk,
            d,
            mask,
        } = case;
        let scale = 1.0 / (d as f64).sqrt();
        let rand = |shape: &[usize], rng: &mut Rng| {
            Tensor::randn(shape, 0.0, 1.5, DType::F64, CPU, rng)
                .unwrap()
                .requires_grad()
                .unwrap()
        };
        // q is made as [B, Tq, H, D] and viewed transposed: a non-contiguous input.
        let q_raw = rand(&[b, tq, h, d], &mut rng);
        let (k, v) = (
            rand(&[b, kvh, tk, d], &mut rng),
            rand(&[b, kvh, tk, d], &mut rng),
        );
        let q = q_raw.transpose(1, 2).unwrap();
        let probe = Tensor::randn(&[b, h, tq, d], 0.0, 1.0, DType::F64, CPU, &mut rng).unwrap();
        let run = |fused: bool| {
            let y = if fused {
                q.flash_attention(&k, &v, mask, scale).unwrap()
            } else {
                naive(&q, &k, &v, mask, scale)
            };
            let grads = y
                .mul(&probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g = |t: &Tensor| grads.get(t).unwrap().to_vec_f64().unwrap();
            (y.to_vec_f64().unwrap(), g(&q_raw), g(&k), g(&v))
        };
        let (got, want) = (run(true), run(false));
        let what = format!("b{b} h{h}/{kvh} tq{tq} tk{tk} d{d} {mask:?}");
        assert_close(&got.0, &want.0, 1e-12, &format!("{what}: output"));
        assert_close(&got.1, &want.1, 1e-11, &format!("{what}: dq"));
        assert_close(&got.2, &want.2, 1e-11, &format!("{what}: dk"));
        assert_close(&got.3, &want.3, 1e-11, &format!("{what}: dv"));
    }
}

fn fused_attention_passes_finite_differences() {
    let mut rng = Rng::new(72);
    let inputs = [
        leaf(&[1, 4, 5, 3], &mut rng),
        leaf(&[1, 2, 6, 3], &mut rng),
        leaf(&[1, 2, 6, 3], &mut rng),
    ];
    for mask in [
        AttnMask::default(),
        AttnMask {
            causal: true,
            window: None,
        },
        AttnMask {
            causal: true,
            window: Some(2),
        },
    ] {
        gradcheck(&inputs, |t| t[0].flash_attention(&t[1], &t[2], mask, 0.7));
    }
}

fn queries_that_see_no_key_give_zero_and_bad_calls_are_errors() {
    let mut rng = Rng::new(73);
    let q = Tensor::randn(&[1, 2, 6, 4], 0.0, 1.0, DType::F32, CPU, &mut rng).unwrap();
    let kv = Tensor::randn(&[1, 2, 3, 4], 0.0, 1.0, DType::F32, CPU, &mut rng).unwrap();
    let causal = AttnMask {
        causal: true,
        window: None,
    };
    // Six queries at positions -3..=2 over three keys: the first three see nothing.
    let y = q.flash_attention(&kv, &kv, causal, 0.5).unwrap();
    let rows = y.to_vec_f64().unwrap();
    for head in 0..2 {
        for i in 0..6 {
            let row = &rows[(head * 6 + i) * 4..][..4];
            assert_eq!(row.iter().all(|v| *v == 0.0), i < 3, "head {head} row {i}");
        }
    }
    let err = |r: smith::Result<Tensor>| r.unwrap_err().to_string();
    // Heads that do not group, mismatched dims, a window without a causal mask, dtypes.
    let kv3 = Tensor::randn(&[1, 3, 3, 4], 0.0, 1.0, DType::F32, CPU, &mut rng).unwrap();
    assert!(err(q.flash_attention(&kv3, &kv3, causal, 0.5)).contains("multiple of KVH"));
    let kv5 = Tensor::randn(&[1, 2, 3, 5], 0.0, 1.0, DType::F32, CPU, &mut rng).unwrap();
    assert!(q.flash_attention(&kv5, &kv5, causal, 0.5).is_err());
    let windowed = AttnMask {
        causal: false,
        window: Some(2),
    };
    assert!(err(q.flash_attention(&kv, &kv, windowed, 0.5)).contains("window"));
    let kv64 = kv.to_dtype(DType::F64).unwrap();
    assert!(q.flash_attention(&kv64, &kv64, causal, 0.5).is_err());
}
