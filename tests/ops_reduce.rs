//! Reductions: sums, maxima and minima over dims, long rows, tens of millions of elements.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::devices::*;
use smith::{DType, Rng, Tensor};

fn main() {
    common::run_suite(vec![
        ("reductions_over_dims", reductions_over_dims, None),
        (
            "long_row_reductions_match_the_cpu",
            long_row_reductions_match_the_cpu,
            None,
        ),
        (
            "sums_over_tens_of_millions_of_elements_match_the_cpu",
            sums_over_tens_of_millions_of_elements_match_the_cpu,
            needs_gpu(),
        ),
    ]);
}

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
/// Sums over more rows than a grid has blocks in y (65535 chunks of 256 rows).
fn sums_over_tens_of_millions_of_elements_match_the_cpu() {
    let (dev, _gpu) = require_gpu();
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

trait LastT {
    fn t_last(&self) -> smith::Result<Tensor>;
}
impl LastT for Tensor {
    fn t_last(&self) -> smith::Result<Tensor> {
        self.transpose(1, 2)
    }
}
