//! The GGUF reader and dequantizers: every supported tensor type bit for bit against the
//! reference dequantizers of the `gguf` package (tests/fixtures/gguf, made by
//! tools/make_gguf_fixtures.py), metadata of every value type, and malformed files (each an
//! error, never a panic or a huge allocation).

use smith::ggml_types::GgmlType;
use smith::io::gguf::{GgufFile, Value};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/quant_types.gguf")
}

#[test]
fn every_type_dequantizes_bit_for_bit_like_the_reference() {
    let f = GgufFile::open(&fixture()).unwrap();
    assert_eq!(f.version, 3);
    let names = [
        "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k",
        "q5_k", "q6_k",
    ];
    for name in names {
        let info = f.tensor_info(name).unwrap();
        assert_eq!(info.ty.name().to_lowercase(), name);
        let got = f.dequantize(name).unwrap();
        let want = f.dequantize(&format!("{name}.expected")).unwrap();
        assert_eq!(got.shape(), want.shape(), "{name}");
        let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        let mismatches = g
            .iter()
            .zip(&w)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            mismatches,
            0,
            "{name}: {mismatches} of {} values differ",
            g.len()
        );
        assert!(
            w.iter().any(|&v| v != 0.0),
            "{name}: reference is all zeros"
        );
    }
}

#[test]
fn metadata_of_every_value_type_reads_back() {
    let f = GgufFile::open(&fixture()).unwrap();
    assert_eq!(f.architecture(), Some("llama"));
    let expect = [
        ("test.u8", Value::U8(200)),
        ("test.i8", Value::I8(-100)),
        ("test.u16", Value::U16(60000)),
        ("test.i16", Value::I16(-30000)),
        ("test.i32", Value::I32(-123456)),
        ("test.u64", Value::U64(1 << 40)),
        ("test.i64", Value::I64(-(1 << 40))),
        ("test.f32", Value::F32(0.5)),
        ("test.f64", Value::F64(0.25)),
        ("test.bool", Value::Bool(true)),
        ("test.string", Value::String("héllo".into())),
    ];
    for (k, v) in expect {
        assert_eq!(f.get(k), Some(&v), "{k}");
    }
    assert_eq!(
        f.get("llama.context_length").and_then(|v| v.as_u64()),
        Some(64)
    );
    assert_eq!(
        f.get("tokenizer.ggml.model").and_then(|v| v.as_str()),
        Some("gpt2")
    );
    match f.get("tokenizer.ggml.tokens") {
        Some(Value::Array(v)) => assert_eq!(v.len(), 3),
        other => panic!("tokens: {other:?}"),
    }
}

#[test]
fn type_ids_and_sizes() {
    for id in [0u32, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 30] {
        let t = GgmlType::from_id(id).unwrap();
        assert_eq!(t.id(), id);
    }
    let err = GgmlType::from_id(16).unwrap_err().to_string();
    assert!(err.contains("16"), "{err}");
    assert_eq!(GgmlType::Q4_0.bytes_for(64), Some(36));
    assert_eq!(GgmlType::Q4_0.bytes_for(65), None);
    assert_eq!(GgmlType::Q6K.bytes_for(512), Some(420));
}

fn write_temp(bytes: &[u8], tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("smith_gguf_{}_{tag}.gguf", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open_err(bytes: &[u8], tag: &str) -> String {
    let p = write_temp(bytes, tag);
    let r = GgufFile::open(&p);
    std::fs::remove_file(&p).ok();
    match r {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_files_are_errors_that_name_the_offset() {
    let good = std::fs::read(fixture()).unwrap();
    // Truncated anywhere: an error (or, cut inside the data, an out-of-file tensor).
    for cut in [0, 3, 7, 15, 23, 40, 200, good.len() / 2, good.len() - 1] {
        let e = open_err(&good[..cut], "cut");
        assert!(!e.is_empty(), "truncated at {cut} was accepted");
    }
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(open_err(&bad, "magic").contains("magic"));
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(open_err(&bad, "version").contains("version 9"));
    // Absurd counts never allocate: they are checked against the bytes left.
    let mut bad = good.clone();
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_err(&bad, "tensors").contains("tensor count"));
    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(open_err(&bad, "kv").contains("metadata count"));
    // The first key's length.
    let mut bad = good.clone();
    bad[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
    let e = open_err(&bad, "keylen");
    assert!(e.contains("at byte 24"), "{e}");
}

/// Random corruption of the fixture, many times over: never a panic.
#[test]
fn random_corruption_never_panics() {
    let good = std::fs::read(fixture()).unwrap();
    let mut rng = smith::Rng::new(7);
    let p = write_temp(&good, "fuzz");
    for round in 0..400 {
        let mut bytes = good.clone();
        // Mostly the header and directory, where the structure is.
        let span = if round % 4 == 0 {
            bytes.len()
        } else {
            1200.min(bytes.len())
        };
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(span as u64) as usize;
            bytes[i] = rng.below(256) as u8;
        }
        if round % 7 == 0 {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
        }
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(f) = GgufFile::open(&p) {
            for t in f.tensors.clone() {
                let _ = f.dequantize(&t.name);
            }
        }
    }
    std::fs::remove_file(&p).ok();
}
