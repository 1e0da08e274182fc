//! Row ops: softmax, layer and RMS norms, cross-entropy, rotary embeddings, gathers and scatters, forward and backward in every float dtype.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::devices::*;
use smith::{DType, Device, Rng, RotaryStyle, Tensor};

fn main() {
    common::run_suite(vec![
        ("fused_row_ops", fused_row_ops, None),
        (
            "row_op_input_gradients_in_every_dtype",
            row_op_input_gradients_in_every_dtype,
            needs_gpu(),
        ),
        (
            "norm_parameter_gradients_over_many_rows",
            norm_parameter_gradients_over_many_rows,
            needs_gpu(),
        ),
        (
            "cross_entropy_gradients_in_every_dtype",
            cross_entropy_gradients_in_every_dtype,
            needs_gpu(),
        ),
        (
            "f32_cross_entropy_of_half_logits",
            f32_cross_entropy_of_half_logits,
            needs_gpu(),
        ),
        ("rotary_gather_scatter", rotary_gather_scatter, None),
    ]);
}

fn fused_row_ops() {
    let mut rng = Rng::new(6);
    let x = randn(&[4, 37, 300], &mut rng).affine(3.0, 0.0).unwrap();
    let w = randn(&[300], &mut rng);
    let bias = randn(&[300], &mut rng);
    let logits = randn(&[200, 1000], &mut rng).affine(4.0, 0.0).unwrap();
    let mut t: Vec<i64> = (0..200).map(|i| (i * 37 % 1000) as i64).collect();
    t[3] = -100;
    t[77] = -100;
    let targets = Tensor::from_vec(t, &[200], Device::Cpu).unwrap();
    // Rows longer than 1024 take the block-per-row kernels.
    let wide = randn(&[6, 3000], &mut rng).affine(3.0, 0.0).unwrap();
    let wide_w = randn(&[3000], &mut rng);
    for dtype in FLOATS {
        let tl = tol(dtype);
        check(
            "softmax wide rows",
            std::slice::from_ref(&wide),
            dtype,
            tl,
            |v| v[0].softmax(1),
        );
        check(
            "log_softmax wide rows",
            std::slice::from_ref(&wide),
            dtype,
            tl,
            |v| v[0].log_softmax(1),
        );
        check(
            "softmax_causal wide rows",
            std::slice::from_ref(&wide),
            dtype,
            tl,
            |v| v[0].softmax_causal(),
        );
        check(
            "layer_norm wide rows",
            &[wide.clone(), wide_w.clone()],
            dtype,
            tl,
            |v| v[0].layer_norm(Some(&v[1]), None, 1e-5),
        );
        check(
            "rms_norm wide rows",
            &[wide.clone(), wide_w.clone()],
            dtype,
            tl,
            |v| v[0].rms_norm(Some(&v[1]), 1e-6),
        );
    }
    for dtype in FLOATS {
        let tl = tol(dtype);
        check("softmax", std::slice::from_ref(&x), dtype, tl, |v| {
            v[0].softmax(2)
        });
        check("softmax dim 1", std::slice::from_ref(&x), dtype, tl, |v| {
            v[0].softmax(1)
        });
        check("log_softmax", std::slice::from_ref(&x), dtype, tl, |v| {
            v[0].log_softmax(2)
        });
        check("softmax_causal", std::slice::from_ref(&x), dtype, tl, |v| {
            v[0].narrow(2, 0, 37)?.softmax_causal()
        });
        check(
            "softmax_causal wide",
            std::slice::from_ref(&x),
            dtype,
            tl,
            |v| v[0].narrow(2, 0, 50)?.softmax_causal(),
        );
        check(
            "layer_norm",
            &[x.clone(), w.clone(), bias.clone()],
            dtype,
            tl,
            |v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5),
        );
        check(
            "layer_norm strided",
            std::slice::from_ref(&x),
            dtype,
            tl,
            |v| {
                v[0].transpose(1, 2)?
                    .narrow(1, 0, 37)?
                    .layer_norm(None, None, 1e-5)
            },
        );
        check("rms_norm", &[x.clone(), w.clone()], dtype, tl, |v| {
            v[0].rms_norm(Some(&v[1]), 1e-6)
        });
        check(
            "cross_entropy",
            &[logits.clone(), targets.clone()],
            dtype,
            tl,
            |v| v[0].cross_entropy(&v[1], -100),
        );
        check(
            "embedding",
            &[logits.clone(), targets.clone()],
            dtype,
            0.0,
            |v| Tensor::embedding(&v[1].narrow(0, 0, 3)?.abs_i()?, &v[0]),
        );
        check("cat", &[x.clone(), w.clone()], dtype, 0.0, |v| {
            Tensor::cat(
                &[
                    v[0].narrow(0, 1, 1)?.squeeze(0)?.t()?,
                    v[1].unsqueeze(0)?.narrow(1, 0, 37)?,
                ],
                0,
            )
        });
    }
}
/// A row op of (input, weight, bias).
type RowOp = dyn Fn(&Tensor, &Tensor, &Tensor) -> smith::Result<Tensor>;
/// Input gradients of the fused row ops in every float dtype, on rows that take the
/// 16-byte-pack kernels (64, 768 wide) and rows that do not (300, 2000 wide).
fn row_op_input_gradients_in_every_dtype() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(10);
    for c in [64usize, 300, 768, 2000] {
        let x = randn(&[2, 24, c], &mut rng).affine(2.0, 0.0).unwrap();
        let w = randn(&[c], &mut rng);
        let b = randn(&[c], &mut rng);
        let probe = randn(&[2, 24, c], &mut rng);
        let ops: [(&str, &RowOp); 4] = [
            ("layer_norm", &|x, w, b| {
                x.layer_norm(Some(w), Some(b), 1e-5)
            }),
            ("rms_norm", &|x, w, _| x.rms_norm(Some(w), 1e-6)),
            ("softmax_causal", &|x, _, _| x.softmax_causal()),
            ("log_softmax", &|x, _, _| x.log_softmax(2)),
        ];
        for dtype in FLOATS {
            for (name, op) in ops {
                let grad = |device: Device| -> Vec<f64> {
                    let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
                    let xd = on(&x).requires_grad().unwrap();
                    let loss = op(&xd, &on(&w), &on(&b))
                        .unwrap()
                        .mul(&on(&probe))
                        .unwrap()
                        .sum_all()
                        .unwrap();
                    let g = loss.backward().unwrap();
                    g.get(&xd).unwrap().to_vec_f64().unwrap()
                };
                let err = rel_err(&grad(dev), &grad(Device::Cpu));
                eprintln!("{name} dx, width {c}, {dtype}: relative error {err:.1e}");
                let limit = if dtype == DType::F32 { 1e-4 } else { 3e-2 };
                assert!(err < limit, "{name} dx width {c} {dtype}: {err:e}");
            }
        }
    }
}
fn norm_parameter_gradients_over_many_rows() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(9);
    let x = randn(&[3, 700, 48], &mut rng);
    let w = randn(&[48], &mut rng);
    let b = randn(&[48], &mut rng);
    let probe = randn(&[3, 700, 48], &mut rng);
    let grads = |device: Device| -> Vec<Vec<f64>> {
        let (x, w, b, probe) = (
            x.to_device(device).unwrap(),
            w.to_device(device).unwrap().requires_grad().unwrap(),
            b.to_device(device).unwrap().requires_grad().unwrap(),
            probe.to_device(device).unwrap(),
        );
        let ln = x
            .layer_norm(Some(&w), Some(&b), 1e-5)
            .unwrap()
            .mul(&probe)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = ln.backward().unwrap();
        let rms = x
            .rms_norm(Some(&w), 1e-6)
            .unwrap()
            .mul(&probe)
            .unwrap()
            .sum_all()
            .unwrap();
        let g2 = rms.backward().unwrap();
        vec![
            g.get(&w).unwrap().to_vec_f64().unwrap(),
            g.get(&b).unwrap().to_vec_f64().unwrap(),
            g2.get(&w).unwrap().to_vec_f64().unwrap(),
        ]
    };
    let (want, got) = (grads(Device::Cpu), grads(dev));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = rel_err(g, w);
        eprintln!("norm parameter gradient {i}: relative error {err:.1e}");
        assert!(
            err < 1e-5,
            "norm parameter gradient {i}: relative error {err:e}"
        );
    }
}
/// Cross-entropy loss and logit gradients in every float dtype, on rows that take the
/// 16-byte-pack path (1000 wide) and rows that do not (999), with ignored targets.
fn cross_entropy_gradients_in_every_dtype() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(12);
    for v in [1000usize, 999] {
        let logits = randn(&[3, 40, v], &mut rng).affine(4.0, 0.0).unwrap();
        let mut t: Vec<i64> = (0..120).map(|i| (i * 7919 % v) as i64).collect();
        t[5] = -100;
        t[60] = -100;
        let targets = Tensor::from_vec(t, &[3, 40], Device::Cpu).unwrap();
        for dtype in FLOATS {
            let run = |device: Device| -> (f64, Vec<f64>) {
                let x = logits
                    .to_dtype(dtype)
                    .unwrap()
                    .to_device(device)
                    .unwrap()
                    .requires_grad()
                    .unwrap();
                let loss = x
                    .cross_entropy(&targets.to_device(device).unwrap(), -100)
                    .unwrap()
                    .mul_scalar(3.0)
                    .unwrap();
                let g = loss.backward().unwrap();
                (
                    loss.to_vec_f64().unwrap()[0],
                    g.get(&x).unwrap().to_vec_f64().unwrap(),
                )
            };
            let ((l_gpu, g_gpu), (l_cpu, g_cpu)) = (run(dev), run(Device::Cpu));
            let limit = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            assert!(
                (l_gpu - l_cpu).abs() <= limit * l_cpu.abs(),
                "{v} {dtype}: loss {l_gpu} vs {l_cpu}"
            );
            let err = rel_err(&g_gpu, &g_cpu);
            eprintln!("cross-entropy width {v} {dtype}: loss {l_gpu:.5}, gradient error {err:.1e}");
            assert!(err < limit * 10.0, "{v} {dtype}: gradient error {err:e}");
        }
    }
}
/// `cross_entropy_f32` on half logits on the GPU reads them as they are (no f32 copy) and
/// gives the f32 loss and the gradient of cross-entropy over the f32-cast logits on the CPU.
fn f32_cross_entropy_of_half_logits() {
    let (dev, _gpu) = require_gpu();
    let mut rng = Rng::new(13);
    for v in [1000usize, 997] {
        let logits = randn(&[2, 30, v], &mut rng).affine(4.0, 0.0).unwrap();
        let mut t: Vec<i64> = (0..60).map(|i| (i * 7919 % v) as i64).collect();
        t[7] = -1;
        let targets = Tensor::from_vec(t, &[2, 30], Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let half = logits.to_dtype(dtype).unwrap();
            // Reference: the half logits cast to f32 on the CPU.
            let x_cpu = half.to_dtype(DType::F32).unwrap().requires_grad().unwrap();
            let l_cpu = x_cpu.cross_entropy(&targets, -1).unwrap();
            let g_cpu = l_cpu
                .backward()
                .unwrap()
                .get(&x_cpu)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let x = half.to_device(dev).unwrap().requires_grad().unwrap();
            let _profile = smith::profile::scope();
            let _ = smith::profile::take_report().unwrap();
            let loss = x
                .cross_entropy_f32(&targets.to_device(dev).unwrap(), -1)
                .unwrap();
            assert_eq!(loss.dtype(), DType::F32);
            let grads = loss.backward().unwrap();
            let g = grads.get(&x).unwrap();
            assert_eq!(g.dtype(), dtype);
            let report = smith::profile::take_report().unwrap();
            let names: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
            // The fused kernel read the half logits; nothing cast them (or their gradient).
            let fused = format!("xent_{dtype}");
            let (plain, packed) = (format!("cast_{dtype}_"), format!("cast_vec_{dtype}_"));
            let from_half = |n: &&str| n.starts_with(&plain) || n.starts_with(&packed);
            let to_half = |n: &&str| n.ends_with(&format!("_{dtype}")) && n.starts_with("cast");
            assert!(
                names.contains(&fused.as_str())
                    && !names.iter().any(from_half)
                    && !names.iter().any(to_half),
                "{names:?}"
            );
            let (l_gpu, l_ref) = (
                loss.to_vec_f64().unwrap()[0],
                l_cpu.to_vec_f64().unwrap()[0],
            );
            assert!(
                (l_gpu - l_ref).abs() <= 1e-5 * l_ref.abs(),
                "{v} {dtype}: {l_gpu} vs {l_ref}"
            );
            let err = rel_err(&g.to_vec_f64().unwrap(), &g_cpu);
            assert!(err < 1e-2, "{v} {dtype}: gradient error {err:e}");
        }
    }
}
fn rotary_gather_scatter() {
    let mut rng = Rng::new(8);
    let x = randn(&[2, 3, 16, 9], &mut rng);
    let src = randn(&[5, 7], &mut rng);
    let upd = randn(&[5, 4], &mut rng);
    let index = Tensor::from_vec(
        (0..20).map(|i| (i * 3 % 7) as i64).collect::<Vec<_>>(),
        &[5, 4],
        Device::Cpu,
    )
    .unwrap();
    for dtype in FLOATS {
        for style in [RotaryStyle::Interleaved, RotaryStyle::RotateHalf] {
            check("rotary", std::slice::from_ref(&x), dtype, tol(dtype), |v| {
                let (cos, sin) = smith::rotary_tables(0, 9, 16, 10000.0, dtype, v[0].device())?;
                v[0].transpose(2, 3)?.rotary(&cos, &sin, style)
            });
        }
        check("gather", &[src.clone(), index.clone()], dtype, 0.0, |v| {
            v[0].t()?.t()?.gather(1, &v[1])
        });
        check(
            "scatter_add",
            &[src.clone(), index.clone(), upd.clone()],
            dtype,
            tol(dtype),
            |v| v[0].scatter_add(1, &v[1], &v[2]),
        );
    }
}

trait AbsIds {
    fn abs_i(&self) -> smith::Result<Tensor>;
}
impl AbsIds for Tensor {
    /// The ids with the ignore markers replaced by 0.
    fn abs_i(&self) -> smith::Result<Tensor> {
        let v: Vec<i64> = self
            .to_vec::<i64>()?
            .into_iter()
            .map(|x| x.max(0))
            .collect();
        Tensor::from_vec(v, self.shape(), self.device())
    }
}
