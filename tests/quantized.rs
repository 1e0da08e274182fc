//! Quantized matrices on the CPU: products and lookups that dequantize row by row equal
//! the dense reference built from the bit-exact dequantizer, for every quantized type,
//! stacks of mixed types, and the errors around them. (tests/cuda_parity.rs checks the GPU
//! kernels against these.)

mod common;

use common::{random_quant_rows, rel_err, QUANT_TYPES};
use smith::ggml_types::{dequantize, GgmlType};
use smith::{DType, Device, QMatrix, Rng, Tensor};

/// The dense `[rows, cols]` reference of raw blocks.
fn dense(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Tensor {
    Tensor::from_vec(dequantize(ty, bytes).unwrap(), &[rows, cols], Device::Cpu).unwrap()
}

#[test]
fn products_and_lookups_match_the_dense_reference_for_every_type() {
    let mut rng = Rng::new(11);
    let _g = smith::no_grad();
    for ty in QUANT_TYPES {
        let (rows, cols) = (37, 2 * ty.block().0);
        let bytes = random_quant_rows(ty, rows, cols, &mut rng);
        let q = QMatrix::from_bytes(ty, rows, cols, &bytes, Device::Cpu).unwrap();
        let w = dense(ty, rows, cols, &bytes);
        assert_eq!(q.shape(), [rows, cols]);
        assert_eq!(q.nbytes(), bytes.len());
        // Dequantizing the whole matrix and looking rows up are exact.
        assert_eq!(
            q.dequantize(DType::F32).unwrap().to_vec::<f32>().unwrap(),
            w.to_vec::<f32>().unwrap(),
            "{}",
            ty.name()
        );
        let ids = Tensor::from_vec(vec![5i64, 0, 36, 5], &[2, 2], Device::Cpu).unwrap();
        let got = q.embedding(&ids, DType::F32).unwrap();
        assert_eq!(got.shape(), [2, 2, cols]);
        let want = Tensor::embedding(&ids, &w).unwrap();
        assert_eq!(got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        // Products for one and for many rows, on a non-contiguous input, in three dtypes.
        for m in [1, 5] {
            let x = Tensor::randn(&[cols, m], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)
                .unwrap()
                .t()
                .unwrap();
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let xd = x.to_dtype(dtype).unwrap();
                let got = q.linear(&xd).unwrap();
                assert_eq!(got.dtype(), dtype);
                assert_eq!(got.shape(), [m, rows]);
                let want = xd
                    .to_dtype(DType::F32)
                    .unwrap()
                    .matmul(&w.t().unwrap())
                    .unwrap();
                let err = rel_err(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
                assert!(err < tol, "{} m={m} {dtype}: error {err:e}", ty.name());
            }
        }
    }
}

#[test]
fn stacks_of_mixed_types_compute_each_part_in_place() {
    let mut rng = Rng::new(12);
    let _g = smith::no_grad();
    let cols = 512;
    let parts = [
        (GgmlType::Q4K, 16),
        (GgmlType::Q4K, 8),
        (GgmlType::Q6K, 8),
        (GgmlType::Q8_0, 3),
    ];
    let bytes: Vec<Vec<u8>> = parts
        .iter()
        .map(|&(ty, rows)| random_quant_rows(ty, rows, cols, &mut rng))
        .collect();
    let spec: Vec<(GgmlType, usize, &[u8])> = parts
        .iter()
        .zip(&bytes)
        .map(|(&(ty, rows), b)| (ty, rows, b.as_slice()))
        .collect();
    let q = QMatrix::from_parts(cols, &spec, Device::Cpu).unwrap();
    // The two Q4_K parts are joined.
    assert_eq!(
        q.types(),
        vec![(GgmlType::Q4K, 24), (GgmlType::Q6K, 8), (GgmlType::Q8_0, 3)]
    );
    let w = Tensor::cat(
        &parts
            .iter()
            .zip(&bytes)
            .map(|(&(ty, rows), b)| dense(ty, rows, cols, b))
            .collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    assert_eq!(
        q.dequantize(DType::F32).unwrap().to_vec::<f32>().unwrap(),
        w.to_vec::<f32>().unwrap()
    );
    let x = Tensor::randn(&[2, 3, cols], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let got = q.linear(&x).unwrap();
    assert_eq!(got.shape(), [2, 3, 35]);
    let want = x.matmul(&w.t().unwrap()).unwrap();
    let err = rel_err(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
    assert!(err < 1e-5, "error {err:e}");
    assert!(q
        .embedding(
            &Tensor::from_vec(vec![0i64], &[1], Device::Cpu).unwrap(),
            DType::F32
        )
        .unwrap_err()
        .to_string()
        .contains("single part"));
}

#[test]
fn bad_shapes_types_and_uses_are_errors() {
    let mut rng = Rng::new(13);
    let bytes = random_quant_rows(GgmlType::Q4_0, 4, 64, &mut rng);
    let err = |r: smith::Result<QMatrix>| r.unwrap_err().to_string();
    // Wrong byte count, rows not whole blocks, a dense type.
    assert!(err(QMatrix::from_bytes(
        GgmlType::Q4_0,
        5,
        64,
        &bytes,
        Device::Cpu
    ))
    .contains("bytes"));
    assert!(err(QMatrix::from_bytes(
        GgmlType::Q4_0,
        8,
        32 + 16,
        &bytes,
        Device::Cpu
    ))
    .contains("whole"));
    assert!(err(QMatrix::from_bytes(
        GgmlType::F16,
        4,
        64,
        &bytes,
        Device::Cpu
    ))
    .contains("not a quantized type"));
    let q = QMatrix::from_bytes(GgmlType::Q4_0, 4, 64, &bytes, Device::Cpu).unwrap();
    let x = Tensor::randn(&[2, 63], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    assert!(q.linear(&x).is_err());
    // Gradients cannot flow into a quantized weight's input unnoticed.
    let x = Tensor::randn(&[2, 64], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)
        .unwrap()
        .requires_grad()
        .unwrap();
    assert!(q.linear(&x).unwrap_err().to_string().contains("inference"));
    assert!(q.linear(&x.detach()).is_ok());
    // Ids outside the table and non-integer ids.
    let ids = Tensor::from_vec(vec![4i64], &[1], Device::Cpu).unwrap();
    assert!(q
        .embedding(&ids, DType::F32)
        .unwrap_err()
        .to_string()
        .contains("outside"));
    let ids = Tensor::from_vec(vec![1.0f32], &[1], Device::Cpu).unwrap();
    assert!(q.embedding(&ids, DType::F32).is_err());
    let x = Tensor::randn(&[2, 64], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    assert!(q.linear(&x.to_dtype(DType::F64).unwrap()).is_err());
}
