//! Quantized matrices: row lookups and products of every kept-quantized ggml type against the CPU.
//!
//! Each test runs on every device present: through `check`, the CPU against the same op in
//! f64 and a GPU against the CPU; tests of GPU-only paths show as ignored without a GPU
//! (`SMITH_REQUIRE_CUDA=1` makes a missing GPU a failure).

mod common;

use common::devices::*;
use smith::backend::cuda;
use smith::{DType, Device, Rng, Tensor};

fn main() {
    common::run_suite(vec![(
        "quantized_kernels_match_the_cpu",
        quantized_kernels_match_the_cpu,
        needs_gpu(),
    )]);
}

fn quantized_kernels_match_the_cpu() {
    // TF32 off: beyond 8 rows the product is a dequantized GEMM.
    let _tf = tf32_lock();
    let (dev, _gpu) = require_gpu();
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
        (smith::ggml_types::GgmlType::Q4K, 40),
        (smith::ggml_types::GgmlType::Q6K, 9),
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
