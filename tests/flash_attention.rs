//! Fused attention on the CPU against naive attention (scores, additive mask, softmax,
//! weighted values) computed in f64 with the separately tested ops, forward and all three
//! gradients, on random shapes: odd lengths, query and key lengths that differ, GQA and
//! MQA, windows, causal and not, non-contiguous inputs; and finite differences.

mod common;

use common::{assert_close, gradcheck, leaf};
use smith::{AttnMask, DType, Device, Rng, Tensor};

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

#[test]
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

#[test]
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

#[test]
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
