//! Pooling: max (−inf padding, dilation, `ceil_mode`, indices), average
//! (`count_include_pad`, `ceil_mode`), adaptive average and max, global average, against
//! naive f64 loops written from PyTorch's definitions; gradients against finite
//! differences; every float dtype on every device (`check`); bad shapes as clear errors.

mod common;

use common::devices::*;
use common::{assert_close, gradcheck, leaf};
use smith::{DType, Device, Pool2dSpec, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        (
            "max_pool_matches_naive_loops",
            max_pool_matches_naive_loops,
            None,
        ),
        (
            "avg_pool_matches_naive_loops",
            avg_pool_matches_naive_loops,
            None,
        ),
        (
            "adaptive_pools_match_naive_loops",
            adaptive_pools_match_naive_loops,
            None,
        ),
        (
            "pool_gradients_pass_finite_differences",
            pool_gradients_pass_finite_differences,
            None,
        ),
        (
            "pools_in_every_dtype_on_every_device",
            pools_in_every_dtype_on_every_device,
            None,
        ),
        (
            "bad_pool_shapes_are_errors",
            bad_pool_shapes_are_errors,
            None,
        ),
    ]);
}

fn rand_f64(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::rand(shape, -1.0, 1.0, DType::F64, Device::Cpu, rng).unwrap()
}

fn spec(
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    d: (usize, usize),
    ceil: bool,
) -> Pool2dSpec {
    Pool2dSpec {
        kernel: k,
        stride: s,
        padding: p,
        dilation: d,
        ceil_mode: ceil,
        count_include_pad: true,
    }
}

/// PyTorch's output length of one pooling axis.
fn out_len(len: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> usize {
    let span = (len + 2 * p) as i64 - (d * (k - 1) + 1) as i64;
    let mut out = if ceil {
        (span + s as i64 - 1).div_euclid(s as i64) + 1
    } else {
        span.div_euclid(s as i64) + 1
    };
    if ceil && (out - 1) * s as i64 >= (len + p) as i64 {
        out -= 1;
    }
    out as usize
}

/// Max pooling by its definition: values, the flat index of each output's first largest
/// input, and the output shape.
fn naive_max(x: &[f64], shape: [usize; 4], sp: &Pool2dSpec) -> (Vec<f64>, Vec<i64>, [usize; 4]) {
    let [n, c, h, w] = shape;
    let oh = out_len(
        h,
        sp.kernel.0,
        sp.stride.0,
        sp.padding.0,
        sp.dilation.0,
        sp.ceil_mode,
    );
    let ow = out_len(
        w,
        sp.kernel.1,
        sp.stride.1,
        sp.padding.1,
        sp.dilation.1,
        sp.ceil_mode,
    );
    let (mut vals, mut idx) = (Vec::new(), Vec::new());
    for plane in 0..n * c {
        for y in 0..oh {
            for xo in 0..ow {
                let (mut best, mut at) = (f64::NEG_INFINITY, -1i64);
                for i in 0..sp.kernel.0 {
                    for j in 0..sp.kernel.1 {
                        let r = (y * sp.stride.0 + i * sp.dilation.0) as i64 - sp.padding.0 as i64;
                        let q = (xo * sp.stride.1 + j * sp.dilation.1) as i64 - sp.padding.1 as i64;
                        if r < 0 || q < 0 || r >= h as i64 || q >= w as i64 {
                            continue;
                        }
                        let v = x[plane * h * w + r as usize * w + q as usize];
                        if v > best {
                            (best, at) = (v, r * w as i64 + q);
                        }
                    }
                }
                vals.push(best);
                idx.push(at);
            }
        }
    }
    (vals, idx, [n, c, oh, ow])
}

/// Average pooling by PyTorch's definition.
fn naive_avg(x: &[f64], shape: [usize; 4], sp: &Pool2dSpec) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, w] = shape;
    let oh = out_len(h, sp.kernel.0, sp.stride.0, sp.padding.0, 1, sp.ceil_mode);
    let ow = out_len(w, sp.kernel.1, sp.stride.1, sp.padding.1, 1, sp.ceil_mode);
    let mut out = Vec::new();
    for plane in 0..n * c {
        for y in 0..oh {
            for xo in 0..ow {
                let h0 = (y * sp.stride.0) as i64 - sp.padding.0 as i64;
                let w0 = (xo * sp.stride.1) as i64 - sp.padding.1 as i64;
                let h1 = (h0 + sp.kernel.0 as i64).min((h + sp.padding.0) as i64);
                let w1 = (w0 + sp.kernel.1 as i64).min((w + sp.padding.1) as i64);
                let pool = (h1 - h0) * (w1 - w0);
                let (h0, w0) = (h0.max(0), w0.max(0));
                let (h1, w1) = (h1.min(h as i64), w1.min(w as i64));
                let mut sum = 0.0;
                for r in h0..h1 {
                    for q in w0..w1 {
                        sum += x[plane * h * w + r as usize * w + q as usize];
                    }
                }
                let div = if sp.count_include_pad {
                    pool
                } else {
                    (h1 - h0) * (w1 - w0)
                };
                out.push(sum / div as f64);
            }
        }
    }
    (out, [n, c, oh, ow])
}

/// Adaptive pooling by PyTorch's window rule; `max` or average.
fn naive_adaptive(x: &[f64], shape: [usize; 4], out: (usize, usize), max: bool) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let mut v = Vec::new();
    for plane in 0..n * c {
        for y in 0..out.0 {
            let (h0, h1) = (y * h / out.0, ((y + 1) * h).div_ceil(out.0));
            for xo in 0..out.1 {
                let (w0, w1) = (xo * w / out.1, ((xo + 1) * w).div_ceil(out.1));
                let cells =
                    (h0..h1).flat_map(|r| (w0..w1).map(move |q| x[plane * h * w + r * w + q]));
                v.push(if max {
                    cells.fold(f64::NEG_INFINITY, f64::max)
                } else {
                    cells.sum::<f64>() / ((h1 - h0) * (w1 - w0)) as f64
                });
            }
        }
    }
    v
}

fn max_specs() -> Vec<Pool2dSpec> {
    vec![
        Pool2dSpec::new((2, 2)),
        spec((3, 3), (2, 2), (1, 1), (1, 1), false),
        spec((3, 2), (2, 1), (1, 0), (2, 1), false),
        spec((3, 3), (2, 2), (0, 1), (1, 1), true),
        spec((2, 3), (3, 2), (1, 1), (1, 2), true),
    ]
}

fn max_pool_matches_naive_loops() {
    let mut rng = Rng::new(31);
    for shape in [[2, 3, 7, 8], [1, 2, 9, 6], [1, 1, 5, 5]] {
        let x = rand_f64(&shape, &mut rng);
        let xv = x.to_vec_f64().unwrap();
        // Channels-last storage: the pool reads a strided view.
        let cl = x
            .permute(&[0, 2, 3, 1])
            .unwrap()
            .contiguous()
            .unwrap()
            .permute(&[0, 3, 1, 2])
            .unwrap();
        for sp in max_specs() {
            let (want, want_idx, out_shape) = naive_max(&xv, shape, &sp);
            for input in [&x, &cl] {
                let (y, idx) = input.max_pool2d_with_indices(sp).unwrap();
                assert_eq!(y.shape(), out_shape, "{shape:?} {sp:?}");
                assert_eq!(y.to_vec_f64().unwrap(), want, "{shape:?} {sp:?}");
                assert_eq!(idx.to_vec::<i64>().unwrap(), want_idx, "{shape:?} {sp:?}");
                assert_eq!(input.max_pool2d(sp).unwrap().to_vec_f64().unwrap(), want);
            }
        }
    }
}

fn avg_pool_matches_naive_loops() {
    let mut rng = Rng::new(32);
    for shape in [[2, 3, 7, 8], [1, 2, 6, 9]] {
        let x = rand_f64(&shape, &mut rng);
        let xv = x.to_vec_f64().unwrap();
        for base in [
            Pool2dSpec::new((2, 2)),
            spec((3, 3), (2, 2), (1, 1), (1, 1), false),
            spec((3, 2), (2, 3), (1, 1), (1, 1), true),
            spec((2, 2), (3, 3), (1, 0), (1, 1), true),
        ] {
            for include in [true, false] {
                let sp = Pool2dSpec {
                    count_include_pad: include,
                    ..base
                };
                let (want, out_shape) = naive_avg(&xv, shape, &sp);
                let y = x.avg_pool2d(sp).unwrap();
                assert_eq!(y.shape(), out_shape, "{shape:?} {sp:?}");
                assert_close(&y.to_vec_f64().unwrap(), &want, 1e-12, &format!("{sp:?}"));
            }
        }
    }
}

fn adaptive_pools_match_naive_loops() {
    let mut rng = Rng::new(33);
    for (shape, out) in [
        ([2, 3, 7, 9], (3, 4)),
        ([1, 2, 5, 5], (5, 5)),
        ([1, 2, 6, 4], (1, 1)),
        ([1, 1, 4, 3], (7, 5)),
    ] {
        let x = rand_f64(&shape, &mut rng);
        let xv = x.to_vec_f64().unwrap();
        let avg = x.adaptive_avg_pool2d(out).unwrap();
        assert_eq!(avg.shape(), [shape[0], shape[1], out.0, out.1]);
        assert_close(
            &avg.to_vec_f64().unwrap(),
            &naive_adaptive(&xv, shape, out, false),
            1e-12,
            "avg",
        );
        let max = x.adaptive_max_pool2d(out).unwrap();
        assert_eq!(
            max.to_vec_f64().unwrap(),
            naive_adaptive(&xv, shape, out, true),
            "max"
        );
    }
    let x = rand_f64(&[2, 3, 4, 5], &mut rng);
    let g = x.global_avg_pool2d().unwrap();
    assert_eq!(g.shape(), [2, 3, 1, 1]);
    assert_close(
        &g.to_vec_f64().unwrap(),
        &naive_adaptive(&x.to_vec_f64().unwrap(), [2, 3, 4, 5], (1, 1), false),
        1e-12,
        "global",
    );
}

fn pool_gradients_pass_finite_differences() {
    let mut rng = Rng::new(34);
    let input = [leaf(&[2, 2, 6, 5], &mut rng)];
    // The input arrives transposed, so gradients flow through a strided view.
    let view = |t: &Tensor| t.transpose(2, 3);
    gradcheck(&input, |t| {
        view(&t[0])?.max_pool2d(spec((3, 2), (2, 1), (1, 1), (1, 1), true))
    });
    gradcheck(&input, |t| {
        view(&t[0])?.avg_pool2d(Pool2dSpec {
            count_include_pad: false,
            ..spec((3, 3), (2, 2), (1, 1), (1, 1), true)
        })
    });
    gradcheck(&input, |t| view(&t[0])?.adaptive_avg_pool2d((3, 4)));
    gradcheck(&input, |t| view(&t[0])?.adaptive_max_pool2d((2, 3)));
    gradcheck(&input, |t| view(&t[0])?.global_avg_pool2d());
}

fn pools_in_every_dtype_on_every_device() {
    let _exact = exact_f32(); // f32 parity at f32 precision: TF32 off on the GPU
    let mut rng = Rng::new(35);
    let x = randn(&[2, 3, 9, 8], &mut rng);
    for dtype in FLOATS {
        for sp in max_specs() {
            check(
                &format!("max_pool2d {sp:?}"),
                std::slice::from_ref(&x),
                dtype,
                0.0,
                |t| t[0].max_pool2d(sp),
            );
        }
        let avg = spec((3, 3), (2, 2), (1, 1), (1, 1), true);
        check(
            "avg_pool2d",
            std::slice::from_ref(&x),
            dtype,
            tol(dtype),
            |t| t[0].avg_pool2d(avg),
        );
        check(
            "adaptive_avg_pool2d",
            std::slice::from_ref(&x),
            dtype,
            tol(dtype),
            |t| t[0].adaptive_avg_pool2d((4, 3)),
        );
        check(
            "adaptive_max_pool2d",
            std::slice::from_ref(&x),
            dtype,
            0.0,
            |t| t[0].adaptive_max_pool2d((4, 3)),
        );
    }
    // Gradients of all of them at once, through a channels-last input.
    check(
        "pool grads",
        std::slice::from_ref(&x),
        DType::F32,
        1e-5,
        |t| {
            let x = t[0]
                .permute(&[0, 2, 3, 1])?
                .contiguous()?
                .permute(&[0, 3, 1, 2])?
                .requires_grad()?;
            let y = x
                .max_pool2d(spec((3, 3), (2, 2), (1, 1), (1, 1), true))?
                .sum_all()?
                .add(
                    &x.avg_pool2d(Pool2dSpec::new((2, 2)))?
                        .mul(&x.avg_pool2d(Pool2dSpec::new((2, 2)))?)?
                        .sum_all()?,
                )?
                .add(&x.adaptive_avg_pool2d((3, 3))?.sum_all()?)?
                .add(&x.adaptive_max_pool2d((2, 2))?.sum_all()?)?;
            let g = y.backward()?;
            g.get(&x)
                .cloned()
                .ok_or_else(|| smith::Error::invalid("test", "no gradient"))
        },
    );
}

fn bad_pool_shapes_are_errors() {
    let mut rng = Rng::new(36);
    let x = randn(&[1, 2, 5, 5], &mut rng);
    let err = |r: smith::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(x.max_pool2d(Pool2dSpec::new((7, 2)))).contains("padded input"));
    assert!(
        err(x.max_pool2d(spec((2, 2), (2, 2), (2, 0), (1, 1), false))).contains("half the window")
    );
    assert!(err(x.max_pool2d(spec((2, 2), (0, 2), (0, 0), (1, 1), false))).contains("positive"));
    assert!(err(x.avg_pool2d(spec((2, 2), (2, 2), (0, 0), (2, 1), false))).contains("dilation"));
    assert!(err(x.adaptive_avg_pool2d((0, 2))).contains("positive"));
    let flat = randn(&[2, 5, 5], &mut rng);
    assert!(err(flat.max_pool2d(Pool2dSpec::new((2, 2)))).contains("[N, C, H, W]"));
    let empty = Tensor::zeros(&[1, 2, 0, 4], DType::F32, Device::Cpu).unwrap();
    assert!(err(empty.adaptive_max_pool2d((2, 2))).contains("no rows"));
    let ints = Tensor::zeros(&[1, 2, 4, 4], DType::I64, Device::Cpu).unwrap();
    assert!(ints.max_pool2d(Pool2dSpec::new((2, 2))).is_err());
}
