//! Convolutions: `conv2d` against naive f64 loops on random shapes (stride, padding
//! numbers and `same`, dilation, groups and depthwise, bias), through strided and
//! channels-last inputs; its three gradients against finite differences; every float dtype
//! on every device (`check`: the CPU against f64, a GPU against the CPU), gradients
//! included; batches split into column-matrix chunks; each algorithm (direct, im2col,
//! Winograd) forced in turn through the same checks; implicit GEMM on tensor cores (f16 and
//! bf16 on a GPU) against the CPU, gradients included; bad shapes as clear errors.

mod common;

use common::devices::*;
use common::{assert_close, gradcheck, leaf};
use smith::{
    force_conv_algorithm, Conv2dSpec, ConvAlgorithm, ConvTranspose2dSpec, DType, Device, Padding2d,
    Rng, Tensor,
};

fn main() {
    common::run_suite(vec![
        (
            "conv2d_matches_naive_loops",
            conv2d_matches_naive_loops,
            None,
        ),
        (
            "conv2d_gradients_pass_finite_differences",
            conv2d_gradients_pass_finite_differences,
            None,
        ),
        (
            "conv2d_in_every_dtype_on_every_device",
            conv2d_in_every_dtype_on_every_device,
            None,
        ),
        (
            "large_batches_run_in_chunks_with_the_same_result",
            large_batches_run_in_chunks_with_the_same_result,
            None,
        ),
        (
            "padding_same_and_bad_shapes",
            padding_same_and_bad_shapes,
            None,
        ),
        (
            "every_algorithm_forced_matches_the_loops_gradients_and_devices",
            every_algorithm_forced_matches_the_loops_gradients_and_devices,
            None,
        ),
        (
            "implicit_gemm_on_tensor_cores_matches_the_cpu",
            implicit_gemm_on_tensor_cores_matches_the_cpu,
            None,
        ),
        (
            "implicit_gemm_refuses_what_it_cannot_run",
            implicit_gemm_refuses_what_it_cannot_run,
            None,
        ),
        (
            "conv_transpose2d_matches_its_definition_and_is_the_input_gradient",
            conv_transpose2d_matches_its_definition_and_is_the_input_gradient,
            None,
        ),
    ]);
}

/// A convolution case: input `[n, c, h, w]`, `o` output channels, kernel `k`, and the
/// geometry.
#[derive(Clone, Copy, Debug)]
struct Case {
    x: [usize; 4],
    o: usize,
    k: (usize, usize),
    spec: Conv2dSpec,
    bias: bool,
}

fn spec(
    stride: (usize, usize),
    pad: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dSpec {
    Conv2dSpec {
        stride,
        padding: Padding2d::Explicit(pad.0, pad.1),
        dilation,
        groups,
    }
}

fn cases() -> Vec<Case> {
    let case = |x, o, k, spec, bias| Case {
        x,
        o,
        k,
        spec,
        bias,
    };
    vec![
        case(
            [2, 3, 7, 6],
            4,
            (3, 3),
            spec((1, 1), (0, 0), (1, 1), 1),
            true,
        ),
        case(
            [1, 4, 9, 8],
            6,
            (3, 2),
            spec((2, 1), (1, 2), (1, 1), 2),
            true,
        ),
        case(
            [2, 2, 10, 11],
            3,
            (3, 3),
            spec((2, 3), (2, 1), (2, 1), 1),
            false,
        ),
        // Depthwise, with a channel multiplier of 2.
        case(
            [1, 3, 8, 7],
            6,
            (3, 3),
            spec((1, 1), (1, 1), (1, 1), 3),
            true,
        ),
        // 1x1, strided.
        case(
            [3, 5, 6, 6],
            2,
            (1, 1),
            spec((2, 2), (0, 0), (1, 1), 1),
            true,
        ),
        // `same` with an even kernel (the extra row and column go after).
        case(
            [1, 2, 5, 6],
            3,
            (2, 4),
            Conv2dSpec {
                padding: Padding2d::Same,
                dilation: (2, 1),
                ..Conv2dSpec::default()
            },
            true,
        ),
        // A kernel exactly as large as the padded input.
        case(
            [2, 2, 3, 4],
            2,
            (5, 4),
            spec((1, 1), (1, 0), (1, 1), 1),
            false,
        ),
    ]
}

/// (top, bottom, left, right) padding of `case`, worked out independently of the library.
fn pads(c: &Case) -> (usize, usize, usize, usize) {
    match c.spec.padding {
        Padding2d::Explicit(ph, pw) => (ph, ph, pw, pw),
        Padding2d::Same => {
            let th = c.spec.dilation.0 * (c.k.0 - 1);
            let tw = c.spec.dilation.1 * (c.k.1 - 1);
            (th / 2, th - th / 2, tw / 2, tw - tw / 2)
        }
    }
}

/// The convolution by its definition, in f64: `[n, o, oh, ow]` and the values.
fn naive(c: &Case, x: &[f64], w: &[f64], b: Option<&[f64]>) -> (Vec<usize>, Vec<f64>) {
    let [n, ch, h, wd] = c.x;
    let (kh, kw) = c.k;
    let (sh, sw) = c.spec.stride;
    let (dh, dw) = c.spec.dilation;
    let (pt, pb, pl, pr) = pads(c);
    let g = c.spec.groups;
    let (cg, og) = (ch / g, c.o / g);
    let oh = (h + pt + pb - dh * (kh - 1) - 1) / sh + 1;
    let ow = (wd + pl + pr - dw * (kw - 1) - 1) / sw + 1;
    let mut out = vec![0.0; n * c.o * oh * ow];
    for b_ in 0..n {
        for o in 0..c.o {
            let grp = o / og;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = b.map(|b| b[o]).unwrap_or(0.0);
                    for ci in 0..cg {
                        let cin = grp * cg + ci;
                        for i in 0..kh {
                            for j in 0..kw {
                                let r = (y * sh + i * dh) as isize - pt as isize;
                                let q = (xo * sw + j * dw) as isize - pl as isize;
                                if r < 0 || q < 0 || r >= h as isize || q >= wd as isize {
                                    continue;
                                }
                                let xv = x[((b_ * ch + cin) * h + r as usize) * wd + q as usize];
                                let wv = w[((o * cg + ci) * kh + i) * kw + j];
                                acc += xv * wv;
                            }
                        }
                    }
                    out[((b_ * c.o + o) * oh + y) * ow + xo] = acc;
                }
            }
        }
    }
    (vec![n, c.o, oh, ow], out)
}

fn weight_shape(c: &Case) -> [usize; 4] {
    [c.o, c.x[1] / c.spec.groups, c.k.0, c.k.1]
}

fn rand_f64(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::rand(shape, -1.0, 1.0, DType::F64, Device::Cpu, rng).unwrap()
}

/// `[n, c, h, w]` values held three ways: contiguous, as the transpose of a `[n, c, w, h]`
/// buffer (strided), and channels-last (`[n, h, w, c]` storage).
fn layouts(x: &Tensor) -> Vec<(&'static str, Tensor)> {
    vec![
        ("contiguous", x.clone()),
        (
            "strided",
            x.transpose(2, 3)
                .unwrap()
                .contiguous()
                .unwrap()
                .transpose(2, 3)
                .unwrap(),
        ),
        (
            "channels-last",
            x.permute(&[0, 2, 3, 1])
                .unwrap()
                .contiguous()
                .unwrap()
                .permute(&[0, 3, 1, 2])
                .unwrap(),
        ),
    ]
}

fn conv2d_matches_naive_loops() {
    let mut rng = Rng::new(21);
    for c in cases() {
        let x = rand_f64(&c.x, &mut rng);
        let w = rand_f64(&weight_shape(&c), &mut rng);
        let b = rand_f64(&[c.o], &mut rng);
        let bias = c.bias.then_some(&b);
        let (shape, want) = naive(
            &c,
            &x.to_vec_f64().unwrap(),
            &w.to_vec_f64().unwrap(),
            bias.map(|b| b.to_vec_f64().unwrap()).as_deref(),
        );
        for (name, xv) in layouts(&x) {
            assert_eq!(xv.shape(), x.shape());
            let y = xv.conv2d(&w, bias, c.spec).unwrap();
            assert_eq!(y.shape(), shape, "{c:?} {name}");
            assert_close(
                &y.to_vec_f64().unwrap(),
                &want,
                1e-12,
                &format!("{c:?} {name}"),
            );
        }
    }
}

fn conv2d_gradients_pass_finite_differences() {
    let mut rng = Rng::new(22);
    let small = [
        Case {
            x: [2, 2, 5, 4],
            o: 2,
            k: (3, 2),
            spec: spec((2, 1), (1, 1), (1, 2), 1),
            bias: true,
        },
        Case {
            x: [1, 4, 5, 5],
            o: 4,
            k: (3, 3),
            spec: spec((1, 1), (1, 1), (1, 1), 4),
            bias: true,
        },
        Case {
            x: [1, 4, 4, 5],
            o: 2,
            k: (2, 2),
            spec: Conv2dSpec {
                padding: Padding2d::Same,
                groups: 2,
                ..Conv2dSpec::default()
            },
            bias: false,
        },
    ];
    for c in small {
        let inputs = [
            leaf(&[c.x[0], c.x[1], c.x[3], c.x[2]], &mut rng),
            leaf(&weight_shape(&c), &mut rng),
            leaf(&[c.o], &mut rng),
        ];
        eprintln!("gradcheck {c:?}");
        gradcheck(&inputs, |t| {
            // The input arrives transposed: the gradient flows through a strided view.
            let x = t[0].transpose(2, 3)?;
            x.conv2d(&t[1], c.bias.then_some(&t[2]), c.spec)
        });
    }
}

fn conv2d_in_every_dtype_on_every_device() {
    let _exact = exact_f32(); // f32 parity at f32 precision: TF32 off on the GPU
    let mut rng = Rng::new(23);
    for c in cases() {
        let x = randn(&c.x, &mut rng);
        let w = randn(&weight_shape(&c), &mut rng);
        let b = randn(&[c.o], &mut rng);
        let name = format!("conv2d {:?} k{:?} {:?}", c.x, c.k, c.spec);
        for dtype in FLOATS {
            let bias = c.bias;
            check(
                &name,
                &[x.clone(), w.clone(), b.clone()],
                dtype,
                tol(dtype),
                |t| t[0].conv2d(&t[1], bias.then_some(&t[2]), c.spec),
            );
        }
        // The three gradients, through a channels-last input.
        let grads = |t: &[Tensor]| -> smith::Result<Tensor> {
            let x = t[0]
                .permute(&[0, 2, 3, 1])?
                .contiguous()?
                .permute(&[0, 3, 1, 2])?
                .requires_grad()?;
            let w = t[1].requires_grad()?;
            let b = t[2].requires_grad()?;
            let y = x.conv2d(&w, Some(&b), c.spec)?;
            let probe = y.mul(&y)?.sum_all()?;
            let g = probe.backward()?;
            let flat = |v: &Tensor| -> smith::Result<Tensor> {
                g.get(v)
                    .ok_or_else(|| smith::Error::invalid("test", "no gradient"))?
                    .flatten_all()
            };
            Tensor::cat(&[flat(&x)?, flat(&w)?, flat(&b)?], 0)
        };
        check(
            &format!("{name} grads"),
            &[x, w, b],
            DType::F32,
            1e-5,
            grads,
        );
    }
}

fn large_batches_run_in_chunks_with_the_same_result() {
    let _exact = exact_f32(); // f32 parity at f32 precision: TF32 off on the GPU
    let mut rng = Rng::new(24);
    // 32 x 9 taps x 64 x 64 positions x 4 bytes = 4.7 MB of columns per image: 60 images
    // take two chunks.
    let (n, c) = (60, 32);
    let per_image = c * 9 * 64 * 64 * 4;
    assert!(n * per_image > smith::CONV_COLUMN_CAP_BYTES);
    let x = randn(&[n, c, 64, 64], &mut rng);
    let w = randn(&[4, c, 3, 3], &mut rng);
    let s = Conv2dSpec {
        padding: Padding2d::Same,
        ..Conv2dSpec::default()
    };
    let whole = x.conv2d(&w, None, s).unwrap();
    assert_eq!(whole.shape(), [n, 4, 64, 64]);
    for i in [0, 30, 59] {
        let one = x.narrow(0, i, 1).unwrap().conv2d(&w, None, s).unwrap();
        let part = whole.narrow(0, i, 1).unwrap();
        assert_eq!(
            one.to_vec_f64().unwrap(),
            part.to_vec_f64().unwrap(),
            "image {i}"
        );
    }
}

fn padding_same_and_bad_shapes() {
    let mut rng = Rng::new(25);
    let x = randn(&[1, 4, 6, 5], &mut rng);
    let same = Conv2dSpec {
        padding: Padding2d::Same,
        ..Conv2dSpec::default()
    };
    for k in [(1, 1), (2, 3), (3, 3), (4, 2)] {
        let w = randn(&[2, 4, k.0, k.1], &mut rng);
        assert_eq!(x.conv2d(&w, None, same).unwrap().shape(), [1, 2, 6, 5]);
    }
    let err = |r: smith::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    let w = randn(&[2, 3, 3, 3], &mut rng);
    let e = err(x.conv2d(&w, None, Conv2dSpec::default()));
    assert!(e.contains("conv2d") && e.contains("4 channels"), "{e}");
    let w = randn(&[2, 4, 3, 3], &mut rng);
    let strided_same = Conv2dSpec {
        stride: (2, 1),
        ..same
    };
    assert!(err(x.conv2d(&w, None, strided_same)).contains("stride 1"));
    let big = randn(&[2, 4, 7, 3], &mut rng);
    assert!(
        err(x.conv2d(&big, None, Conv2dSpec::default())).contains("larger than the padded input")
    );
    let b = randn(&[3], &mut rng);
    assert!(err(x.conv2d(&w, Some(&b), Conv2dSpec::default())).contains("bias"));
    let grouped = Conv2dSpec {
        groups: 3,
        ..Conv2dSpec::default()
    };
    assert!(err(x.conv2d(&w, None, grouped)).contains("groups"));
    let zero_stride = spec((0, 1), (0, 0), (1, 1), 1);
    assert!(err(x.conv2d(&w, None, zero_stride)).contains("positive"));
    let flat = randn(&[4, 6, 5], &mut rng);
    assert!(err(flat.conv2d(&w, None, Conv2dSpec::default())).contains("[N, C, H, W]"));
    let ints = Tensor::zeros(&[1, 4, 6, 5], DType::I64, Device::Cpu).unwrap();
    assert!(ints.conv2d(&w, None, Conv2dSpec::default()).is_err());
    // An empty batch gives an empty output of the right shape.
    let empty = Tensor::zeros(&[0, 4, 6, 5], DType::F32, Device::Cpu).unwrap();
    assert_eq!(
        empty
            .conv2d(&w, None, Conv2dSpec::default())
            .unwrap()
            .shape(),
        [0, 2, 4, 3]
    );
}

/// Transposed convolution by its definition, in f64: each input element adds its
/// weighted kernel into the output at `h * stride - padding + tap * dilation`.
fn naive_transpose(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    s: &ConvTranspose2dSpec,
) -> (Vec<usize>, Vec<f64>) {
    let [n, c, h, wd] = xs;
    let [_, og, kh, kw] = ws;
    let g = s.groups;
    let (cg, o) = (c / g, og * g);
    let oh =
        (h - 1) * s.stride.0 + s.dilation.0 * (kh - 1) + s.output_padding.0 + 1 - 2 * s.padding.0;
    let ow =
        (wd - 1) * s.stride.1 + s.dilation.1 * (kw - 1) + s.output_padding.1 + 1 - 2 * s.padding.1;
    let mut out = vec![0.0; n * o * oh * ow];
    for b in 0..n {
        for ci in 0..c {
            let grp = ci / cg;
            for y in 0..h {
                for xx in 0..wd {
                    let v = x[((b * c + ci) * h + y) * wd + xx];
                    for oc in 0..og {
                        for i in 0..kh {
                            for j in 0..kw {
                                let r = (y * s.stride.0 + i * s.dilation.0) as isize
                                    - s.padding.0 as isize;
                                let q = (xx * s.stride.1 + j * s.dilation.1) as isize
                                    - s.padding.1 as isize;
                                if r < 0 || q < 0 || r >= oh as isize || q >= ow as isize {
                                    continue;
                                }
                                let out_c = grp * og + oc;
                                out[((b * o + out_c) * oh + r as usize) * ow + q as usize] +=
                                    v * w[((ci * og + oc) * kh + i) * kw + j];
                            }
                        }
                    }
                }
            }
        }
    }
    (vec![n, o, oh, ow], out)
}

fn conv_transpose2d_matches_its_definition_and_is_the_input_gradient() {
    let _exact = exact_f32(); // f32 parity at f32 precision: TF32 off on the GPU
    let mut rng = Rng::new(26);
    let t = |stride, padding, output_padding, dilation, groups| ConvTranspose2dSpec {
        stride,
        padding,
        output_padding,
        dilation,
        groups,
    };
    let cases = [
        (
            [2, 3, 4, 5],
            2,
            (3, 3),
            t((1, 1), (0, 0), (0, 0), (1, 1), 1),
        ),
        (
            [1, 4, 5, 4],
            3,
            (3, 2),
            t((2, 1), (1, 0), (1, 0), (1, 1), 2),
        ),
        (
            [2, 2, 3, 3],
            2,
            (3, 3),
            t((3, 2), (2, 1), (2, 1), (1, 2), 1),
        ),
        (
            [1, 3, 4, 4],
            1,
            (2, 2),
            t((2, 2), (1, 1), (0, 1), (2, 2), 3),
        ),
    ];
    for (xs, og, (kh, kw), s) in cases {
        let ws = [xs[1], og, kh, kw];
        let x = rand_f64(&xs, &mut rng);
        let w = rand_f64(&ws, &mut rng);
        let b = rand_f64(&[og * s.groups], &mut rng);
        let (shape, want) = naive_transpose(
            &x.to_vec_f64().unwrap(),
            xs,
            &w.to_vec_f64().unwrap(),
            ws,
            &s,
        );
        let got = x.conv_transpose2d(&w, None, s).unwrap();
        assert_eq!(got.shape(), shape, "{s:?}");
        assert_close(&got.to_vec_f64().unwrap(), &want, 1e-12, &format!("{s:?}"));
        let with_bias = x.conv_transpose2d(&w, Some(&b), s).unwrap();
        let biased: Vec<f64> = want
            .iter()
            .enumerate()
            .map(|(i, v)| v + b.to_vec_f64().unwrap()[(i / (shape[2] * shape[3])) % shape[1]])
            .collect();
        assert_close(&with_bias.to_vec_f64().unwrap(), &biased, 1e-12, "bias");
        // It is conv2d's input gradient: conv2d maps the transposed output's shape back to x's.
        let conv = Conv2dSpec {
            stride: s.stride,
            padding: Padding2d::Explicit(s.padding.0, s.padding.1),
            dilation: s.dilation,
            groups: s.groups,
        };
        let z = rand_f64(&shape, &mut rng).requires_grad().unwrap();
        let y = z.conv2d(&w, None, conv).unwrap();
        assert_eq!(y.shape(), xs, "{s:?}");
        let grads = y.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(
            &grads.get(&z).unwrap().to_vec_f64().unwrap(),
            &want,
            1e-12,
            "input gradient",
        );
        let inputs = [
            common::leaf(&xs, &mut rng),
            common::leaf(&ws, &mut rng),
            common::leaf(&[og * s.groups], &mut rng),
        ];
        gradcheck(&inputs, |v| v[0].conv_transpose2d(&v[1], Some(&v[2]), s));
        let (xf, wf, bf) = (
            randn(&xs, &mut rng),
            randn(&ws, &mut rng),
            randn(&[og * s.groups], &mut rng),
        );
        for dtype in FLOATS {
            check(
                &format!("conv_transpose2d {s:?}"),
                &[xf.clone(), wf.clone(), bf.clone()],
                dtype,
                tol(dtype),
                |v| v[0].conv_transpose2d(&v[1], Some(&v[2]), s),
            );
        }
    }
    let x = randn(&[1, 2, 3, 3], &mut rng);
    let w = randn(&[2, 1, 3, 3], &mut rng);
    let e = x
        .conv_transpose2d(&w, None, t((1, 1), (0, 0), (1, 0), (1, 1), 1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("output padding"), "{e}");
    let w3 = randn(&[3, 1, 3, 3], &mut rng);
    assert!(x
        .conv_transpose2d(&w3, None, ConvTranspose2dSpec::default())
        .is_err());
}

/// Cases Winograd F(2×2, 3×3) applies to: 3×3, stride 1, one group; odd and even outputs,
/// padding 0, 1 and 2, few and many channels.
fn winograd_cases() -> Vec<Case> {
    let case = |x, o, pad: (usize, usize), bias| Case {
        x,
        o,
        k: (3, 3),
        spec: spec((1, 1), pad, (1, 1), 1),
        bias,
    };
    vec![
        case([2, 3, 7, 6], 4, (0, 0), true),
        case([1, 16, 9, 7], 17, (1, 1), false),
        case([2, 5, 4, 5], 3, (2, 1), true),
        case([1, 2, 3, 3], 2, (0, 0), false),
    ]
}

fn every_algorithm_forced_matches_the_loops_gradients_and_devices() {
    let _exact = exact_f32(); // f32 parity at f32 precision: TF32 off on the GPU
    let mut rng = Rng::new(26);
    let all: Vec<Case> = cases().into_iter().chain(winograd_cases()).collect();
    for algorithm in [
        ConvAlgorithm::Direct,
        ConvAlgorithm::Im2col,
        ConvAlgorithm::Winograd,
    ] {
        let _forced = force_conv_algorithm(algorithm);
        let applies = |c: &Case| {
            algorithm != ConvAlgorithm::Winograd
                || (c.k == (3, 3)
                    && c.spec.stride == (1, 1)
                    && c.spec.dilation == (1, 1)
                    && c.spec.groups == 1)
        };
        for c in all.iter().filter(|c| applies(c)) {
            let name = format!("{algorithm:?} {:?} k{:?} {:?}", c.x, c.k, c.spec);
            let x = rand_f64(&c.x, &mut rng);
            let w = rand_f64(&weight_shape(c), &mut rng);
            let b = rand_f64(&[c.o], &mut rng);
            let bias = c.bias.then_some(&b);
            let (shape, want) = naive(
                c,
                &x.to_vec_f64().unwrap(),
                &w.to_vec_f64().unwrap(),
                bias.map(|b| b.to_vec_f64().unwrap()).as_deref(),
            );
            for (layout, xv) in layouts(&x) {
                let y = xv.conv2d(&w, bias, c.spec).unwrap();
                assert_eq!(y.shape(), shape, "{name} {layout}");
                assert_close(
                    &y.to_vec_f64().unwrap(),
                    &want,
                    1e-12,
                    &format!("{name} {layout}"),
                );
            }
            // Every float dtype against f64 and the GPU against the CPU, and the three
            // gradients in f32.
            let (x, w, b) = (
                randn(&c.x, &mut rng),
                randn(&weight_shape(c), &mut rng),
                randn(&[c.o], &mut rng),
            );
            for dtype in FLOATS {
                check(
                    &name,
                    &[x.clone(), w.clone(), b.clone()],
                    dtype,
                    tol(dtype),
                    |t| t[0].conv2d(&t[1], c.bias.then_some(&t[2]), c.spec),
                );
            }
            let grads = |t: &[Tensor]| -> smith::Result<Tensor> {
                let x = t[0].requires_grad()?;
                let w = t[1].requires_grad()?;
                let b = t[2].requires_grad()?;
                let y = x.conv2d(&w, Some(&b), c.spec)?;
                let g = y.mul(&y)?.sum_all()?.backward()?;
                let flat = |v: &Tensor| -> smith::Result<Tensor> {
                    g.get(v)
                        .ok_or_else(|| smith::Error::invalid("test", "no gradient"))?
                        .flatten_all()
                };
                Tensor::cat(&[flat(&x)?, flat(&w)?, flat(&b)?], 0)
            };
            check(
                &format!("{name} grads"),
                &[x, w, b],
                DType::F32,
                1e-5,
                grads,
            );
        }
        // Finite differences through each algorithm on a small case it applies to.
        let small = Case {
            x: [1, 2, 4, 5],
            o: 2,
            k: (3, 3),
            spec: spec((1, 1), (1, 1), (1, 1), 1),
            bias: true,
        };
        let inputs = [
            leaf(&small.x, &mut rng),
            leaf(&weight_shape(&small), &mut rng),
            leaf(&[small.o], &mut rng),
        ];
        gradcheck(&inputs, |t| t[0].conv2d(&t[1], Some(&t[2]), small.spec));
    }
    // Forcing Winograd where it does not apply is an error that says why.
    let _forced = force_conv_algorithm(ConvAlgorithm::Winograd);
    let x = randn(&[1, 4, 8, 8], &mut rng);
    let w = randn(&[2, 4, 3, 3], &mut rng);
    let e = x
        .conv2d(&w, None, spec((2, 2), (1, 1), (1, 1), 1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("Winograd") && e.contains("stride 1"), "{e}");
    assert!(ConvAlgorithm::parse("fft").is_err());
    assert_eq!(
        ConvAlgorithm::parse(" Winograd ").unwrap(),
        ConvAlgorithm::Winograd
    );
}

/// Shapes for implicit GEMM: ResNet's (3×3 stride 1 and 2, 1×1 downsamples, the 7×7
/// stem on 3 channels), dilation, `same` with an even kernel, channel counts off the
/// kernels' granule of 8 (padded), and sizes spanning several 128-wide tiles and 32-deep
/// stages in pixels, outputs and the reduction.
fn implicit_gemm_cases() -> Vec<Case> {
    let case = |x, o, k, spec| Case {
        x,
        o,
        k,
        spec,
        bias: false,
    };
    let mut all: Vec<Case> = cases().into_iter().filter(|c| c.spec.groups == 1).collect();
    all.extend([
        case([2, 16, 10, 9], 16, (3, 3), spec((1, 1), (1, 1), (1, 1), 1)),
        case([2, 8, 11, 12], 24, (3, 3), spec((2, 2), (1, 1), (1, 1), 1)),
        case([2, 32, 9, 9], 16, (1, 1), spec((2, 2), (0, 0), (1, 1), 1)),
        case([2, 3, 19, 17], 8, (7, 7), spec((2, 2), (3, 3), (1, 1), 1)),
        case([1, 8, 12, 12], 8, (3, 3), spec((1, 1), (2, 2), (2, 2), 1)),
        case([1, 5, 9, 10], 6, (3, 3), spec((1, 2), (1, 0), (1, 1), 1)),
        case(
            [3, 64, 12, 12],
            136,
            (3, 3),
            spec((1, 1), (1, 1), (1, 1), 1),
        ),
        case([2, 40, 8, 8], 8, (3, 3), spec((2, 2), (1, 1), (1, 1), 1)),
        case(
            [1, 8, 7, 9],
            8,
            (2, 4),
            Conv2dSpec {
                padding: Padding2d::Same,
                ..Conv2dSpec::default()
            },
        ),
    ]);
    all
}

/// On a GPU, implicit GEMM (forced, and picked by the rules for f16/bf16) against the CPU
/// in the same dtype, through contiguous, strided, channels-last and channel-sliced
/// inputs; the input and weight gradients in f16 and bf16 against the CPU's in f32 on the
/// same rounded values. On a CPU the same checks run the CPU's own path against f64.
fn implicit_gemm_on_tensor_cores_matches_the_cpu() {
    let mut rng = Rng::new(27);
    let forced = |t: &Tensor| {
        matches!(t.device(), Device::Cuda(_))
            .then(|| force_conv_algorithm(ConvAlgorithm::ImplicitGemm))
    };
    for c in implicit_gemm_cases() {
        let name = format!("implicit GEMM {:?} o{} k{:?} {:?}", c.x, c.o, c.k, c.spec);
        let x = randn(&c.x, &mut rng);
        let w = randn(&weight_shape(&c), &mut rng);
        for dtype in [DType::F16, DType::BF16] {
            for (layout, _) in layouts(&x) {
                let view = move |t: &Tensor| -> smith::Result<Tensor> {
                    Ok(layouts(t)
                        .into_iter()
                        .find(|(n, _)| *n == layout)
                        .map(|(_, v)| v)
                        .unwrap_or_else(|| t.clone()))
                };
                check(
                    &format!("{name} {layout}"),
                    &[x.clone(), w.clone()],
                    dtype,
                    tol(dtype),
                    |t| {
                        let _g = forced(&t[0]);
                        view(&t[0])?.conv2d(&t[1], None, c.spec)
                    },
                );
            }
            // A slice of the channels of a wider buffer (an offset and a channel stride).
            let wide = randn(&[c.x[0], c.x[1] + 3, c.x[2], c.x[3]], &mut rng);
            check(
                &format!("{name} channel slice"),
                &[wide, w.clone()],
                dtype,
                tol(dtype),
                |t| {
                    let _g = forced(&t[0]);
                    let x = t[0]
                        .permute(&[0, 2, 3, 1])?
                        .contiguous()?
                        .permute(&[0, 3, 1, 2])?;
                    x.narrow(1, 2, c.x[1])?.conv2d(&t[1], None, c.spec)
                },
            );
        }
        let Some((dev, _gpu)) = gpu() else { continue };
        // Gradients: a random cotangent r, so that dX and dW depend on x, w and r alone.
        let y_shape = x.conv2d(&w, None, c.spec).unwrap().shape().to_vec();
        let r = randn(&y_shape, &mut rng);
        let grads = |x: &Tensor, w: &Tensor, r: &Tensor| -> smith::Result<Vec<f64>> {
            let _g = forced(x);
            let x = x.requires_grad()?;
            let w = w.requires_grad()?;
            let y = x.conv2d(&w, None, c.spec)?;
            let g = y.mul(r)?.to_dtype(DType::F32)?.sum_all()?.backward()?;
            let flat = |v: &Tensor| -> smith::Result<Vec<f64>> {
                g.get(v)
                    .ok_or_else(|| smith::Error::invalid("test", "no gradient"))?
                    .to_vec_f64()
            };
            Ok([flat(&x)?, flat(&w)?].concat())
        };
        for dtype in [DType::F16, DType::BF16] {
            let round = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let want = grads(
                &round(&x).to_dtype(DType::F32).unwrap(),
                &round(&w).to_dtype(DType::F32).unwrap(),
                &round(&r).to_dtype(DType::F32).unwrap(),
            )
            .unwrap();
            let on = |t: &Tensor| round(t).to_device(dev).unwrap();
            let got = grads(&on(&x), &on(&w), &on(&r))
                .unwrap_or_else(|e| panic!("{name} {dtype} grads on cuda: {e}"));
            let err = rel_err(&got, &want);
            eprintln!("{name} {dtype} grads cuda vs cpu f32: relative error {err:.1e}");
            assert!(
                err <= tol(dtype),
                "{name} {dtype} grads: relative error {err:e}"
            );
        }
    }
    // The rules pick implicit GEMM for bf16 on the GPU, and its kernel is what runs.
    let Some((dev, _gpu)) = gpu() else { return };
    let x = randn(&[2, 16, 8, 8], &mut rng)
        .to_dtype(DType::BF16)
        .unwrap()
        .to_device(dev)
        .unwrap();
    let w = randn(&[16, 16, 3, 3], &mut rng)
        .to_dtype(DType::BF16)
        .unwrap()
        .to_device(dev)
        .unwrap();
    let mut y = None;
    let names = kernels_run(|| y = Some(x.conv2d(&w, None, spec((1, 1), (1, 1), (1, 1), 1))));
    y.unwrap().unwrap();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("conv_gather") && n.ends_with("_bf16")),
        "kernels run: {names:?}"
    );
}

/// Forcing implicit GEMM where it cannot run (the CPU, f32, groups) is an error naming it.
fn implicit_gemm_refuses_what_it_cannot_run() {
    let mut rng = Rng::new(28);
    let _forced = force_conv_algorithm(ConvAlgorithm::ImplicitGemm);
    let x = randn(&[1, 8, 6, 6], &mut rng);
    let w = randn(&[8, 8, 3, 3], &mut rng);
    let e = x
        .conv2d(&w, None, Conv2dSpec::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("implicit GEMM") && e.contains("CUDA"), "{e}");
    if let Some((dev, _gpu)) = gpu() {
        let xg = x.to_device(dev).unwrap();
        let wg = w.to_device(dev).unwrap();
        let e = xg
            .conv2d(&wg, None, Conv2dSpec::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("f16 and bf16"), "{e}");
        let (xh, wh) = (
            xg.to_dtype(DType::BF16).unwrap(),
            randn(&[8, 4, 3, 3], &mut rng)
                .to_dtype(DType::BF16)
                .unwrap()
                .to_device(dev)
                .unwrap(),
        );
        let e = xh
            .conv2d(&wh, None, spec((1, 1), (1, 1), (1, 1), 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("groups"), "{e}");
    }
    assert_eq!(
        ConvAlgorithm::parse("implicit-gemm").unwrap(),
        ConvAlgorithm::ImplicitGemm
    );
}
