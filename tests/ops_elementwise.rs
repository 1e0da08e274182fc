//! Elementwise ops and data movement: unary and binary ops, comparisons, casts, copies, packed (16-byte) paths, strided copies and concatenation.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::devices::*;
use smith::{DType, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "unary_ops_on_strided_inputs",
            unary_ops_on_strided_inputs,
            None,
        ),
        (
            "binary_ops_broadcast_and_compare",
            binary_ops_broadcast_and_compare,
            None,
        ),
        (
            "casts_copies_and_creation",
            casts_copies_and_creation,
            needs_gpu(),
        ),
        (
            "packed_elementwise_paths_in_every_float_dtype",
            packed_elementwise_paths_in_every_float_dtype,
            needs_gpu(),
        ),
        (
            "grouped_strided_copies_and_concatenation",
            grouped_strided_copies_and_concatenation,
            needs_gpu(),
        ),
    ]);
}

fn unary_ops_on_strided_inputs() {
    let mut rng = Rng::new(1);
    let x = randn(&[33, 65], &mut rng).affine(2.0, 0.0).unwrap();
    // Every unary op (`UnaryKind::ALL`), inside its domain.
    let ops: Vec<(&str, smith::UnaryOp)> = smith::UnaryKind::ALL
        .iter()
        .map(|k| (k.name(), k.example()))
        .collect();
    for dtype in FLOATS {
        for (name, op) in &ops {
            check(name, std::slice::from_ref(&x), dtype, tol(dtype), |t| {
                common::unary_input(*op, &t[0].t()?.narrow(0, 3, 60)?)?.unary(*op)
            });
        }
    }
    // Contiguous f32 with whole groups of four takes the four-wide path; offset views of it
    // (aligned and not) too.
    let y = randn(&[64, 132], &mut rng);
    for (name, op) in &ops {
        check(name, std::slice::from_ref(&y), DType::F32, 1e-5, |t| {
            common::unary_input(*op, &t[0])?.unary(*op)
        });
        check(name, std::slice::from_ref(&y), DType::F32, 1e-5, |t| {
            common::unary_input(*op, &t[0].narrow(0, 1, 8)?)?.unary(*op)
        });
        check(name, std::slice::from_ref(&y), DType::F32, 1e-5, |t| {
            common::unary_input(*op, &t[0].flatten_all()?.narrow(0, 1, 400)?)?.unary(*op)
        });
    }
    check("copy", std::slice::from_ref(&y), DType::F32, 0.0, |t| {
        t[0].narrow(0, 2, 10)?.copy()
    });
}
fn binary_ops_broadcast_and_compare() {
    let mut rng = Rng::new(2);
    let a = randn(&[7, 1, 40], &mut rng);
    let b = randn(&[40, 9], &mut rng).affine(1.0, 3.0).unwrap();
    type F = fn(&Tensor, &Tensor) -> smith::Result<Tensor>;
    let ops: Vec<(&str, F)> = vec![
        ("add", |x, y| x.add(y)),
        ("sub", |x, y| x.sub(y)),
        ("mul", |x, y| x.mul(y)),
        ("div", |x, y| x.div(y)),
        ("pow", |x, y| x.abs()?.pow(y)),
        ("maximum", |x, y| x.maximum(y)),
        ("minimum", |x, y| x.minimum(y)),
        ("where", |x, y| Tensor::where_cond(&x.gt(y)?, x, y)),
        ("cmp", |x, y| x.le(y)?.to_dtype(x.dtype())),
    ];
    for dtype in FLOATS {
        for (name, op) in &ops {
            check(name, &[a.clone(), b.clone()], dtype, tol(dtype), |t| {
                op(&t[0], &t[1].t()?.narrow(0, 2, 5)?.unsqueeze(0)?)
            });
        }
    }
}
fn casts_copies_and_creation() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(3);
    let x = randn(&[17, 23], &mut rng).affine(100.0, 0.0).unwrap();
    for from in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        for to in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::I64,
            DType::U8,
        ] {
            let src = x.to_dtype(from).unwrap().t().unwrap();
            let want = src.to_dtype(to).unwrap().to_vec_f64().unwrap();
            let got = src
                .to_device(dev)
                .unwrap()
                .to_dtype(to)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            assert_eq!(got, want, "cast {from} -> {to}");
        }
    }
    let big: Vec<i64> = vec![(1i64 << 60) + 7, -3, 5];
    let ids = Tensor::from_vec(big.clone(), &[3], dev).unwrap();
    assert_eq!(ids.contiguous().unwrap().to_vec::<i64>().unwrap(), big);
    // Zeros are zeros even in memory that held other values a moment ago.
    for _ in 0..3 {
        drop(Tensor::full(7.5, &[1 << 20], DType::F32, dev).unwrap());
        let z = Tensor::zeros(&[1 << 20], DType::F32, dev)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(z.iter().all(|&v| v == 0.0));
    }
    assert_eq!(
        Tensor::arange(5, DType::I64, dev)
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![0, 1, 2, 3, 4]
    );
}
/// The packed kernels (eight elements per 16-byte move, for contiguous aligned f32, f16
/// and bf16) against the CPU: lengths around a group of eight, aligned and unaligned
/// starts, and the profiler shows which path ran.
fn packed_elementwise_paths_in_every_float_dtype() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(31);
    let x = randn(&[5000], &mut rng);
    let y = randn(&[5000], &mut rng).affine(1.0, 3.0).unwrap();
    for dtype in FLOATS {
        let (xc, yc) = (x.to_dtype(dtype).unwrap(), y.to_dtype(dtype).unwrap());
        let (xg, yg) = (xc.to_device(dev).unwrap(), yc.to_device(dev).unwrap());
        for start in [0usize, 8, 16, 1, 3] {
            for len in [1usize, 7, 8, 9, 1000, 4099] {
                let view = |t: &Tensor| t.narrow(0, start, len).unwrap();
                let _profile = smith::profile::scope();
                let _ = smith::profile::take_report().unwrap();
                let pairs = [
                    ("gelu", view(&xc).gelu(), view(&xg).gelu()),
                    ("exp", view(&xc).exp(), view(&xg).exp()),
                    ("add", view(&xc).add(&view(&yc)), view(&xg).add(&view(&yg))),
                    ("mul", view(&xc).mul(&view(&yc)), view(&xg).mul(&view(&yg))),
                    ("div", view(&xc).div(&view(&yc)), view(&xg).div(&view(&yg))),
                ];
                for (name, want, got) in pairs {
                    let (want, got) = (want.unwrap(), got.unwrap());
                    assert_eq!(got.dtype(), dtype);
                    let err = rel_err(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
                    assert!(
                        err <= tol(dtype),
                        "{name} {dtype} start {start} len {len}: {err:e}"
                    );
                }
                for to in FLOATS {
                    let want = view(&xc).to_dtype(to).unwrap().to_vec_f64().unwrap();
                    let got = view(&xg).to_dtype(to).unwrap().to_vec_f64().unwrap();
                    assert_eq!(got, want, "cast {dtype} -> {to} start {start} len {len}");
                }
                let report = smith::profile::take_report().unwrap();
                let packed = report
                    .kernels
                    .iter()
                    .filter(|k| k.name.contains("_vec_"))
                    .count();
                let aligned = (start * dtype.size_in_bytes()).is_multiple_of(16);
                assert_eq!(
                    packed > 0,
                    aligned,
                    "{dtype} start {start}: {:?}",
                    report.kernels.iter().map(|k| &k.name).collect::<Vec<_>>()
                );
            }
        }
    }
}
/// Strided copies and concatenations in groups of eight (`assign_oct_*`) where the inner
/// dim allows, element by element elsewhere: both equal the CPU exactly.
fn grouped_strided_copies_and_concatenation() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(32);
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64] {
        for (inner, grouped) in [(64usize, true), (16, true), (12, false), (7, false)] {
            let x = randn(&[3, 5, 4, inner], &mut rng)
                .affine(50.0, 0.0)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let xg = x.to_device(dev).unwrap();
            let _profile = smith::profile::scope();
            let _ = smith::profile::take_report().unwrap();
            // A head transpose made contiguous, and a concatenation with a strided view.
            let transposed = |t: &Tensor| t.transpose(1, 2).unwrap().contiguous().unwrap();
            let joined = |t: &Tensor| {
                let view = t.narrow(1, 1, 4).unwrap().transpose(1, 2).unwrap();
                Tensor::cat(&[t.clone(), view.transpose(1, 2).unwrap()], 1).unwrap()
            };
            for op in [&transposed as &dyn Fn(&Tensor) -> Tensor, &joined] {
                assert_eq!(op(&xg).to_vec_f64().unwrap(), op(&x).to_vec_f64().unwrap());
            }
            let last = Tensor::cat(&[x.clone(), x.clone()], 3).unwrap();
            let last_gpu = Tensor::cat(&[xg.clone(), xg.clone()], 3).unwrap();
            assert_eq!(last_gpu.to_vec_f64().unwrap(), last.to_vec_f64().unwrap());
            let report = smith::profile::take_report().unwrap();
            let used = report
                .kernels
                .iter()
                .any(|k| k.name.starts_with("assign_oct"));
            assert_eq!(used, grouped, "{dtype} inner {inner}");
        }
    }
}
