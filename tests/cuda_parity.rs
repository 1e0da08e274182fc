//! The CUDA backend against the CPU reference on fresh random inputs: every op on the GPU,
//! non-contiguous inputs, f32/f16/bf16, gradients, and a short GPT training run.
//!
//! Without a GPU these tests say so and return; with `SMITH_REQUIRE_CUDA=1` (as on the GPU
//! machine) a missing GPU is a failure.

mod common;

use smith::backend::cuda;
use smith::models::{Gpt, GptConfig};
use smith::optim::{clip_grad_norm, AdamW, AdamWConfig};
use smith::{DType, Device, Rng, RotaryStyle, Tensor};

/// GPU work in this binary runs one test at a time: the profiler and the memory counters
/// are per device, so concurrent tests would see each other's kernels and buffers.
static GPU_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Held by tests that switch TF32 (a process-wide setting) off and on.
static TF32_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tf32_lock() -> std::sync::MutexGuard<'static, ()> {
    TF32_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn gpu() -> Option<(Device, std::sync::MutexGuard<'static, ()>)> {
    if smith::device::cuda_available() {
        return Some((
            Device::Cuda(0),
            GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner()),
        ));
    }
    assert!(
        std::env::var_os("SMITH_REQUIRE_CUDA").is_none(),
        "SMITH_REQUIRE_CUDA is set but no usable GPU: {:?}",
        cuda::probe()
    );
    eprintln!(
        "NO CUDA DEVICE: GPU parity test did NOT run ({:?})",
        cuda::probe()
    );
    None
}

/// Relative error of a GPU result, which must not hold a NaN the reference lacks.
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(
        got.iter().all(|v| !v.is_nan()) || want.iter().any(|v| v.is_nan()),
        "NaN in GPU result"
    );
    common::rel_err(got, want)
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, rng).unwrap()
}

/// Runs `f` on the CPU inputs and on their GPU copies and compares the results.
fn check(
    name: &str,
    inputs: &[Tensor],
    dtype: DType,
    tolerance: f64,
    f: impl Fn(&[Tensor]) -> smith::Result<Tensor>,
) {
    let Some((dev, _gpu)) = gpu() else { return };
    let cpu_in: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            if t.dtype().is_float() {
                t.to_dtype(dtype).unwrap()
            } else {
                t.clone()
            }
        })
        .collect();
    let gpu_in: Vec<Tensor> = cpu_in.iter().map(|t| t.to_device(dev).unwrap()).collect();
    let want = f(&cpu_in).unwrap_or_else(|e| panic!("{name} {dtype} on cpu: {e}"));
    let got = f(&gpu_in).unwrap_or_else(|e| panic!("{name} {dtype} on cuda: {e}"));
    assert_eq!(got.device(), dev, "{name}: result left the GPU");
    assert_eq!(got.shape(), want.shape(), "{name}");
    assert_eq!(got.dtype(), want.dtype(), "{name}");
    let err = rel_err(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
    assert!(
        err <= tolerance,
        "{name} {dtype}: relative error {err:e} (tolerance {tolerance:e})"
    );
    eprintln!("{name} {dtype}: relative error {err:.1e}");
}

#[test]
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

#[test]
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

#[test]
fn casts_copies_and_creation() {
    let Some((dev, _gpu)) = gpu() else { return };
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
#[test]
fn packed_elementwise_paths_in_every_float_dtype() {
    let Some((dev, _gpu)) = gpu() else { return };
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
#[test]
fn grouped_strided_copies_and_concatenation() {
    let Some((dev, _gpu)) = gpu() else { return };
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

#[test]
fn reductions_over_dims() {
    let mut rng = Rng::new(4);
    let x = randn(&[6, 50, 7], &mut rng);
    for dtype in FLOATS {
        let t = tol(dtype);
        check("sum", std::slice::from_ref(&x), dtype, t, |v| {
            v[0].permute(&[2, 0, 1])?.sum(&[0, 2])
        });
        check("sum_keepdim", std::slice::from_ref(&x), dtype, t, |v| {
            v[0].sum_keepdim(&[1])
        });
        check(
            "sum leading dims",
            std::slice::from_ref(&x),
            dtype,
            t,
            |v| v[0].sum(&[0, 1]),
        );
        check("sum leading dim", std::slice::from_ref(&x), dtype, t, |v| {
            v[0].sum_keepdim(&[0])
        });
        check("mean_all", std::slice::from_ref(&x), dtype, t, |v| {
            v[0].mean_all()
        });
        check("max", std::slice::from_ref(&x), dtype, t, |v| {
            v[0].transpose(0, 1)?.max(1, false)
        });
        check("min", std::slice::from_ref(&x), dtype, t, |v| {
            v[0].min(2, true)
        });
        check("argmax", std::slice::from_ref(&x), dtype, 0.0, |v| {
            v[0].argmax(1, false)
        });
        check("argmin", std::slice::from_ref(&x), dtype, 0.0, |v| {
            v[0].t_last()?.argmin(2, false)
        });
    }
}

trait LastT {
    fn t_last(&self) -> smith::Result<Tensor>;
}
impl LastT for Tensor {
    fn t_last(&self) -> smith::Result<Tensor> {
        self.transpose(1, 2)
    }
}

#[test]
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

#[test]
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

#[test]
fn gradients_match_the_cpu() {
    let _tf32 = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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

#[test]
fn gpt_training_on_the_gpu_follows_the_cpu() {
    let _tf32 = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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

#[test]
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

#[test]
fn mixing_devices_is_an_error() {
    let Some((dev, _gpu)) = gpu() else { return };
    let cpu = Tensor::zeros(&[2], DType::F32, Device::Cpu).unwrap();
    let err = cpu
        .add(&Tensor::zeros(&[2], DType::F32, dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("device"), "{err}");
}

#[test]
fn profiler_and_memory_accounting() {
    let Some((dev, _gpu)) = gpu() else { return };
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

#[test]
fn norm_parameter_gradients_over_many_rows() {
    let Some((dev, _gpu)) = gpu() else { return };
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

#[test]
fn clipping_matches_the_cpu() {
    let Some((dev, _gpu)) = gpu() else { return };
    let mut rng = Rng::new(10);
    let values: Vec<Tensor> = [vec![300, 70], vec![70], vec![5, 5, 5]]
        .iter()
        .map(|s| randn(s, &mut rng))
        .collect();
    let run = |device: Device| -> (f64, Vec<Vec<f64>>) {
        let params: Vec<smith::nn::Param> = values
            .iter()
            .enumerate()
            .map(|(i, v)| smith::nn::Param {
                name: format!("p{i}"),
                tensor: Tensor::zeros(v.shape(), DType::F32, device)
                    .unwrap()
                    .requires_grad()
                    .unwrap(),
                decay: false,
            })
            .collect();
        let mut grads = smith::GradStore::new();
        for (p, v) in params.iter().zip(&values) {
            grads.insert(&p.tensor, v.to_device(device).unwrap());
        }
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        (
            norm,
            params
                .iter()
                .map(|p| grads.get(&p.tensor).unwrap().to_vec_f64().unwrap())
                .collect(),
        )
    };
    let ((n_cpu, g_cpu), (n_gpu, g_gpu)) = (run(Device::Cpu), run(dev));
    assert!((n_cpu - n_gpu).abs() / n_cpu < 1e-6, "{n_cpu} vs {n_gpu}");
    for (a, b) in g_gpu.iter().zip(&g_cpu) {
        assert!(rel_err(a, b) < 1e-6);
    }
}

#[test]
fn released_buffers_are_reused_and_never_stale() {
    let Some((dev, _gpu)) = gpu() else { return };
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

/// A row op of (input, weight, bias).
type RowOp = dyn Fn(&Tensor, &Tensor, &Tensor) -> smith::Result<Tensor>;

/// Input gradients of the fused row ops in every float dtype, on rows that take the
/// 16-byte-pack kernels (64, 768 wide) and rows that do not (300, 2000 wide).
#[test]
fn row_op_input_gradients_in_every_dtype() {
    let Some((dev, _gpu)) = gpu() else { return };
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

/// Multi-tensor AdamW against the CPU loop: more tensors than one launch carries (24), a
/// tensor longer than one launch's 320 chunks, lengths that are not multiples of 4, a
/// transposed gradient, a half-precision gradient, a parameter without a gradient, and
/// a parameter that is a view at an offset.
#[test]
fn multi_tensor_adamw_matches_the_cpu() {
    let Some((dev, _gpu)) = gpu() else { return };
    let mut rng = Rng::new(11);
    let mut shapes: Vec<Vec<usize>> = (0..30).map(|i| vec![1 + 37 * i]).collect();
    shapes.push(vec![320 * 65536 + 70_001]);
    shapes.push(vec![65536 * 2 + 3]);
    shapes.push(vec![33, 65]);
    let inits: Vec<Tensor> = shapes.iter().map(|s| randn(s, &mut rng)).collect();
    let grad_values: Vec<Tensor> = shapes.iter().map(|s| randn(s, &mut rng)).collect();
    let run = |device: Device| -> Vec<Vec<f64>> {
        // The last parameter is a view at an offset into a larger buffer.
        let backing = Tensor::zeros(&[2, 33, 65], DType::F32, device).unwrap();
        let params: Vec<smith::nn::Param> = inits
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let tensor = if i + 1 == inits.len() {
                    let view = backing.narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
                    view.assign(&v.to_device(device).unwrap()).unwrap();
                    view
                } else {
                    // A fresh copy: on the CPU, to_device would share `inits`' storage.
                    v.copy().unwrap().to_device(device).unwrap()
                };
                smith::nn::Param {
                    name: format!("p{i}"),
                    tensor: tensor.requires_grad().unwrap(),
                    decay: i % 2 == 0,
                }
            })
            .collect();
        let mut opt = AdamW::new(params.clone(), AdamWConfig::default()).unwrap();
        for step in 0..3 {
            let mut grads = smith::GradStore::new();
            for (i, (p, g)) in params.iter().zip(&grad_values).enumerate() {
                let g = g.affine(1.0 + step as f64, 0.1).unwrap();
                let g = match i {
                    5 => continue,
                    7 => g.to_dtype(DType::F16).unwrap(),
                    i if i + 1 == params.len() => g.t().unwrap().contiguous().unwrap().t().unwrap(),
                    _ => g,
                };
                grads.insert(&p.tensor, g.to_device(device).unwrap());
            }
            opt.step(&grads, 1e-2).unwrap();
        }
        params
            .iter()
            .map(|p| p.tensor.to_vec_f64().unwrap())
            .collect()
    };
    let (want, got) = (run(Device::Cpu), run(dev));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = rel_err(g, w);
        assert!(err < 1e-6, "parameter {i}: relative error {err:e}");
    }
    eprintln!("multi-tensor AdamW: {} parameters match the CPU", got.len());
}

/// Cross-entropy loss and logit gradients in every float dtype, on rows that take the
/// 16-byte-pack path (1000 wide) and rows that do not (999), with ignored targets.
#[test]
fn cross_entropy_gradients_in_every_dtype() {
    let Some((dev, _gpu)) = gpu() else { return };
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
#[test]
fn f32_cross_entropy_of_half_logits() {
    let Some((dev, _gpu)) = gpu() else { return };
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

/// SGD with momentum and weight decay on the GPU follows the CPU.
#[test]
fn sgd_matches_the_cpu() {
    let Some((dev, _gpu)) = gpu() else { return };
    let mut rng = Rng::new(13);
    let inits: Vec<Tensor> = [vec![40, 30], vec![30]]
        .iter()
        .map(|s| randn(s, &mut rng))
        .collect();
    let grad_values: Vec<Tensor> = inits.iter().map(|t| randn(t.shape(), &mut rng)).collect();
    let run = |device: Device| -> Vec<Vec<f64>> {
        let params: Vec<smith::nn::Param> = inits
            .iter()
            .enumerate()
            .map(|(i, v)| smith::nn::Param {
                name: format!("p{i}"),
                tensor: v
                    .copy()
                    .unwrap()
                    .to_device(device)
                    .unwrap()
                    .requires_grad()
                    .unwrap(),
                decay: i == 0,
            })
            .collect();
        let mut opt = smith::optim::Sgd::new(params.clone(), 0.9, 0.01);
        for step in 0..3 {
            let mut grads = smith::GradStore::new();
            for (p, g) in params.iter().zip(&grad_values) {
                let g = g.affine(1.0 + step as f64, 0.0).unwrap();
                grads.insert(&p.tensor, g.to_device(device).unwrap());
            }
            opt.step(&grads, 0.1).unwrap();
        }
        params
            .iter()
            .map(|p| p.tensor.to_vec_f64().unwrap())
            .collect()
    };
    let (want, got) = (run(Device::Cpu), run(dev));
    for (g, w) in got.iter().zip(&want) {
        let err = rel_err(g, w);
        assert!(err < 1e-6, "SGD on the GPU: relative error {err:e}");
    }
}

/// A linear layer with bias (one cuBLASLt call with a bias epilogue on the GPU) and its
/// three gradients, in every float dtype, against the CPU's GEMM-then-add; also through an
/// input at an odd offset, which takes the unfused path.
#[test]
fn linear_with_bias_epilogue() {
    let _tf32 = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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
#[test]
fn hf_gpt2_on_the_gpu_matches_transformers() {
    let _tf32 = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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
    let (got, _) = smith::inference::perplexity(
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
#[test]
fn gguf_models_on_the_gpu_match_transformers() {
    let _tf32 = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
    cuda::set_tf32(false);
    for name in common::GGUF_MODEL_FIXTURES {
        let (logits, ppl) = common::check_gguf_fixture(name, dev);
        eprintln!("{name} on the GPU: logits error {logits:.1e}, perplexity error {ppl:.1e}");
        assert!(logits < 1e-4, "{name}: logits error {logits:e}");
        assert!(ppl < 1e-3, "{name}: perplexity error {ppl:e}");
    }
    cuda::set_tf32(true);
}

#[test]
fn quantized_kernels_match_the_cpu() {
    // TF32 off: beyond 8 rows the product is a dequantized GEMM.
    let _tf = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
    cuda::set_tf32(false);
    let _g = smith::no_grad();
    let mut rng = Rng::new(31);
    for ty in common::QUANT_TYPES {
        // 70 rows: the last block of eight warps is partly idle.
        let (rows, cols) = (70, 3 * ty.block().0);
        let bytes = common::random_quant_rows(ty, rows, cols, &mut rng);
        let q_cpu = smith::QMatrix::from_bytes(ty, rows, cols, &bytes, Device::Cpu).unwrap();
        let q_gpu = q_cpu.to_device(dev).unwrap();
        for dtype in FLOATS {
            // Dequantization is exact in f32 (and rounds the same way in half types).
            let got = q_gpu.dequantize(dtype).unwrap();
            assert_eq!(got.device(), dev);
            assert_eq!(
                got.to_vec_f64().unwrap(),
                q_cpu.dequantize(dtype).unwrap().to_vec_f64().unwrap(),
                "{} {dtype} dequantize",
                ty.name()
            );
            let ids = Tensor::from_vec(vec![69i64, 0, 3, 3], &[4], Device::Cpu).unwrap();
            assert_eq!(
                q_gpu
                    .embedding(&ids.to_device(dev).unwrap(), dtype)
                    .unwrap()
                    .to_vec_f64()
                    .unwrap(),
                q_cpu.embedding(&ids, dtype).unwrap().to_vec_f64().unwrap(),
                "{} {dtype} embedding",
                ty.name()
            );
            // One warp per output column for up to 8 rows; a dequantized GEMM beyond.
            for m in [1, 3, 8, 9, 20] {
                let x = randn(&[cols, m], &mut rng)
                    .to_dtype(dtype)
                    .unwrap()
                    .t()
                    .unwrap();
                let want = q_cpu.linear(&x).unwrap();
                let got = q_gpu.linear(&x.to_device(dev).unwrap()).unwrap();
                assert_eq!(got.device(), dev);
                assert_eq!(got.dtype(), dtype);
                let err = rel_err(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
                let tolerance = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
                assert!(
                    err < tolerance,
                    "{} m={m} {dtype}: error {err:e}",
                    ty.name()
                );
            }
        }
        // An id outside the table reads as NaN on the GPU, never out of bounds.
        let bad = Tensor::from_vec(vec![70i64, -1], &[2], dev).unwrap();
        let rows_read = q_gpu
            .embedding(&bad, DType::F32)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        assert!(rows_read.iter().all(|v| v.is_nan()));
    }
    // A stack of mixed types writes each part into its own columns.
    let cols = 256;
    let spec = [
        (smith::io::quant::GgmlType::Q4K, 40),
        (smith::io::quant::GgmlType::Q6K, 9),
    ];
    let bytes: Vec<Vec<u8>> = spec
        .iter()
        .map(|&(ty, r)| common::random_quant_rows(ty, r, cols, &mut rng))
        .collect();
    let parts: Vec<_> = spec
        .iter()
        .zip(&bytes)
        .map(|(&(ty, r), b)| (ty, r, b.as_slice()))
        .collect();
    let q_cpu = smith::QMatrix::from_parts(cols, &parts, Device::Cpu).unwrap();
    let q_gpu = q_cpu.to_device(dev).unwrap();
    for m in [2, 12] {
        let x = randn(&[m, cols], &mut rng);
        let want = q_cpu.linear(&x).unwrap().to_vec_f64().unwrap();
        let got = q_gpu.linear(&x.to_device(dev).unwrap()).unwrap();
        let err = rel_err(&got.to_vec_f64().unwrap(), &want);
        assert!(err < 1e-5, "stack m={m}: error {err:e}");
    }
    cuda::set_tf32(true);
}

#[test]
fn decoding_attention_kernel_matches_the_cpu() {
    use smith::models::LanguageModel;
    let _tf = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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
#[test]
fn decoding_attention_matches_naive_attention_on_short_and_split_caches() {
    let _tf = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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
#[test]
fn fused_attention_matches_the_cpu() {
    let _tf = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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
#[test]
fn attention_layer_in_bf16_uses_the_fused_kernel() {
    let _tf = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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

/// Sums over more rows than a grid has blocks in y (65535 chunks of 256 rows).
#[test]
fn sums_over_tens_of_millions_of_elements_match_the_cpu() {
    let Some((dev, _gpu)) = gpu() else { return };
    let mut rng = Rng::new(36);
    let x = randn(&[17_000_001], &mut rng);
    let want = x
        .to_dtype(DType::F64)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let got = x
        .to_device(dev)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_vec_f64()
        .unwrap();
    // f32 partial sums of 17M terms of size ~1: an error far below one term.
    assert!((got[0] - want[0]).abs() < 1.0, "{got:?} vs {want:?}");
    let cols = x
        .narrow(0, 0, 16_777_216)
        .unwrap()
        .reshape(&[8_388_608, 2])
        .unwrap();
    let want = cols
        .to_dtype(DType::F64)
        .unwrap()
        .sum(&[0])
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let got = cols
        .to_device(dev)
        .unwrap()
        .sum(&[0])
        .unwrap()
        .to_vec_f64()
        .unwrap();
    common::assert_close(&got, &want, 1e-3, "column sums of 8M rows");
}

/// Every tensor of a Llama moved to `dev` (through its parameter list).
fn move_llama(m: smith::models::Llama, dev: Device) -> smith::models::Llama {
    let mut w = std::collections::HashMap::new();
    for p in m.params() {
        w.insert(p.name.clone(), p.tensor.clone());
    }
    let on_gpu = smith::models::Llama::with_init_std(m.cfg, 0.0, &mut Rng::new(0), dev)
        .unwrap()
        .to_dtype(m.embed.weight.dtype())
        .unwrap();
    smith::nn::assign_params(&on_gpu.params(), &w).unwrap();
    on_gpu
}

#[test]
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

/// Names of the kernels `f` launches on the GPU (through the profiler).
fn kernels_run(f: impl FnOnce()) -> Vec<String> {
    let _profile = smith::profile::scope();
    let _ = smith::profile::take_report().unwrap();
    f();
    let report = smith::profile::take_report().unwrap();
    report.kernels.iter().map(|k| k.name.clone()).collect()
}

#[test]
fn decoding_matrix_vector_products_match_the_cpu() {
    let _tf = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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

#[test]
fn long_row_reductions_match_the_cpu() {
    let mut rng = Rng::new(35);
    // A vocabulary-long row takes the block-per-output kernels; a transposed view too.
    let rows = randn(&[3, 50257], &mut rng);
    let cols = randn(&[9000, 2], &mut rng);
    for dtype in FLOATS {
        check(
            "argmax long rows",
            std::slice::from_ref(&rows),
            dtype,
            0.0,
            |t| t[0].argmax(1, false)?.to_dtype(DType::F64),
        );
        check(
            "argmax transposed",
            std::slice::from_ref(&cols),
            dtype,
            0.0,
            |t| t[0].t()?.argmax(1, false)?.to_dtype(DType::F64),
        );
        check(
            "max long rows",
            std::slice::from_ref(&rows),
            dtype,
            0.0,
            |t| t[0].max(1, false),
        );
        check(
            "sum long rows",
            std::slice::from_ref(&rows),
            dtype,
            tol(dtype) * 10.0,
            |t| t[0].sum(&[1]),
        );
    }
}

#[test]
fn norms_folded_into_decoding_products_match_the_cpu() {
    use smith::nn::{LayerNorm, Linear, Norm, RmsNorm};
    let _tf = tf32_lock();
    let Some((dev, _gpu)) = gpu() else { return };
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
