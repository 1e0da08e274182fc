//! `smith bench`: the workloads that matter, timed on one device, printed beside PyTorch's
//! figures for the same workloads (measured by tools/torch_baseline.py in the same run).

use smith::backend::cuda;
use smith::{DType, Device, Error, Result, Rng, Tensor};
use std::collections::BTreeMap;
use std::time::Instant;

/// How a workload's figure is expressed, and which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Tera floating-point operations per second (higher is better).
    Tflops,
    /// Gigabytes moved per second (higher is better).
    Gbps,
    /// Milliseconds per call (lower is better).
    Ms,
    /// Microseconds per call (lower is better).
    Us,
    /// Millions of tokens per second (higher is better).
    MTokens,
    /// Tokens per second (higher is better).
    Tokens,
    /// Images per second (higher is better).
    Images,
    /// Texts (token sequences) per second (higher is better).
    Texts,
}

impl Unit {
    /// Short label.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Tflops => "TFLOP/s",
            Unit::Gbps => "GB/s",
            Unit::Ms => "ms",
            Unit::Us => "us",
            Unit::MTokens => "Mtok/s",
            Unit::Tokens => "tok/s",
            Unit::Images => "img/s",
            Unit::Texts => "seq/s",
        }
    }

    /// `ours / theirs` as a speed ratio (above 1 means smith is faster).
    pub fn speedup(self, ours: f64, theirs: f64) -> f64 {
        match self {
            Unit::Tflops
            | Unit::Gbps
            | Unit::MTokens
            | Unit::Tokens
            | Unit::Images
            | Unit::Texts => ours / theirs,
            Unit::Ms | Unit::Us => theirs / ours,
        }
    }
}

/// One measured workload.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub name: String,
    pub unit: Unit,
    pub value: f64,
    /// The physical floor or reference beside the figure (bytes or FLOPs, and what they imply).
    pub note: String,
}

fn sync(device: Device) -> Result<()> {
    if let Device::Cuda(n) = device {
        cuda::device(n)?.synchronize()?;
    }
    Ok(())
}

/// Mean seconds per call of `f` after warm-up, waiting for the device around the timed loop.
fn time(device: Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    sync(device)?;
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    sync(device)?;
    Ok(start.elapsed().as_secs_f64() / iters as f64)
}

/// The profiler's report of the kernels `work` launches, and of nothing run before it.
fn profiled(work: impl FnOnce() -> Result<()>) -> Result<smith::profile::Report> {
    let _scope = smith::profile::scope();
    smith::profile::take_report()?;
    work()?;
    smith::profile::take_report()
}

/// The fastest of `repeats` timings by [`time`]: for kernels short enough that a single
/// loop's figure moves with the host's scheduling.
fn best_time(
    device: Device,
    iters: usize,
    repeats: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        best = best.min(time(device, iters, &mut f)?);
    }
    Ok(best)
}

fn randn(shape: &[usize], dtype: DType, device: Device, rng: &mut Rng) -> Result<Tensor> {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, rng)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// Runs every workload on `device`; `quick` uses smaller sizes (for a CPU).
pub fn run(device: Device, quick: bool) -> Result<Vec<Measurement>> {
    let _guard = smith::no_grad();
    let mut rng = Rng::new(0);
    let mut out = Vec::new();
    let gemm_sizes: &[usize] = if quick {
        &[256, 512]
    } else {
        &[1024, 4096, 8192]
    };
    for &(dtype, label) in &[(DType::F32, "f32_tf32"), (DType::BF16, "bf16")] {
        if quick && dtype == DType::BF16 {
            continue;
        }
        for &n in gemm_sizes {
            let a = randn(&[n, n], dtype, device, &mut rng)?;
            let b = randn(&[n, n], dtype, device, &mut rng)?;
            let iters = if n >= 8192 { 10 } else { 30 };
            let s = time(device, iters, || a.matmul(&b).map(|_| ()))?;
            let flops = 2.0 * (n as f64).powi(3);
            out.push(Measurement {
                name: format!("gemm_{label}_{n}"),
                unit: Unit::Tflops,
                value: flops / s / 1e12,
                note: format!("{:.1} GFLOP per product", flops / 1e9),
            });
        }
    }
    let scale = if quick { 16 } else { 1 };
    // Memory-bound kernels: bytes read + written per call, against a plain device copy.
    let copy_n = 100_000_000 / scale;
    let big = randn(&[copy_n], DType::F32, device, &mut rng)?;
    let s = time(device, 20, || big.copy().map(|_| ()))?;
    let copy_gbps = 2.0 * 4.0 * copy_n as f64 / s / 1e9;
    out.push(Measurement {
        name: "copy_f32".into(),
        unit: Unit::Gbps,
        value: copy_gbps,
        note: format!("{:.0} MB read + written", 8.0 * copy_n as f64 / 1e6),
    });
    drop(big);
    let mut membound =
        |name: &str, shape: [usize; 2], f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<()> {
            let shape = [shape[0] / scale, shape[1]];
            let x = randn(&shape, DType::F32, device, &mut rng)?;
            let s = time(device, 20, || f(&x).map(|_| ()))?;
            let bytes = 2.0 * 4.0 * (shape[0] * shape[1]) as f64;
            let gbps = bytes / s / 1e9;
            out.push(Measurement {
                name: name.into(),
                unit: Unit::Gbps,
                value: gbps,
                note: format!(
                    "{:.0}% of copy; floor {:.3} ms",
                    100.0 * gbps / copy_gbps,
                    bytes / copy_gbps / 1e6
                ),
            });
            Ok(())
        };
    membound("softmax_98304x1024", [98304, 1024], &|x| x.softmax(1))?;
    let w = Tensor::ones(&[768], DType::F32, device)?;
    let b = Tensor::zeros(&[768], DType::F32, device)?;
    membound("layernorm_16384x768", [16384, 768], &|x| {
        x.layer_norm(Some(&w), Some(&b), 1e-5)
    })?;
    membound("gelu_16384x768", [16384, 768], &|x| x.gelu())?;
    // Cross-entropy forward over GPT-2's vocabulary.
    let rows = 16384 / scale;
    let logits = randn(&[rows, 50304], DType::F32, device, &mut rng)?;
    let targets = Tensor::from_vec(
        (0..rows)
            .map(|i| (i * 7919 % 50304) as i64)
            .collect::<Vec<_>>(),
        &[rows],
        device,
    )?;
    let s = time(device, 10, || {
        logits.cross_entropy(&targets, -1).map(|_| ())
    })?;
    out.push(Measurement {
        name: "cross_entropy_16384x50304".into(),
        unit: Unit::Ms,
        value: s * 1e3,
        note: format!(
            "floor {:.3} ms (logits read once)",
            4.0 * (rows * 50304) as f64 / copy_gbps / 1e6
        ),
    });
    drop(logits);
    // AdamW over GPT-2 124M's parameter shapes.
    let adamw_ms = adamw_step_ms(device, scale, &mut rng)?;
    out.push(Measurement {
        name: "adamw_124m".into(),
        unit: Unit::Ms,
        value: adamw_ms.0,
        note: format!(
            "{} tensors; floor {:.3} ms (16 B read + 12 B written per parameter)",
            adamw_ms.1,
            28.0 * adamw_ms.2 as f64 / copy_gbps / 1e6
        ),
    });
    // Host cost of queuing one small kernel.
    let tiny = Tensor::zeros(&[1], DType::F32, device)?;
    let n = 2000;
    sync(device)?;
    let start = Instant::now();
    for _ in 0..n {
        let _ = tiny.affine(1.0, 1.0)?;
    }
    let host = start.elapsed().as_secs_f64() / n as f64;
    sync(device)?;
    out.push(Measurement {
        name: "launch_overhead".into(),
        unit: Unit::Us,
        value: host * 1e6,
        note: match device {
            Device::Cuda(ordinal) => format!(
                "host time to queue one elementwise op on a 1-element tensor; a bare driver launch costs {:.2} us",
                cuda::bare_launch_us(&cuda::device(ordinal)?, n)?
            ),
            Device::Cpu => "host time of one elementwise op on a 1-element tensor".into(),
        },
    });
    Ok(out)
}

/// One GPT-2 124M training step (B=16, T=1024, vocab 50304, f32 with TF32 matmuls,
/// attention from matmul + fused causal softmax, clipping, AdamW): tokens per second.
///
/// With `profile`, two more steps run under the profiler and its kernel table is returned.
pub fn gpt2_step(
    device: Device,
    profile: bool,
    compute: DType,
) -> Result<(Measurement, Option<String>)> {
    let (b, t) = (16, 1024);
    let cfg = smith::models::GptConfig {
        vocab_size: 50304,
        block_size: t,
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        dropout: 0.0,
    };
    let mut rng = Rng::new(0);
    let model = smith::models::Gpt::new(cfg, &mut rng, device)?;
    let params = model.params();
    let mut opt = smith::optim::AdamW::new(params.clone(), smith::optim::AdamWConfig::default())?;
    let ids: Vec<i64> = (0..b * (t + 1)).map(|_| rng.below(50257) as i64).collect();
    let all = Tensor::from_vec(ids, &[b, t + 1], device)?;
    let x = all.narrow(1, 0, t)?.contiguous()?;
    let y = all.narrow(1, 1, t)?.contiguous()?;
    let mut step = || -> Result<()> {
        let loss = model.loss_in(&x, &y, None, compute)?;
        let mut grads = loss.backward()?;
        smith::optim::clip_grad_norm(&mut grads, &params, 1.0)?;
        opt.step(&grads, 6e-4)
    };
    let s = time(device, 5, &mut step)?;
    let table = if profile {
        Some(profiled(|| step().and_then(|_| step()))?.table(25))
    } else {
        None
    };
    let m = Measurement {
        name: match compute {
            DType::F32 => "gpt2_124m_train_step".into(),
            other => format!("gpt2_124m_train_step_{other}"),
        },
        unit: Unit::MTokens,
        value: (b * t) as f64 / s / 1e6,
        note: format!("{:.0} ms/step", s * 1e3),
    };
    Ok((m, table))
}

/// Greedy generation with GPT-2 124M (random weights; vocab 50257, context 1024): a
/// 16-token prompt, then 256 new tokens with the KV cache, batch 1, weights in `dtype`.
/// Tokens per second over the whole call (prefill included). With `profile`, prints the
/// kernels of one run and the launches per token first.
pub fn gpt2_generate(device: Device, dtype: DType, profile: bool) -> Result<Measurement> {
    let cfg = smith::models::GptConfig {
        vocab_size: 50257,
        block_size: 1024,
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        dropout: 0.0,
    };
    let mut rng = Rng::new(0);
    let model = smith::models::Gpt::new(cfg, &mut rng, device)?.to_dtype(dtype)?;
    let prompt: Vec<u32> = (0..16).map(|i| (i * 997 % 50257) as u32).collect();
    let new = 256;
    let run = || -> Result<()> {
        if greedy_tokens(&model, &prompt, new, device)? != new {
            return Err(Error::invalid("bench", "generation stopped early"));
        }
        Ok(())
    };
    run()?;
    sync(device)?;
    if profile && device != Device::Cpu {
        let report = profiled(run)?;
        let launches: u64 = report.kernels.iter().map(|k| k.calls).sum();
        println!(
            "Profile of one GPT-2 {dtype} generation ({new} tokens, {:.1} launches per token):\n{}",
            launches as f64 / new as f64,
            report.table(12)
        );
    }
    let start = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        run()?;
    }
    sync(device)?;
    let s = start.elapsed().as_secs_f64() / reps as f64;
    let weight_bytes = model.num_params() * dtype.size_in_bytes();
    Ok(Measurement {
        name: format!("gpt2_generate_{dtype}"),
        unit: Unit::Tokens,
        value: new as f64 / s,
        note: format!(
            "{:.2} ms/token ({:.2} ms of it queuing on the host); {:.0} MB of weights read per token",
            s * 1e3 / new as f64,
            host_queue_ms(&model, &prompt, device)?,
            weight_bytes as f64 / 1e6
        ),
    })
}

/// Host milliseconds to queue one greedy decoding step (forward and argmax, nothing read
/// back), over a few steps that stay well inside the driver's launch queue: below the
/// per-token time the GPU is the limit, near it the host is.
fn host_queue_ms(
    model: &dyn smith::models::LanguageModel,
    prompt: &[u32],
    device: Device,
) -> Result<f64> {
    let _g = smith::no_grad();
    let steps = 8;
    let mut caches = model.new_caches(1, prompt.len() + steps + 1)?;
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    let ids = Tensor::from_vec(ids, &[1, prompt.len()], device)?;
    let mut x = model.forward_cached(&ids, &mut caches)?.argmax(1, true)?;
    sync(device)?;
    let start = Instant::now();
    for _ in 0..steps {
        x = model.forward_cached(&x, &mut caches)?.argmax(1, true)?;
    }
    let host = start.elapsed().as_secs_f64();
    sync(device)?;
    Ok(host * 1e3 / steps as f64)
}

/// The attention shapes of the flash-attention benchmark: (batch, heads, seq, head dim,
/// causal).
pub const ATTENTION_SHAPES: [(usize, usize, usize, usize, bool); 3] = [
    (8, 12, 1024, 64, true),
    (2, 16, 4096, 128, true),
    (4, 16, 2048, 128, false),
];

/// Fused attention in bf16, forward and forward+backward, in TFLOP/s by FlashAttention's
/// count (4·B·H·S²·D forward, halved when causal; backward 2.5× the forward). With
/// `profile`, five more forward+backward passes of each shape run under the profiler and
/// its kernel tables are returned.
pub fn attention(device: Device, profile: bool) -> Result<(Vec<Measurement>, Option<String>)> {
    let mut out = Vec::new();
    let mut tables = String::new();
    let mut rng = Rng::new(9);
    for (b, h, s, d, causal) in ATTENTION_SHAPES {
        let shape = [b, h, s, d];
        let leaf = |rng: &mut Rng| -> Result<Tensor> {
            randn(&shape, DType::BF16, device, rng)?.requires_grad()
        };
        let (q, k, v) = (leaf(&mut rng)?, leaf(&mut rng)?, leaf(&mut rng)?);
        let probe = randn(&shape, DType::BF16, device, &mut rng)?;
        let mask = smith::AttnMask {
            causal,
            window: None,
        };
        let scale = 1.0 / (d as f64).sqrt();
        let flops = 4.0 * (b * h * s * s * d) as f64 / if causal { 2.0 } else { 1.0 };
        let fwd = best_time(device, 40, 3, || {
            let _g = smith::no_grad();
            q.flash_attention(&k, &v, mask, scale).map(|_| ())
        })?;
        let both = best_time(device, 15, 3, || {
            let y = q.flash_attention(&k, &v, mask, scale)?;
            y.backward_with(&probe).map(|_| ())
        })?;
        let name = format!(
            "attention_b{b}_h{h}_s{s}_d{d}{}",
            if causal { "_causal" } else { "" }
        );
        if profile && device != Device::Cpu {
            let table = profiled(|| {
                for _ in 0..5 {
                    let y = q.flash_attention(&k, &v, mask, scale)?;
                    y.backward_with(&probe)?;
                }
                Ok(())
            })?
            .table(8);
            tables.push_str(&format!("{name}, 5 forward+backward passes:\n{table}\n"));
        }
        out.push(Measurement {
            name: format!("{name}_fwd"),
            unit: Unit::Tflops,
            value: flops / fwd / 1e12,
            note: format!("{:.2} ms; {:.1} GFLOP", fwd * 1e3, flops / 1e9),
        });
        out.push(Measurement {
            name: format!("{name}_fwd_bwd"),
            unit: Unit::Tflops,
            value: 3.5 * flops / both / 1e12,
            note: format!("{:.2} ms; {:.1} GFLOP", both * 1e3, 3.5 * flops / 1e9),
        });
    }
    Ok((out, (!tables.is_empty()).then_some(tables)))
}

/// The tensor-core rate a dense bf16 product reaches on an H200 (cuBLAS's figure): the
/// floor of a convolution's time is its FLOPs at this rate.
const BF16_DENSE_TFLOPS: f64 = 800.0;

/// `[N, C, H, W]` values held channels-last (`[N, H, W, C]` memory), as the ResNet runs.
fn channels_last(t: Tensor) -> Result<Tensor> {
    t.permute(&[0, 2, 3, 1])?
        .contiguous()?
        .permute(&[0, 3, 1, 2])
}

/// The vision workloads on `device`: ResNet-50's 3×3 convolutions (batch 256, 2 on a CPU,
/// channels-last; bf16 forward and forward + both gradients, f32 forward) in TFLOP/s with
/// the tensor-core floor, then ResNet-50 inference and an SGD training step at batch 256
/// (bf16 activations, f32 weights) in images/s. A workload that fails (out of memory, say)
/// is reported with its error instead of ending the run.
pub fn vision(device: Device, profile: bool) -> Result<(Vec<Measurement>, Option<String>)> {
    let mut out = Vec::new();
    let mut tables = String::new();
    let mut rng = Rng::new(11);
    let failed = |name: String, e: Error| Measurement {
        name,
        unit: Unit::Images,
        value: f64::NAN,
        note: format!("failed: {e}"),
    };
    // A CPU runs the same shapes at a batch of 2 so that the run takes seconds.
    let nb = if device == Device::Cpu { 2 } else { 256 };
    for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
        let flops = 2.0 * (nb * c * c * 9 * hw * hw) as f64;
        let spec = smith::Conv2dSpec {
            padding: smith::Padding2d::Explicit(1, 1),
            ..smith::Conv2dSpec::default()
        };
        for dtype in [DType::BF16, DType::F32] {
            let tag = if dtype == DType::BF16 {
                "bfloat16"
            } else {
                "float32"
            };
            let name = format!("conv3x3_c{c}_{hw}px_B{nb}_{tag}");
            let x = channels_last(randn(&[nb, c, hw, hw], dtype, device, &mut rng)?)?;
            let w = randn(&[c, c, 3, 3], dtype, device, &mut rng)?.mul_scalar(0.05)?;
            let iters = if dtype == DType::BF16 && nb > 2 {
                20
            } else {
                2
            };
            let fwd = best_time(device, iters, 2, || {
                let _g = smith::no_grad();
                x.conv2d(&w, None, spec).map(|_| ())
            })?;
            let floor = flops / (BF16_DENSE_TFLOPS * 1e12);
            out.push(Measurement {
                name: format!("{name}_tflops"),
                unit: Unit::Tflops,
                value: flops / fwd / 1e12,
                note: format!(
                    "{:.3} ms; {:.1} GFLOP; H200 bf16 floor {:.3} ms",
                    fwd * 1e3,
                    flops / 1e9,
                    floor * 1e3
                ),
            });
            if dtype != DType::BF16 {
                continue;
            }
            let xg = x.requires_grad()?;
            let wg = w.requires_grad()?;
            let probe = channels_last(randn(&[nb, c, hw, hw], dtype, device, &mut rng)?)?;
            let pass = || -> Result<()> {
                xg.conv2d(&wg, None, spec)?
                    .backward_with(&probe)
                    .map(|_| ())
            };
            let both = best_time(device, 10, 2, pass)?;
            if profile && device != Device::Cpu {
                let table = profiled(|| {
                    for _ in 0..3 {
                        pass()?;
                    }
                    Ok(())
                })?
                .table(8);
                tables.push_str(&format!("{name}, 3 forward+backward passes:\n{table}\n"));
            }
            out.push(Measurement {
                name: format!("{name}_fwd_bwd_tflops"),
                unit: Unit::Tflops,
                value: 3.0 * flops / both / 1e12,
                note: format!(
                    "{:.3} ms; {:.1} GFLOP; H200 bf16 floor {:.3} ms",
                    both * 1e3,
                    3.0 * flops / 1e9,
                    3.0 * floor * 1e3
                ),
            });
        }
    }
    let b = nb;
    let cfg = smith::models::ResNetConfig::resnet50();
    let mut model = smith::models::ResNet::new(cfg, &mut rng, device)?;
    let images = channels_last(randn(&[b, 3, 224, 224], DType::BF16, device, &mut rng)?)?;
    let infer_name = format!("resnet50_infer_bf16_B{b}_nhwc_img_per_s");
    let infer = best_time(device, 5, 2, || {
        let _g = smith::no_grad();
        model.forward(&images, false).map(|_| ())
    });
    out.push(match infer {
        Ok(s) => Measurement {
            name: infer_name,
            unit: Unit::Images,
            value: b as f64 / s,
            note: format!("{:.1} ms per batch; 4.1 GFLOP per image", s * 1e3),
        },
        Err(e) => failed(infer_name, e),
    });
    let labels: Vec<i64> = (0..b as i64).map(|i| (i * 37) % 1000).collect();
    let labels = Tensor::from_vec(labels, &[b], device)?;
    let mut opt = smith::optim::Sgd::new(model.params()?, 0.9, 1e-4);
    let train_name = format!("resnet50_train_bf16_B{b}_nhwc_img_per_s");
    let mut step = || -> Result<()> {
        let loss = model.forward(&images, true)?.cross_entropy(&labels, -100)?;
        let grads = loss.backward()?;
        opt.step(&grads, 0.01)
    };
    let train = time(device, 3, &mut step);
    if profile && device != Device::Cpu && train.is_ok() {
        let table = profiled(|| {
            for _ in 0..2 {
                step()?;
            }
            Ok(())
        })?
        .table(15);
        tables.push_str(&format!("ResNet-50 training, 2 steps:\n{table}\n"));
    }
    out.push(match train {
        Ok(s) => Measurement {
            name: train_name,
            unit: Unit::Images,
            value: b as f64 / s,
            note: format!("{:.1} ms per step; 12.3 GFLOP per image", s * 1e3),
        },
        Err(e) => failed(train_name, e),
    });
    out.extend(clip_embeddings(device, profile)?);
    Ok((out, (!tables.is_empty()).then_some(tables)))
}

/// CLIP ViT-B/32 (random weights, bf16 on a GPU) embedding a batch of images and a batch
/// of full-context texts: images/s and texts/s; with `profile`, the kernel table of one
/// image batch printed.
pub fn clip_embeddings(device: Device, profile: bool) -> Result<Vec<Measurement>> {
    let rng = &mut Rng::new(12);
    let dtype = if device == Device::Cpu {
        DType::F32
    } else {
        DType::BF16
    };
    let b = if device == Device::Cpu { 4 } else { 1024 };
    let cfg = smith::models::ClipConfig::vit_b32();
    let model = smith::models::Clip::random(cfg, device, dtype, rng)?;
    let pixels = randn(&[b, 3, 224, 224], dtype, device, rng)?;
    let images = best_time(device, 5, 2, || model.image_features(&pixels).map(|_| ()))?;
    if profile && device != Device::Cpu {
        let table = profiled(|| model.image_features(&pixels).map(|_| ()))?.table(12);
        println!("CLIP ViT-B/32, one batch of {b} images:\n{table}");
    }
    let ids: Vec<Vec<u32>> = (0..b as u32)
        .map(|r| {
            let mut row: Vec<u32> = (0..77).map(|i| (r * 131 + i * 7919) % 49000 + 1).collect();
            row[0] = 49406;
            row[76] = 49407;
            row
        })
        .collect();
    let texts = best_time(device, 5, 2, || model.text_features(&ids).map(|_| ()))?;
    Ok(vec![
        Measurement {
            name: format!("clip_b32_image_embed_B{b}_img_per_s"),
            unit: Unit::Images,
            value: b as f64 / images,
            note: format!("{:.1} ms per batch; 8.8 GFLOP per image", images * 1e3),
        },
        Measurement {
            name: format!("clip_b32_text_embed_B{b}x77_seq_per_s"),
            unit: Unit::Texts,
            value: b as f64 / texts,
            note: format!("{:.1} ms per batch; 5.8 GFLOP per text", texts * 1e3),
        },
    ])
}

/// Greedy decoding of a GGUF model with its weights kept quantized (a 16-token prompt, then
/// 256 new tokens, batch 1, activations in bf16 on a GPU and f32 on the CPU), beside the
/// weight bytes one token reads (every matrix once; the embedding table once when it is the
/// tied output head) and the bandwidth that implies.
pub fn gguf_decode(path: &std::path::Path, device: Device) -> Result<Measurement> {
    let dtype = if device == Device::Cpu {
        DType::F32
    } else {
        DType::BF16
    };
    let (model, file) = smith::models::from_gguf::load_gguf_model(path, device, dtype)?;
    let vocab = smith::models::LanguageModel::vocab_size(&model) as u32;
    let prompt: Vec<u32> = (0..16u32).map(|i| (i * 997 + 13) % vocab).collect();
    let new = 256;
    let run = || greedy_tokens(&model, &prompt, new, device);
    run()?;
    sync(device)?;
    let reps = 3;
    let start = Instant::now();
    let mut tokens = 0;
    for _ in 0..reps {
        tokens += run()?;
    }
    sync(device)?;
    let s = start.elapsed().as_secs_f64();
    let per_token_s = s / tokens.max(1) as f64;
    let untied = file.tensor_info("output.weight").is_some();
    let bytes: usize = file
        .tensors
        .iter()
        .filter(|t| !(untied && t.name == "token_embd.weight"))
        .map(|t| t.len)
        .sum();
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Measurement {
        name: format!("decode_{name}"),
        unit: Unit::Tokens,
        value: 1.0 / per_token_s,
        note: format!(
            "{:.2} ms/token; {:.1} MB of weights read per token = {:.0} GB/s",
            per_token_s * 1e3,
            bytes as f64 / 1e6,
            bytes as f64 / per_token_s / 1e9
        ),
    })
}

/// Greedy continuation of `prompt` by up to `new` tokens (batch 1, no stop tokens): the
/// generated count.
fn greedy_tokens(
    model: &dyn smith::models::LanguageModel,
    prompt: &[u32],
    new: usize,
    device: Device,
) -> Result<usize> {
    let out = smith::infer::generate::generate_batch(
        model,
        &[prompt.to_vec()],
        new,
        &smith::infer::generate::Sampling::default(),
        &[],
        &mut Rng::new(0),
        device,
        |_, _| Ok(true),
    )?;
    Ok(out[0].len())
}

/// GPT-2 124M's parameter shapes (wte, wpe, 12 blocks, final norm).
fn gpt2_shapes() -> Vec<Vec<usize>> {
    let (c, v, t) = (768, 50304, 1024);
    let mut s = vec![vec![v, c], vec![t, c]];
    for _ in 0..12 {
        s.extend([
            vec![c],
            vec![c],
            vec![3 * c, c],
            vec![3 * c],
            vec![c, c],
            vec![c],
            vec![c],
            vec![c],
            vec![4 * c, c],
            vec![4 * c],
            vec![c, 4 * c],
            vec![c],
        ]);
    }
    s.extend([vec![c], vec![c]]);
    s
}

fn adamw_step_ms(device: Device, scale: usize, rng: &mut Rng) -> Result<(f64, usize, usize)> {
    let shapes = gpt2_shapes();
    let mut params = Vec::new();
    let mut grads = smith::GradStore::new();
    let mut total = 0;
    for (i, shape) in shapes.iter().enumerate() {
        let mut shape = shape.clone();
        shape[0] = (shape[0] / scale).max(1);
        total += shape.iter().product::<usize>();
        let p = randn(&shape, DType::F32, device, rng)?.requires_grad()?;
        grads.insert(&p, randn(&shape, DType::F32, device, rng)?);
        params.push(smith::nn::Param {
            name: format!("p{i}"),
            tensor: p,
            decay: shape.len() == 2,
        });
    }
    let mut opt = smith::optim::AdamW::new(params, smith::optim::AdamWConfig::default())?;
    let s = time(device, 10, || opt.step(&grads, 1e-4))?;
    Ok((s * 1e3, shapes.len(), total))
}

/// PyTorch's figures for the same workloads, from `python3 SCRIPT` (JSON on stdout).
pub fn torch_baseline(script: &str, flags: &[&str]) -> Result<BTreeMap<String, f64>> {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script).args(flags);
    let out = cmd.output().map_err(|e| Error::io(script, e))?;
    if !out.status.success() {
        return Err(Error::invalid(
            "bench",
            format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr)),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("{}");
    Ok(serde_json::from_str(line)?)
}
