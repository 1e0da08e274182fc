//! Forward results of every op against plain f64 loops, on random inputs that include
//! transposed, sliced and broadcast views, in f64, f32, f16 and bf16.

mod common;
use common::{assert_close, rand64, rel_err};
use smith::{
    causal_mask, rotary_tables, DType, Device, Rng, RotaryStyle, Tensor, UnaryKind, UnaryOp,
};

const CPU: Device = Device::Cpu;

/// Row-major values of a 2-D tensor as nested indexable data.
fn at2(v: &[f64], cols: usize, i: usize, j: usize) -> f64 {
    v[i * cols + j]
}

/// Tolerance for comparing a dtype's result with the f64 reference.
fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

const FLOATS: [DType; 4] = [DType::F64, DType::F32, DType::F16, DType::BF16];

/// Every unary op (`UnaryKind::ALL`) against its f64 definition, on a transposed view.
#[test]
fn unary_ops_match_scalar_formulas_on_strided_input() {
    let mut rng = Rng::new(1);
    let base = rand64(&[5, 7], &mut rng).affine(3.0, 0.0).unwrap();
    for &kind in UnaryKind::ALL {
        let op = kind.example();
        let x = common::unary_input(op, &base.t().unwrap()).unwrap(); // non-contiguous
        let want: Vec<f64> = x
            .to_vec_f64()
            .unwrap()
            .iter()
            .map(|&v| op.reference(v))
            .collect();
        for dtype in FLOATS {
            let got = x.to_dtype(dtype).unwrap().unary(op).unwrap();
            assert_eq!(got.dtype(), dtype);
            let err = rel_err(&got.to_vec_f64().unwrap(), &want);
            let name = kind.name();
            assert!(err < tol(dtype), "{name} {dtype}: relative error {err:e}");
        }
    }
}

/// The named methods are the ops they say, and GELU's erf agrees with an independent erf.
#[test]
fn unary_methods_are_their_ops() {
    let mut rng = Rng::new(3);
    let x = rand64(&[4, 6], &mut rng).affine(3.0, 0.0).unwrap();
    type Method = fn(&Tensor) -> smith::Result<Tensor>;
    let methods: Vec<(Method, UnaryOp)> = vec![
        (|t| t.neg(), UnaryOp::Neg),
        (|t| t.exp(), UnaryOp::Exp),
        (|t| t.tanh(), UnaryOp::Tanh),
        (|t| t.sigmoid(), UnaryOp::Sigmoid),
        (|t| t.relu(), UnaryOp::Relu),
        (|t| t.abs(), UnaryOp::Abs),
        (|t| t.gelu(), UnaryOp::GeluTanh),
        (|t| t.gelu_erf(), UnaryOp::GeluErf),
        (|t| t.silu(), UnaryOp::Silu),
        (
            |t| t.affine(2.0, -1.0),
            UnaryOp::Affine {
                mul: 2.0,
                add: -1.0,
            },
        ),
        (|t| t.abs()?.log(), UnaryOp::Log),
        (|t| t.abs()?.sqrt(), UnaryOp::Sqrt),
        (|t| t.abs()?.powf(1.5), UnaryOp::Powf(1.5)),
    ];
    for (method, op) in methods {
        let input = if op.domain() == smith::backend::Domain::Positive {
            x.abs().unwrap()
        } else {
            x.clone()
        };
        let got = method(&x).unwrap().to_vec_f64().unwrap();
        let want = input.unary(op).unwrap().to_vec_f64().unwrap();
        assert_eq!(got, want, "{}", op.kind().name());
    }
    let xs = x.to_vec_f64().unwrap();
    let gelu_e: Vec<f64> = xs
        .iter()
        .map(|&v| 0.5 * v * (1.0 + libm_erf(v / std::f64::consts::SQRT_2)))
        .collect();
    assert_close(
        &x.gelu_erf().unwrap().to_vec_f64().unwrap(),
        &gelu_e,
        1e-12,
        "gelu_erf",
    );
}

fn libm_erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse for f64; use the series / continued fraction
    // split, accurate to ~1e-15, as an independent reference.
    if x.abs() < 2.5 {
        let mut sum = x;
        let mut term = x;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x * x / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Continued fraction for erfc.
        let ax = x.abs();
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
        (1.0 - erfc) * x.signum()
    }
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let mut rng = Rng::new(2);
    let a = rand64(&[4, 1, 3], &mut rng).permute(&[2, 1, 0]).unwrap(); // [3, 1, 4] strided
    let b = rand64(&[2, 6], &mut rng)
        .narrow(1, 1, 4)
        .unwrap()
        .affine(1.0, 2.0)
        .unwrap(); // [2, 4]
    let (av, bv) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    type Case = (
        fn(&Tensor, &Tensor) -> smith::Result<Tensor>,
        fn(f64, f64) -> f64,
    );
    let cases: Vec<Case> = vec![
        (|x, y| x.add(y), |p, q| p + q),
        (|x, y| x.sub(y), |p, q| p - q),
        (|x, y| x.mul(y), |p, q| p * q),
        (|x, y| x.div(y), |p, q| p / q),
        (|x, y| x.abs()?.pow(y), |p, q| p.abs().powf(q)),
        (|x, y| x.maximum(y), f64::max),
        (|x, y| x.minimum(y), f64::min),
    ];
    for (op, reference) in cases {
        let mut want = vec![];
        for i in 0..3 {
            for j in 0..2 {
                for k in 0..4 {
                    want.push(reference(av[i * 4 + k], bv[j * 4 + k]));
                }
            }
        }
        for dtype in FLOATS {
            let got = op(&a.to_dtype(dtype).unwrap(), &b.to_dtype(dtype).unwrap()).unwrap();
            assert_eq!(got.shape(), &[3, 2, 4]);
            let err = rel_err(&got.to_vec_f64().unwrap(), &want);
            assert!(err < tol(dtype), "{dtype}: relative error {err:e}");
        }
    }
}

#[test]
fn comparisons_and_where() {
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], CPU)
        .unwrap()
        .t()
        .unwrap();
    let b = Tensor::from_vec(vec![2.0f32], &[1], CPU).unwrap();
    assert_eq!(a.gt(&b).unwrap().to_vec::<u8>().unwrap(), vec![0, 1, 0, 1]);
    assert_eq!(a.le(&b).unwrap().to_vec::<u8>().unwrap(), vec![1, 0, 1, 0]);
    assert_eq!(a.eq(&b).unwrap().to_vec::<u8>().unwrap(), vec![0, 0, 1, 0]);
    assert_eq!(a.ne(&b).unwrap().to_vec::<u8>().unwrap(), vec![1, 1, 0, 1]);
    assert_eq!(a.lt(&b).unwrap().to_vec::<u8>().unwrap(), vec![1, 0, 0, 0]);
    assert_eq!(a.ge(&b).unwrap().to_vec::<u8>().unwrap(), vec![0, 1, 1, 1]);
    let picked = Tensor::where_cond(&a.gt(&b).unwrap(), &a, &a.neg().unwrap()).unwrap();
    assert_eq!(picked.to_vec::<f32>().unwrap(), vec![-1.0, 3.0, -2.0, 4.0]);
    let masked = Tensor::ones(&[3, 3], DType::F32, CPU)
        .unwrap()
        .masked_fill(&causal_mask(3, CPU).unwrap(), 0.0)
        .unwrap();
    assert_eq!(
        masked.to_vec::<f32>().unwrap(),
        vec![1., 0., 0., 1., 1., 0., 1., 1., 1.]
    );
}

#[test]
fn reductions_over_dims_of_a_permuted_tensor() {
    let mut rng = Rng::new(3);
    let x = rand64(&[3, 4, 5], &mut rng).permute(&[1, 2, 0]).unwrap(); // [4, 5, 3]
    let v = x.to_vec_f64().unwrap();
    let idx = |i: usize, j: usize, k: usize| v[(i * 5 + j) * 3 + k];
    let mut sum = vec![0.0; 5];
    let mut max = vec![f64::NEG_INFINITY; 5];
    for j in 0..5 {
        for i in 0..4 {
            for k in 0..3 {
                sum[j] += idx(i, j, k);
                max[j] = max[j].max(idx(i, j, k));
            }
        }
    }
    for dtype in FLOATS {
        let xt = x.to_dtype(dtype).unwrap();
        let s = xt.sum(&[0, 2]).unwrap();
        assert_eq!(s.shape(), &[5]);
        assert!(rel_err(&s.to_vec_f64().unwrap(), &sum) < tol(dtype));
        let m = xt.sum_keepdim(&[2, 0]).unwrap();
        assert_eq!(m.shape(), &[1, 5, 1]);
        let mean = xt.mean(&[0, 2]).unwrap().to_vec_f64().unwrap();
        let want_mean: Vec<f64> = sum.iter().map(|s| s / 12.0).collect();
        assert!(rel_err(&mean, &want_mean) < tol(dtype));
    }
    let mx = x
        .permute(&[1, 0, 2])
        .unwrap()
        .reshape(&[5, 12])
        .unwrap()
        .max(1, false)
        .unwrap();
    assert_close(&mx.to_vec_f64().unwrap(), &max, 1e-12, "max");
    let am = x
        .permute(&[1, 0, 2])
        .unwrap()
        .reshape(&[5, 12])
        .unwrap()
        .argmax(1, false)
        .unwrap();
    let rows = x
        .permute(&[1, 0, 2])
        .unwrap()
        .reshape(&[5, 12])
        .unwrap()
        .to_vec_f64()
        .unwrap();
    for (j, &a) in am.to_vec::<i64>().unwrap().iter().enumerate() {
        assert_eq!(rows[j * 12 + a as usize], max[j]);
    }
    let mn = Tensor::from_vec(vec![3.0f32, -1.0, 2.0, -1.0], &[2, 2], CPU).unwrap();
    assert_eq!(
        mn.min(1, true).unwrap().to_vec::<f32>().unwrap(),
        vec![-1.0, -1.0]
    );
    assert_eq!(
        mn.argmin(0, false).unwrap().to_vec::<i64>().unwrap(),
        vec![1, 0]
    );
}

fn naive_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    out
}

#[test]
fn matmul_matches_naive_loops_with_views_and_batches() {
    let mut rng = Rng::new(4);
    // Large enough to take the parallel row-split path; both operands transposed views.
    let (m, k, n) = (67, 129, 70);
    let a = rand64(&[k, m], &mut rng).t().unwrap();
    let b = rand64(&[n, k], &mut rng).t().unwrap();
    let want = naive_matmul(&a.to_vec_f64().unwrap(), &b.to_vec_f64().unwrap(), m, k, n);
    for dtype in FLOATS {
        let got = a
            .to_dtype(dtype)
            .unwrap()
            .matmul(&b.to_dtype(dtype).unwrap())
            .unwrap();
        let err = rel_err(&got.to_vec_f64().unwrap(), &want);
        assert!(err < tol(dtype), "{dtype}: {err:e}");
    }
    // Batched, with a broadcast batch dim and a sliced operand.
    let a = rand64(&[3, 1, 4, 5], &mut rng);
    let b = rand64(&[2, 5, 8], &mut rng).narrow(2, 2, 6).unwrap();
    let got = a.matmul(&b).unwrap();
    assert_eq!(got.shape(), &[3, 2, 4, 6]);
    let got = got.to_vec_f64().unwrap();
    for i in 0..3 {
        for j in 0..2 {
            let ai = a
                .narrow(0, i, 1)
                .unwrap()
                .reshape(&[4, 5])
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let bj = b
                .narrow(0, j, 1)
                .unwrap()
                .reshape(&[5, 6])
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let want = naive_matmul(&ai, &bj, 4, 5, 6);
            let off = (i * 2 + j) * 24;
            assert_close(&got[off..off + 24], &want, 1e-12, "batched matmul");
        }
    }
    let bad = Tensor::zeros(&[2, 3], DType::F32, CPU)
        .unwrap()
        .matmul(&Tensor::zeros(&[4, 2], DType::F32, CPU).unwrap());
    let msg = bad.unwrap_err().to_string();
    assert!(
        msg.contains("matmul") && msg.contains("[2, 3]") && msg.contains("[4, 2]"),
        "{msg}"
    );
}

#[test]
fn softmax_and_log_softmax_match_naive() {
    let mut rng = Rng::new(5);
    let x = rand64(&[6, 4], &mut rng)
        .affine(10.0, 0.0)
        .unwrap()
        .t()
        .unwrap(); // [4, 6]
    let v = x.to_vec_f64().unwrap();
    let mut sm = vec![0.0; 24];
    let mut lsm = vec![0.0; 24];
    for i in 0..4 {
        let row = &v[i * 6..(i + 1) * 6];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|r| (r - m).exp()).sum();
        for j in 0..6 {
            sm[i * 6 + j] = (row[j] - m).exp() / z;
            lsm[i * 6 + j] = row[j] - m - z.ln();
        }
    }
    for dtype in FLOATS {
        let xt = x.to_dtype(dtype).unwrap();
        assert!(rel_err(&xt.softmax(1).unwrap().to_vec_f64().unwrap(), &sm) < tol(dtype));
        assert!(rel_err(&xt.log_softmax(1).unwrap().to_vec_f64().unwrap(), &lsm) < tol(dtype));
    }
    // The fused causal softmax equals masked_fill(-inf) then softmax, with exact zeros.
    let scores = rand64(&[2, 5, 5], &mut rng).transpose(1, 2).unwrap();
    let fused = scores.softmax_causal().unwrap().to_vec_f64().unwrap();
    let masked = scores
        .masked_fill(&causal_mask(5, CPU).unwrap(), f64::NEG_INFINITY)
        .unwrap();
    assert_close(
        &fused,
        &masked.softmax(2).unwrap().to_vec_f64().unwrap(),
        1e-12,
        "softmax_causal",
    );
    assert_eq!(fused[1], 0.0);
    // More keys than queries: query q sees keys 0..=q + 2.
    let wide = rand64(&[3, 5], &mut rng)
        .softmax_causal()
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert!(wide[2] > 0.0 && wide[3] == 0.0 && wide[8] > 0.0 && wide[9] == 0.0 && wide[14] > 0.0);
    // Softmax over dim 0 equals softmax of the transpose over dim 1.
    let d0 = x
        .t()
        .unwrap()
        .softmax(0)
        .unwrap()
        .t()
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert_close(&d0, &sm, 1e-12, "softmax dim 0");
    // Huge logits do not overflow.
    let big = Tensor::from_vec(vec![1000.0f32, 1000.0], &[1, 2], CPU)
        .unwrap()
        .softmax(1)
        .unwrap();
    assert_eq!(big.to_vec::<f32>().unwrap(), vec![0.5, 0.5]);
}

#[test]
fn norms_match_naive() {
    let mut rng = Rng::new(6);
    let x = rand64(&[8, 5], &mut rng)
        .t()
        .unwrap()
        .narrow(1, 1, 6)
        .unwrap(); // [5, 6] strided
    let w = rand64(&[6], &mut rng);
    let b = rand64(&[6], &mut rng);
    let (v, wv, bv) = (
        x.to_vec_f64().unwrap(),
        w.to_vec_f64().unwrap(),
        b.to_vec_f64().unwrap(),
    );
    let mut ln = vec![0.0; 30];
    let mut rms = vec![0.0; 30];
    for i in 0..5 {
        let row = &v[i * 6..(i + 1) * 6];
        let mean = row.iter().sum::<f64>() / 6.0;
        let var = row.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / 6.0;
        let ms = row.iter().map(|r| r * r).sum::<f64>() / 6.0;
        for j in 0..6 {
            ln[i * 6 + j] = (row[j] - mean) / (var + 1e-5).sqrt() * wv[j] + bv[j];
            rms[i * 6 + j] = row[j] / (ms + 1e-6).sqrt() * wv[j];
        }
    }
    for dtype in FLOATS {
        let (xt, wt, bt) = (
            x.to_dtype(dtype).unwrap(),
            w.to_dtype(dtype).unwrap(),
            b.to_dtype(dtype).unwrap(),
        );
        let got = xt
            .layer_norm(Some(&wt), Some(&bt), 1e-5)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        assert!(rel_err(&got, &ln) < tol(dtype), "layer_norm {dtype}");
        let got = xt.rms_norm(Some(&wt), 1e-6).unwrap().to_vec_f64().unwrap();
        assert!(rel_err(&got, &rms) < tol(dtype), "rms_norm {dtype}");
    }
    let err = x
        .layer_norm(
            Some(&Tensor::ones(&[5], DType::F64, CPU).unwrap()),
            None,
            1e-5,
        )
        .unwrap_err();
    assert!(err.to_string().contains("layer_norm"), "{err}");
}

#[test]
fn cross_entropy_matches_naive_and_ignores_index() {
    let mut rng = Rng::new(7);
    let logits = rand64(&[7, 5], &mut rng)
        .affine(4.0, 0.0)
        .unwrap()
        .t()
        .unwrap(); // [5, 7]
    let targets = vec![3i64, -1, 0, 6, 2];
    let v = logits.to_vec_f64().unwrap();
    let mut total = 0.0;
    for (i, &t) in targets.iter().enumerate() {
        if t == -1 {
            continue;
        }
        let row = &v[i * 7..(i + 1) * 7];
        let lse = row.iter().map(|r| r.exp()).sum::<f64>().ln();
        total += lse - row[t as usize];
    }
    let want = total / 4.0;
    let tt = Tensor::from_vec(targets, &[5], CPU).unwrap();
    for dtype in FLOATS {
        let got = logits
            .to_dtype(dtype)
            .unwrap()
            .cross_entropy(&tt, -1)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(
            (got - want).abs() < tol(dtype) * want.abs(),
            "{dtype}: {got} vs {want}"
        );
    }
    let out_of_range = Tensor::from_vec(vec![9i64, 0, 0, 0, 0], &[5], CPU).unwrap();
    assert!(logits
        .cross_entropy(&out_of_range, -1)
        .unwrap_err()
        .to_string()
        .contains("target 9"));
}

#[test]
fn indexing_matches_naive() {
    let mut rng = Rng::new(8);
    let w = rand64(&[6, 4], &mut rng);
    let wv = w.to_vec_f64().unwrap();
    let ids = Tensor::from_vec(vec![5i64, 0, 5, 2], &[2, 2], CPU).unwrap();
    let e = Tensor::embedding(&ids, &w).unwrap();
    assert_eq!(e.shape(), &[2, 2, 4]);
    let want: Vec<f64> = [5, 0, 5, 2]
        .iter()
        .flat_map(|&r| wv[r * 4..(r + 1) * 4].to_vec())
        .collect();
    assert_close(&e.to_vec_f64().unwrap(), &want, 0.0, "embedding");
    // index_select along dim 1 of a transposed view.
    let cols = Tensor::from_vec(vec![3u32, 1], &[2], CPU).unwrap();
    let sel = w.t().unwrap().index_select(1, &cols).unwrap(); // [4, 2]
    let want: Vec<f64> = (0..4)
        .flat_map(|i| vec![at2(&wv, 4, 3, i), at2(&wv, 4, 1, i)])
        .collect();
    assert_close(&sel.to_vec_f64().unwrap(), &want, 0.0, "index_select");
    // gather / scatter_add along dim 1.
    let src = Tensor::from_vec(vec![1.0f32, 2., 3., 4., 5., 6.], &[2, 3], CPU).unwrap();
    let index = Tensor::from_vec(vec![2i64, 0, 1, 1], &[2, 2], CPU).unwrap();
    assert_eq!(
        src.gather(1, &index).unwrap().to_vec::<f32>().unwrap(),
        vec![3., 1., 5., 5.]
    );
    let add = Tensor::ones(&[2, 2], DType::F32, CPU).unwrap();
    let out = src.scatter_add(1, &index, &add).unwrap();
    assert_eq!(out.to_vec::<f32>().unwrap(), vec![2., 2., 4., 4., 7., 6.]);
    let bad = Tensor::from_vec(vec![7i64], &[1], CPU).unwrap();
    assert!(w
        .index_select(0, &bad)
        .unwrap_err()
        .to_string()
        .contains("index 7"));
}

#[test]
fn cat_stack_split_and_views() {
    let a = Tensor::arange(6, DType::F32, CPU)
        .unwrap()
        .reshape(&[2, 3])
        .unwrap();
    let b = Tensor::arange(6, DType::F32, CPU)
        .unwrap()
        .affine(1.0, 10.0)
        .unwrap()
        .reshape(&[3, 2])
        .unwrap()
        .t()
        .unwrap();
    let c = Tensor::cat(&[a.clone(), b.clone()], 1).unwrap();
    assert_eq!(
        c.to_vec::<f32>().unwrap(),
        vec![0., 1., 2., 10., 12., 14., 3., 4., 5., 11., 13., 15.]
    );
    let r = Tensor::cat(&[a.clone(), b.clone()], 0).unwrap();
    assert_eq!(r.shape(), &[4, 3]);
    let s = Tensor::stack(&[a.clone(), b.clone()], 0).unwrap();
    assert_eq!(s.shape(), &[2, 2, 3]);
    assert_eq!(
        s.narrow(0, 1, 1).unwrap().to_vec::<f32>().unwrap(),
        b.to_vec::<f32>().unwrap()
    );
    let parts = c.split(&[2, 4], 1).unwrap();
    assert_eq!(
        parts[1].to_vec::<f32>().unwrap(),
        vec![2., 10., 12., 14., 5., 11., 13., 15.]
    );
    // Reshape of a transposed view copies: values follow the logical order.
    let t = a.t().unwrap().reshape(&[6]).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![0., 3., 1., 4., 2., 5.]);
    // Reshape of a contiguous tensor is a view sharing storage.
    assert!(a.reshape(&[3, 2]).unwrap().shares_storage_with(&a));
    assert!(a.t().unwrap().shares_storage_with(&a));
    let e = Tensor::cat(
        &[a.clone(), Tensor::zeros(&[2, 2], DType::F32, CPU).unwrap()],
        0,
    );
    assert!(e.unwrap_err().to_string().contains("cat"));
    let bc = Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1], CPU)
        .unwrap()
        .broadcast_as(&[2, 3])
        .unwrap();
    assert_eq!(bc.to_vec::<f32>().unwrap(), vec![1., 1., 1., 2., 2., 2.]);
    assert_eq!(
        bc.contiguous().unwrap().to_vec::<f32>().unwrap(),
        bc.to_vec::<f32>().unwrap()
    );
}

#[test]
fn rotary_matches_naive_in_both_layouts() {
    let mut rng = Rng::new(9);
    let (t, d) = (3, 8);
    let x = rand64(&[2, d, t], &mut rng).transpose(1, 2).unwrap(); // [2, T, D] strided
    let (cos, sin) = rotary_tables(0, t, d, 10000.0, DType::F64, CPU).unwrap();
    let v = x.to_vec_f64().unwrap();
    for style in [RotaryStyle::Interleaved, RotaryStyle::RotateHalf] {
        let mut want = v.clone();
        for b in 0..2 {
            for p in 0..t {
                for i in 0..d / 2 {
                    let theta = p as f64 * 10000f64.powf(-(2.0 * i as f64) / d as f64);
                    let (ia, ib) = match style {
                        RotaryStyle::Interleaved => (2 * i, 2 * i + 1),
                        RotaryStyle::RotateHalf => (i, i + d / 2),
                    };
                    let base = (b * t + p) * d;
                    let (x0, x1) = (v[base + ia], v[base + ib]);
                    want[base + ia] = x0 * theta.cos() - x1 * theta.sin();
                    want[base + ib] = x0 * theta.sin() + x1 * theta.cos();
                }
            }
        }
        let got = x.rotary(&cos, &sin, style).unwrap().to_vec_f64().unwrap();
        assert_close(&got, &want, 1e-12, "rotary");
    }
}

#[test]
fn creation_and_randomness_are_seeded() {
    let a = Tensor::randn(&[1000], 0.0, 1.0, DType::F32, CPU, &mut Rng::new(3)).unwrap();
    let b = Tensor::randn(&[1000], 0.0, 1.0, DType::F32, CPU, &mut Rng::new(3)).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let v = a.to_vec_f64().unwrap();
    let mean = v.iter().sum::<f64>() / 1000.0;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 1000.0).sqrt();
    assert!(
        mean.abs() < 0.1 && (std - 1.0).abs() < 0.1,
        "mean {mean} std {std}"
    );
    let u = Tensor::rand(&[1000], 2.0, 3.0, DType::F64, CPU, &mut Rng::new(4))
        .unwrap()
        .to_vec_f64()
        .unwrap();
    assert!(u.iter().all(|&x| (2.0..3.0).contains(&x)));
    assert_eq!(
        Tensor::arange(4, DType::I64, CPU)
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        Tensor::arange_step(1.0, 2.0, 0.25, DType::F32, CPU)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![1.0, 1.25, 1.5, 1.75]
    );
    assert_eq!(
        Tensor::full(2.5, &[2], DType::BF16, CPU)
            .unwrap()
            .to_vec_f64()
            .unwrap(),
        vec![2.5, 2.5]
    );
    assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3], CPU).is_err());
    if !smith::device::cuda_available() {
        assert!(Tensor::zeros(&[2], DType::F32, Device::Cuda(0)).is_err());
    }
    assert!(Tensor::zeros(&[2], DType::F32, Device::Cuda(999)).is_err());
}

#[test]
fn casts_round_trip_and_round_correctly() {
    let x = Tensor::from_vec(vec![1.0f32, -2.5, 65504.0, 1e-3], &[4], CPU).unwrap();
    let h = x.to_dtype(DType::F16).unwrap();
    assert_eq!(h.dtype(), DType::F16);
    assert_eq!(
        h.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap()[..3],
        [1.0, -2.5, 65504.0]
    );
    let bf = x.to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap();
    assert!((bf[3] - 1e-3).abs() < 1e-5);
    let i = Tensor::from_vec(vec![2.7f64, -1.2], &[2], CPU)
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap();
    assert_eq!(i.to_vec::<i64>().unwrap(), vec![2, -1]);
}

#[test]
fn display_is_readable_and_summarised() {
    let t = Tensor::arange(6, DType::F32, CPU)
        .unwrap()
        .reshape(&[2, 3])
        .unwrap();
    let s = format!("{t}");
    assert!(s.contains("[[0.0000, 1.0000, 2.0000],"), "{s}");
    assert!(s.contains("shape=[2, 3], dtype=f32"), "{s}");
    let long = format!("{}", Tensor::arange(100, DType::I64, CPU).unwrap());
    assert!(long.contains("0, 1, 2, ..., 97, 98, 99"), "{long}");
}

#[test]
fn errors_name_the_op_and_shapes() {
    let a = Tensor::zeros(&[2, 3], DType::F32, CPU).unwrap();
    let b = Tensor::zeros(&[4], DType::F32, CPU).unwrap();
    let msg = a.add(&b).unwrap_err().to_string();
    assert!(
        msg.contains("add") && msg.contains("[2, 3]") && msg.contains("[4]"),
        "{msg}"
    );
    let msg = a.reshape(&[4]).unwrap_err().to_string();
    assert!(msg.contains("reshape"), "{msg}");
    let msg = a
        .add(&a.to_dtype(DType::F64).unwrap())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("dtype"), "{msg}");
    assert!(a.narrow(1, 2, 5).is_err());
    assert!(a.transpose(0, 5).is_err());
    assert!(a.softmax(3).is_err());
    assert!(a.permute(&[0, 0]).is_err());
}

/// Rounding to f16 and bf16 is to nearest-even on every path: from f32 (including values
/// whose only sticky bits are the lowest mantissa bits) and from f64 values next to a tie.
#[test]
fn half_rounding_is_nearest_even() {
    use half::{bf16, f16};
    use smith::WithDType;
    // 0xbfa08005 lies just above the tie between two bf16 values: it rounds away from zero.
    let x = f32::from_bits(0xbfa0_8005);
    assert_eq!(<bf16 as WithDType>::from_f64(x as f64).to_bits(), 0xbfa1);
    let t = Tensor::from_vec(vec![x], &[1], Device::Cpu).unwrap();
    let b = t.to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap()[0];
    assert_eq!(b, bf16::from_bits(0xbfa1).to_f64());
    // Every f32 (a sweep of bit patterns) rounds as the direct f32 conversion does.
    let mut rng = Rng::new(5);
    for _ in 0..200_000 {
        let f = f32::from_bits(rng.next_u64() as u32);
        if !f.is_finite() {
            continue;
        }
        let v = f as f64;
        assert_eq!(
            <bf16 as WithDType>::from_f64(v).to_bits(),
            bf16::from_f32(f).to_bits(),
            "{f:e}"
        );
        assert_eq!(
            <f16 as WithDType>::from_f64(v).to_bits(),
            f16::from_f32(f).to_bits(),
            "{f:e}"
        );
    }
    // f64 values a hair off a tie go to the nearer side; the exact tie goes to even.
    let lo = bf16::from_bits(0x3fa0).to_f64();
    let hi = bf16::from_bits(0x3fa1).to_f64();
    let tie = (lo + hi) / 2.0;
    assert_eq!(<bf16 as WithDType>::from_f64(tie).to_bits(), 0x3fa0);
    assert_eq!(<bf16 as WithDType>::from_f64(tie + 1e-12).to_bits(), 0x3fa1);
    assert_eq!(<bf16 as WithDType>::from_f64(tie - 1e-12).to_bits(), 0x3fa0);
    assert_eq!(
        <bf16 as WithDType>::from_f64(-tie - 1e-12).to_bits(),
        0xbfa1
    );
    let lo = f16::from_bits(0x3c00).to_f64();
    let tie = lo + f16::EPSILON.to_f64() / 2.0;
    assert_eq!(<f16 as WithDType>::from_f64(tie).to_bits(), 0x3c00);
    assert_eq!(<f16 as WithDType>::from_f64(tie + 1e-12).to_bits(), 0x3c01);
    // f16 subnormals too.
    let sub = f16::from_bits(0x0001).to_f64();
    assert_eq!(<f16 as WithDType>::from_f64(sub * 1.5).to_bits(), 0x0002);
    assert_eq!(
        <f16 as WithDType>::from_f64(sub * 1.5 - 1e-20).to_bits(),
        0x0001
    );
}

/// `cross_entropy_f32` gives an f32 loss: on the CPU exactly the loss of the logits cast
/// to f32, for half and f32 logits alike, with the gradient in the logits' dtype.
#[test]
fn f32_cross_entropy_on_the_cpu_casts() {
    let mut rng = Rng::new(8);
    let logits = Tensor::randn(&[6, 50], 0.0, 3.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let targets = Tensor::from_vec(
        (0..6).map(|i| i * 7 % 50).collect::<Vec<i64>>(),
        &[6],
        Device::Cpu,
    )
    .unwrap();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let x = logits.to_dtype(dtype).unwrap().requires_grad().unwrap();
        let loss = x.cross_entropy_f32(&targets, -1).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        let want = x
            .detach()
            .to_dtype(DType::F32)
            .unwrap()
            .cross_entropy(&targets, -1)
            .unwrap();
        assert_eq!(loss.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
        let g = loss.backward().unwrap();
        assert_eq!(g.get(&x).unwrap().dtype(), dtype);
    }
}
