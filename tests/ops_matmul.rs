//! Matrix products: plain, transposed and batched GEMMs, linear layers with fused epilogues, the decoding matrix-vector products and the norms folded into them.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::devices::*;
use smith::backend::cuda;
use smith::{DType, Device, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "matmul_plain_transposed_batched",
            matmul_plain_transposed_batched,
            None,
        ),
        (
            "few_row_products_match_the_blocked_gemm",
            few_row_products_match_the_blocked_gemm,
            None,
        ),
        (
            "linear_with_bias_epilogue",
            linear_with_bias_epilogue,
            needs_gpu(),
        ),
        (
            "fused_gelu_and_residual_epilogues_match_the_cpu",
            fused_gelu_and_residual_epilogues_match_the_cpu,
            None,
        ),
        (
            "decoding_matrix_vector_products_match_the_cpu",
            decoding_matrix_vector_products_match_the_cpu,
            needs_gpu(),
        ),
        (
            "norms_folded_into_decoding_products_match_the_cpu",
            norms_folded_into_decoding_products_match_the_cpu,
            needs_gpu(),
        ),
    ]);
}

fn matmul_plain_transposed_batched() {
    let mut rng = Rng::new(5);
    let a = randn(&[3, 1, 70, 40], &mut rng);
    let b = randn(&[2, 50, 40], &mut rng);
    let m2a = randn(&[129, 257], &mut rng);
    let m2b = randn(&[257, 65], &mut rng);
    let qkv = randn(&[3, 7, 96], &mut rng);
    let many = randn(&[3, 70, 5, 6], &mut rng);
    let _tf32 = tf32_lock();
    cuda::set_tf32(false);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let t = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
        check("matmul 2d", &[m2a.clone(), m2b.clone()], dtype, t, |v| {
            v[0].matmul(&v[1])
        });
        check(
            "matmul transposed",
            &[m2a.clone(), m2b.clone()],
            dtype,
            t,
            |v| v[1].t()?.matmul(&v[0].t()?),
        );
        check(
            "matmul batched broadcast",
            &[a.clone(), b.clone()],
            dtype,
            t,
            |v| v[0].matmul(&v[1].transpose(1, 2)?),
        );
        check("matmul sliced", &[a.clone(), b.clone()], dtype, t, |v| {
            v[0].narrow(3, 5, 30)?
                .matmul(&v[1].narrow(2, 3, 30)?.transpose(1, 2)?)
        });
        // Attention heads of a fused projection: [B, H, T, d] views whose batch dims do
        // not collapse (one call per B), and a batch of 70 x 3 that is copied instead.
        check(
            "matmul head views",
            std::slice::from_ref(&qkv),
            dtype,
            t,
            |v| {
                let heads = |i: usize| -> smith::Result<Tensor> {
                    v[0].narrow(2, 32 * i, 32)?
                        .reshape(&[3, 7, 4, 8])?
                        .transpose(1, 2)
                };
                heads(0)?.matmul(&heads(1)?.t()?)?.matmul(&heads(2)?)
            },
        );
        check(
            "matmul many outer batches",
            std::slice::from_ref(&many),
            dtype,
            t,
            |v| {
                let x = v[0].transpose(0, 1)?;
                x.matmul(&x.t()?)
            },
        );
    }
    cuda::set_tf32(true);
    check("matmul tf32", &[m2a, m2b], DType::F32, 3e-3, |v| {
        v[0].matmul(&v[1])
    });
}
/// Products of one to four rows with a transposed weight (decoding's shape: the CPU runs
/// them as column dot products) equal the same rows computed inside a taller product (the
/// blocked GEMM), on every float dtype of the CPU.
fn few_row_products_match_the_blocked_gemm() {
    let mut rng = Rng::new(8);
    let w = randn(&[67, 259], &mut rng);
    let x = randn(&[12, 259], &mut rng);
    for dtype in [DType::F64, DType::F32] {
        let (w, x) = (w.to_dtype(dtype).unwrap(), x.to_dtype(dtype).unwrap());
        let tall = x.matmul(&w.t().unwrap()).unwrap();
        for rows in 1..=4 {
            for start in [0, 5] {
                let few = x.narrow(0, start, rows).unwrap();
                let got = few.matmul(&w.t().unwrap()).unwrap();
                let want = tall.narrow(0, start, rows).unwrap();
                let err = rel_err(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
                let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
                assert!(
                    err < tol,
                    "{rows} rows at {start}, {dtype:?}: rel err {err:e}"
                );
            }
        }
    }
}

/// A linear layer with bias (one cuBLASLt call with a bias epilogue on the GPU) and its
/// three gradients, in every float dtype, against the CPU's GEMM-then-add; also through an
/// input at an odd offset, which takes the unfused path.
fn linear_with_bias_epilogue() {
    let _tf32 = tf32_lock();
    let (dev, _gpu) = require_gpu();
    cuda::set_tf32(false);
    let mut rng = Rng::new(14);
    let x = randn(&[3, 50, 96], &mut rng);
    let w = randn(&[72, 96], &mut rng).affine(0.1, 0.0).unwrap();
    let b = randn(&[72], &mut rng);
    let probe = randn(&[3, 50, 72], &mut rng);
    for dtype in FLOATS {
        for offset in [false, true] {
            let run = |device: Device| -> Vec<Vec<f64>> {
                let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
                let xd = if offset {
                    // A view one element into a larger buffer: not 256-byte aligned.
                    let flat =
                        Tensor::cat(&[on(&x).reshape(&[14400]).unwrap(), on(&b)], 0).unwrap();
                    flat.narrow(0, 1, 14400)
                        .unwrap()
                        .reshape(&[3, 50, 96])
                        .unwrap()
                } else {
                    on(&x)
                }
                .requires_grad()
                .unwrap();
                let (wd, bd) = (
                    on(&w).requires_grad().unwrap(),
                    on(&b).requires_grad().unwrap(),
                );
                let y = xd.linear(&wd, Some(&bd)).unwrap();
                let loss = y.mul(&on(&probe)).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                vec![
                    y.to_vec_f64().unwrap(),
                    g.get(&xd).unwrap().to_vec_f64().unwrap(),
                    g.get(&wd).unwrap().to_vec_f64().unwrap(),
                    g.get(&bd).unwrap().to_vec_f64().unwrap(),
                ]
            };
            let (got, want) = (run(dev), run(Device::Cpu));
            let limit = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let err = rel_err(g, w);
                eprintln!("linear {dtype} offset {offset} output/grad {i}: {err:.1e}");
                assert!(
                    err < limit,
                    "linear {dtype} offset {offset} part {i}: {err:e}"
                );
            }
        }
    }
    cuda::set_tf32(true);
}
fn fused_gelu_and_residual_epilogues_match_the_cpu() {
    let mut rng = Rng::new(33);
    let _g = smith::no_grad();
    let _tf = tf32_lock();
    cuda::set_tf32(false);
    for dtype in FLOATS {
        let tolerance = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
        for (gelu, residual) in [(true, false), (false, true), (true, true)] {
            // 5 rows (a decode-like batch) and 64 rows; 3 leading dims for the residual.
            for rows in [5, 64] {
                let inputs = [
                    randn(&[1, rows, 96], &mut rng),
                    randn(&[80, 96], &mut rng),
                    randn(&[80], &mut rng),
                    randn(&[1, rows, 80], &mut rng),
                ];
                check("linear_fused", &inputs, dtype, tolerance, |t| {
                    t[0].linear_fused(&t[1], Some(&t[2]), gelu, residual.then_some(&t[3]))
                });
            }
        }
    }
    cuda::set_tf32(true);
}
fn decoding_matrix_vector_products_match_the_cpu() {
    let _tf = tf32_lock();
    let (dev, _gpu) = require_gpu();
    cuda::set_tf32(false);
    let _g = smith::no_grad();
    let mut rng = Rng::new(34);
    for dtype in FLOATS {
        let tolerance = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
        // Short rows (one warp per output), and long ones shared by 2 or 4 warps, with an
        // output count that leaves the last block part empty.
        let shapes = [
            (128, 72, 1),
            (128, 72, 3),
            (128, 72, 8),
            (1600, 75, 3),
            (3200, 75, 1),
            (3200, 75, 3),
            (6400, 75, 1),
        ];
        for (k, n, rows) in shapes {
            let x = randn(&[rows, 1, k], &mut rng).to_dtype(dtype).unwrap();
            let w = randn(&[n, k], &mut rng).to_dtype(dtype).unwrap();
            let b = randn(&[n], &mut rng).to_dtype(dtype).unwrap();
            let r = randn(&[rows, 1, n], &mut rng).to_dtype(dtype).unwrap();
            let on = |t: &Tensor| t.to_device(dev).unwrap();
            for (bias, gelu, residual) in [
                (false, false, false),
                (true, false, false),
                (true, true, false),
                (true, false, true),
                (false, true, true),
            ] {
                let run = |x: &Tensor, w: &Tensor, b: &Tensor, r: &Tensor| {
                    let bias = bias.then_some(b);
                    if !gelu && !residual {
                        x.linear(w, bias).unwrap()
                    } else {
                        x.linear_fused(w, bias, gelu, residual.then_some(r))
                            .unwrap()
                    }
                };
                let want = run(&x, &w, &b, &r).to_vec_f64().unwrap();
                let mut got = None;
                let names = kernels_run(|| got = Some(run(&on(&x), &on(&w), &on(&b), &on(&r))));
                let got = got.unwrap();
                assert_eq!(got.device(), dev);
                let name = format!("gemv_{}", dtype.as_str());
                assert_eq!(names, vec![name], "one launch for {bias} {gelu} {residual}");
                let err = rel_err(&got.to_vec_f64().unwrap(), &want);
                assert!(
                    err < tolerance,
                    "{dtype} k={k} rows={rows} {bias} {gelu} {residual}: {err:e}"
                );
            }
        }
    }
    cuda::set_tf32(true);
}
fn norms_folded_into_decoding_products_match_the_cpu() {
    use smith::nn::{LayerNorm, Linear, Norm, RmsNorm};
    let _tf = tf32_lock();
    let (dev, _gpu) = require_gpu();
    cuda::set_tf32(false);
    let _g = smith::no_grad();
    let mut rng = Rng::new(36);
    for dtype in FLOATS {
        let tolerance = if dtype == DType::F32 { 1e-5 } else { 3e-2 };
        let on = |t: &Tensor, d: Device| t.to_dtype(dtype).unwrap().to_device(d).unwrap();
        // Short rows (one warp per output), and long ones shared by 4 warps.
        for (k, rows) in [(96, 1), (96, 5), (3200, 3)] {
            let (g, b) = (randn(&[k], &mut rng), randn(&[k], &mut rng));
            let (w, bias) = (randn(&[40, k], &mut rng), randn(&[40], &mut rng));
            // Rows with a large mean: the two-pass variance matters.
            let x = randn(&[rows, 1, k], &mut rng).add_scalar(3.0).unwrap();
            for rms in [false, true] {
                for gelu in [false, true] {
                    let layers = |d: Device| {
                        let norm = if rms {
                            Norm::Rms(RmsNorm {
                                weight: on(&g, d),
                                eps: 1e-6,
                            })
                        } else {
                            Norm::Layer(LayerNorm {
                                weight: on(&g, d),
                                bias: Some(on(&b, d)),
                                eps: 1e-5,
                            })
                        };
                        let lin = Linear {
                            weight: on(&w, d),
                            bias: Some(on(&bias, d)),
                            quant: None,
                        };
                        (norm, lin)
                    };
                    let (norm, lin) = layers(Device::Cpu);
                    let want = lin
                        .forward_normed(&on(&x, Device::Cpu), &norm, gelu)
                        .unwrap();
                    let (norm, lin) = layers(dev);
                    let mut got = None;
                    let names = kernels_run(|| {
                        got = Some(lin.forward_normed(&on(&x, dev), &norm, gelu).unwrap())
                    });
                    assert_eq!(names, vec![format!("gemv_{}", dtype.as_str())], "{names:?}");
                    let err = rel_err(
                        &got.unwrap().to_vec_f64().unwrap(),
                        &want.to_vec_f64().unwrap(),
                    );
                    assert!(
                        err < tolerance,
                        "{dtype} k={k} rows={rows} rms={rms} gelu={gelu}: {err:e}"
                    );
                }
            }
        }
    }
    cuda::set_tf32(true);
}
