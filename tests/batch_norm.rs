//! BatchNorm2d: training mode against the definition in f64 (batch mean, biased variance,
//! running statistics with the unbiased variance and momentum 0.1 over several steps),
//! evaluation mode, gradients in training mode against finite differences, every float
//! dtype on every device (`check`), the fused passes over channels-last inputs against the
//! composed path (outputs, running statistics, gradients, evaluation mode; GPU against
//! CPU), folding into the convolution before it, bad shapes.

mod common;

use common::devices::*;
use common::{assert_close, gradcheck, leaf};
use smith::nn::BatchNorm2d;
use smith::{Conv2dSpec, DType, Device, Padding2d, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "training_mode_matches_the_definition",
            training_mode_matches_the_definition,
            None,
        ),
        (
            "training_gradients_pass_finite_differences",
            training_gradients_pass_finite_differences,
            None,
        ),
        (
            "batch_norm_in_every_dtype_on_every_device",
            batch_norm_in_every_dtype_on_every_device,
            None,
        ),
        (
            "fused_channels_last_passes_match_the_composed_ones",
            fused_channels_last_passes_match_the_composed_ones,
            None,
        ),
        (
            "folding_into_a_conv_gives_conv_then_bn",
            folding_into_a_conv_gives_conv_then_bn,
            None,
        ),
        (
            "bad_batch_norm_inputs_are_errors",
            bad_batch_norm_inputs_are_errors,
            None,
        ),
    ]);
}

/// Per-channel (mean, biased variance) of `[n, c, h, w]` values.
fn stats(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<(f64, f64)> {
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|b| (0..h * w).map(move |i| x[(b * c + ch) * h * w + i]))
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64;
            (mean, var)
        })
        .collect()
}

fn normalised(
    x: &[f64],
    shape: [usize; 4],
    st: &[(f64, f64)],
    g: &[f64],
    b: &[f64],
    eps: f64,
) -> Vec<f64> {
    let [_, c, h, w] = shape;
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / (h * w)) % c;
            (v - st[ch].0) / (st[ch].1 + eps).sqrt() * g[ch] + b[ch]
        })
        .collect()
}

fn training_mode_matches_the_definition() {
    let mut rng = Rng::new(41);
    let shape = [3, 4, 5, 6];
    let mut bn = BatchNorm2d::new(4, Device::Cpu).unwrap();
    let g: Vec<f64> = (0..4).map(|_| 0.5 + rng.uniform()).collect();
    let b: Vec<f64> = (0..4).map(|_| rng.uniform() - 0.5).collect();
    bn.weight
        .as_ref()
        .unwrap()
        .assign(
            &Tensor::from_vec(g.clone(), &[4], Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap();
    bn.bias
        .as_ref()
        .unwrap()
        .assign(
            &Tensor::from_vec(b.clone(), &[4], Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap(),
        )
        .unwrap();
    let (mut rm, mut rv) = (vec![0.0; 4], vec![1.0; 4]);
    let count = (shape[0] * shape[2] * shape[3]) as f64;
    for step in 0..3 {
        // Channel means and scales that differ, so the statistics matter.
        let x = randn(&shape, &mut rng)
            .affine(2.0, 0.5 * step as f64)
            .unwrap();
        let xv: Vec<f64> = x.to_vec_f64().unwrap();
        let st = stats(&xv, shape);
        let y = bn.forward_train(&x).unwrap();
        assert_close(
            &y.to_vec_f64().unwrap(),
            &normalised(&xv, shape, &st, &g, &b, 1e-5),
            1e-5,
            "train",
        );
        for ch in 0..4 {
            rm[ch] = 0.9 * rm[ch] + 0.1 * st[ch].0;
            rv[ch] = 0.9 * rv[ch] + 0.1 * st[ch].1 * count / (count - 1.0);
        }
        assert_close(
            &bn.running_mean.to_vec_f64().unwrap(),
            &rm,
            1e-6,
            "running mean",
        );
        assert_close(
            &bn.running_var.to_vec_f64().unwrap(),
            &rv,
            1e-6,
            "running var",
        );
    }
    assert_eq!(bn.num_batches_tracked, 3);
    let x = randn(&shape, &mut rng);
    let xv = x.to_vec_f64().unwrap();
    let running: Vec<(f64, f64)> = rm.iter().zip(&rv).map(|(&m, &v)| (m, v)).collect();
    let y = bn.forward_eval(&x).unwrap();
    assert_close(
        &y.to_vec_f64().unwrap(),
        &normalised(&xv, shape, &running, &g, &b, 1e-5),
        1e-5,
        "eval",
    );
    let names: Vec<String> = bn
        .buffers("bn1")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked"
        ]
    );
}

fn training_gradients_pass_finite_differences() {
    let mut rng = Rng::new(42);
    let inputs = [
        leaf(&[2, 3, 3, 4], &mut rng),
        leaf(&[3], &mut rng),
        leaf(&[3], &mut rng),
    ];
    gradcheck(&inputs, |t| {
        let mut bn = BatchNorm2d::new(3, Device::Cpu)?;
        // f64 parameters, so the whole check runs in f64.
        bn.weight = Some(t[1].clone());
        bn.bias = Some(t[2].clone());
        bn.running_mean = bn.running_mean.to_dtype(DType::F64)?;
        bn.running_var = bn.running_var.to_dtype(DType::F64)?;
        bn.forward_train(&t[0].transpose(2, 3)?)
    });
}

fn batch_norm_in_every_dtype_on_every_device() {
    let mut rng = Rng::new(43);
    let x = randn(&[4, 3, 5, 5], &mut rng);
    let w = randn(&[3], &mut rng);
    let b = randn(&[3], &mut rng);
    for dtype in FLOATS {
        check(
            "batch_norm2d train",
            &[x.clone(), w.clone(), b.clone()],
            dtype,
            tol(dtype),
            |t| {
                let mut bn = BatchNorm2d::new(3, t[0].device())?;
                bn.weight = Some(t[1].to_dtype(DType::F32)?);
                bn.bias = Some(t[2].to_dtype(DType::F32)?);
                let y = bn.forward_train(&t[0])?.to_dtype(DType::F32)?;
                // The output, then the running statistics it left.
                Tensor::cat(
                    &[
                        y.flatten_all()?,
                        bn.running_mean.clone(),
                        bn.running_var.clone(),
                    ],
                    0,
                )
            },
        );
    }
    check("batch_norm2d grads", &[x, w, b], DType::F32, 1e-5, |t| {
        let x = t[0].requires_grad()?;
        let mut bn = BatchNorm2d::new(3, t[0].device())?;
        bn.weight = Some(t[1].requires_grad()?);
        bn.bias = Some(t[2].requires_grad()?);
        let y = bn.forward_train(&x)?;
        let g = y.mul(&y)?.mul(&x)?.sum_all()?.backward()?;
        let grad = |v: &Tensor| -> smith::Result<Tensor> {
            g.get(v)
                .ok_or_else(|| smith::Error::invalid("test", "no gradient"))?
                .flatten_all()
        };
        let (w, b) = (bn.weight.as_ref().unwrap(), bn.bias.as_ref().unwrap());
        Tensor::cat(&[grad(&x)?, grad(w)?, grad(b)?], 0)
    });
}

fn folding_into_a_conv_gives_conv_then_bn() {
    let mut rng = Rng::new(44);
    let x = randn(&[2, 3, 8, 8], &mut rng);
    let w = randn(&[5, 3, 3, 3], &mut rng);
    let cb = randn(&[5], &mut rng);
    let spec = Conv2dSpec {
        padding: Padding2d::Same,
        ..Conv2dSpec::default()
    };
    let mut bn = BatchNorm2d::new(5, Device::Cpu).unwrap();
    for _ in 0..3 {
        let batch = randn(&[2, 3, 8, 8], &mut rng);
        bn.forward_train(&batch.conv2d(&w, Some(&cb), spec).unwrap())
            .unwrap();
    }
    let want = bn
        .forward_eval(&x.conv2d(&w, Some(&cb), spec).unwrap())
        .unwrap();
    for bias in [Some(&cb), None] {
        let (fw, fb) = bn.fold_into_conv(&w, bias).unwrap();
        let got = x.conv2d(&fw, Some(&fb), spec).unwrap();
        let want = match bias {
            Some(_) => want.clone(),
            None => bn.forward_eval(&x.conv2d(&w, None, spec).unwrap()).unwrap(),
        };
        assert_close(
            &got.to_vec_f64().unwrap(),
            &want.to_vec_f64().unwrap(),
            1e-5,
            "folded",
        );
    }
}

fn bad_batch_norm_inputs_are_errors() {
    let mut rng = Rng::new(45);
    let mut bn = BatchNorm2d::new(3, Device::Cpu).unwrap();
    let err = |r: smith::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(bn.forward_train(&randn(&[2, 4, 3, 3], &mut rng))).contains("[N, 3, H, W]"));
    assert!(err(bn.forward_train(&randn(&[1, 3, 1, 1], &mut rng))).contains("more than one value"));
    assert!(err(bn.forward_eval(&randn(&[3, 3, 3], &mut rng))).contains("[N, 3, H, W]"));
    let w = randn(&[4, 3, 3, 3], &mut rng);
    assert!(bn.fold_into_conv(&w, None).is_err());
    assert_eq!(
        bn.num_batches_tracked, 0,
        "a refused batch leaves the statistics alone"
    );
}

/// `[n, c, h, w]` values held channels-last.
fn channels_last(x: &Tensor) -> smith::Result<Tensor> {
    x.permute(&[0, 2, 3, 1])?
        .contiguous()?
        .permute(&[0, 3, 1, 2])
}

/// A layer with weights `w` and biases `b` (f32, or f64 for an f64 input) on `x`'s device.
fn layer(w: &Tensor, b: &Tensor, x: &Tensor) -> smith::Result<BatchNorm2d> {
    let dt = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let mut bn = BatchNorm2d::new(w.numel(), x.device())?;
    bn.weight = Some(w.to_dtype(dt)?.to_device(x.device())?.requires_grad()?);
    bn.bias = Some(b.to_dtype(dt)?.to_device(x.device())?.requires_grad()?);
    bn.running_mean = bn.running_mean.to_dtype(dt)?;
    bn.running_var = bn.running_var.to_dtype(dt)?;
    Ok(bn)
}

/// Training-mode output, running statistics after two steps, the three gradients for the
/// cotangent `r`, and the evaluation-mode output, flattened into one f64 vector.
fn run_layer(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    r: &Tensor,
    held: impl Fn(&Tensor) -> smith::Result<Tensor>,
) -> smith::Result<Vec<f64>> {
    let mut bn = layer(w, b, x)?;
    let xv = held(x)?.requires_grad()?;
    bn.forward_train(&held(&x.affine(0.5, 0.25)?)?)?;
    let y = bn.forward_train(&xv)?;
    let grads = y.mul(r)?.to_dtype(DType::F32)?.sum_all()?.backward()?;
    let eval = {
        let _g = smith::no_grad();
        bn.forward_eval(&held(x)?)?
    };
    let get = |t: &Tensor| -> smith::Result<Vec<f64>> {
        grads
            .get(t)
            .ok_or_else(|| smith::Error::invalid("test", "no gradient"))?
            .to_vec_f64()
    };
    Ok([
        y.to_vec_f64()?,
        bn.running_mean.to_vec_f64()?,
        bn.running_var.to_vec_f64()?,
        get(&xv)?,
        get(bn.weight.as_ref().unwrap())?,
        get(bn.bias.as_ref().unwrap())?,
        eval.to_vec_f64()?,
    ]
    .concat())
}

/// The fused passes (channels-last inputs) against the composed path (contiguous NCHW
/// inputs) on the same values, on every device and in every float dtype, with channel
/// means far from zero (the shifted sums) and enough rows for many splits on a GPU;
/// finite differences through the fused path in f64; the fused kernels are what runs.
fn fused_channels_last_passes_match_the_composed_ones() {
    let mut rng = Rng::new(46);
    for shape in [[4, 6, 5, 7], [8, 40, 20, 20]] {
        let c = shape[1];
        let x = randn(&shape, &mut rng).affine(3.0, 20.0).unwrap();
        let w = randn(&[c], &mut rng);
        let b = randn(&[c], &mut rng);
        let r = randn(&shape, &mut rng);
        let mut devices = vec![Device::Cpu];
        let gpu = gpu();
        devices.extend(gpu.as_ref().map(|g| g.0));
        for device in devices {
            for dtype in [DType::F64, DType::F32, DType::F16, DType::BF16] {
                if dtype == DType::F64 && device != Device::Cpu {
                    continue;
                }
                let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
                let (xd, rd) = (on(&x), on(&r));
                let plain = run_layer(&xd, &w, &b, &rd, |t| t.contiguous()).unwrap();
                let fused = run_layer(&xd, &w, &b, &rd, channels_last).unwrap();
                let err = rel_err(&fused, &plain);
                eprintln!("fused batch norm {shape:?} {dtype} on {device}: relative error {err:.1e} against the composed path");
                let bound = match dtype {
                    DType::F64 => 1e-12,
                    DType::F32 => 1e-5,
                    _ => 1e-2,
                };
                assert!(err <= bound, "{shape:?} {dtype} on {device}: {err:e}");
            }
        }
        if let Some((dev, _g)) = &gpu {
            let xg =
                channels_last(&x.to_dtype(DType::BF16).unwrap().to_device(*dev).unwrap()).unwrap();
            let mut bn = BatchNorm2d::new(c, *dev).unwrap();
            let names = kernels_run(|| {
                bn.forward_train(&xg).unwrap();
            });
            assert!(
                names.iter().any(|n| n.starts_with("channel_sums_bf16"))
                    && names
                        .iter()
                        .any(|n| n.starts_with("channel_affine") && n.ends_with("_bf16")),
                "{names:?}"
            );
        }
    }
    let inputs = [
        leaf(&[2, 3, 3, 4], &mut rng),
        leaf(&[3], &mut rng),
        leaf(&[3], &mut rng),
    ];
    gradcheck(&inputs, |t| {
        let mut bn = BatchNorm2d::new(3, Device::Cpu)?;
        bn.weight = Some(t[1].clone());
        bn.bias = Some(t[2].clone());
        bn.running_mean = bn.running_mean.to_dtype(DType::F64)?;
        bn.running_var = bn.running_var.to_dtype(DType::F64)?;
        bn.forward_train(&channels_last(&t[0])?)
    });
}
