//! `.pth` files written by `torch.save` (fixtures from tools/make_resnet_fixtures.py): every
//! storage dtype, strided and shared-storage views, plain values around the tensors, and
//! hostile or broken files (code in the pickle, a pickled module, the legacy format,
//! truncation, random corruption), each a clear error and never a panic.

mod common;

use smith::io::pth::read_pth;
use smith::io::{load_pth, load_safetensors};
use smith::{DType, Rng};
use std::path::{Path, PathBuf};

fn main() {
    common::run_suite(vec![
        (
            "every_dtype_and_view_is_read",
            every_dtype_and_view_is_read,
            None,
        ),
        ("plain_values_are_kept", plain_values_are_kept, None),
        (
            "code_in_the_pickle_is_refused",
            code_in_the_pickle_is_refused,
            None,
        ),
        (
            "a_pickled_module_and_the_legacy_format_are_refused",
            a_pickled_module_and_the_legacy_format_are_refused,
            None,
        ),
        (
            "truncated_and_corrupt_files_are_errors",
            truncated_and_corrupt_files_are_errors,
            None,
        ),
    ]);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vision")
        .join(name)
}

fn every_dtype_and_view_is_read() {
    let pth = load_pth(&fixture("pth_zoo.pth")).unwrap();
    let expected = load_safetensors(&fixture("pth_zoo_expected.safetensors")).unwrap();
    let state = pth.state_dict();
    assert_eq!(
        state.len(),
        expected.len(),
        "{:?}",
        state.keys().collect::<Vec<_>>()
    );
    for (name, want) in &expected {
        let got = state
            .get(name)
            .unwrap_or_else(|| panic!("`{name}` missing; `model.` should be stripped"));
        assert_eq!(got.shape(), want.shape(), "{name}");
        assert_eq!(got.dtype(), want.dtype(), "{name}");
        assert_eq!(
            got.to_vec_f64().unwrap(),
            want.to_vec_f64().unwrap(),
            "{name}"
        );
    }
    // The dtypes PyTorch wrote, as smith holds them.
    let dtype = |n: &str| state[n].dtype();
    assert_eq!(dtype("f16"), DType::F16);
    assert_eq!(dtype("bf16"), DType::BF16);
    assert_eq!(dtype("f64"), DType::F64);
    assert_eq!(dtype("i32"), DType::I64);
    assert_eq!(dtype("bool"), DType::U8);
    assert_eq!(
        state["i16"].to_vec_f64().unwrap(),
        vec![-300.0, 7.0, 12000.0]
    );
    assert_eq!(state["i8"].to_vec_f64().unwrap(), vec![-128.0, 0.0, 127.0]);
    assert_eq!(
        state["u8"].to_vec_f64().unwrap(),
        vec![250.0, 251.0, 252.0, 253.0, 254.0, 255.0]
    );
    assert_eq!(state["bool"].to_vec_f64().unwrap(), vec![1.0, 0.0, 1.0]);
    assert_eq!(state["scalar"].shape(), &[] as &[usize]);
    assert_eq!(state["empty"].shape(), &[0, 3]);
    // Views: the slices share `base`'s storage; the transposed tensor is [5, 4].
    assert_eq!(state["transposed"].shape(), &[5, 4]);
    let base = state["base"].to_vec_f64().unwrap();
    let slice_b = state["slice_b"].to_vec_f64().unwrap();
    assert_eq!(slice_b, (0..4).map(|r| base[r * 6 + 4]).collect::<Vec<_>>());
}

fn plain_values_are_kept() {
    let pth = load_pth(&fixture("pth_zoo.pth")).unwrap();
    let get = |n: &str| {
        pth.values
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no value `{n}` in {:?}", pth.values))
    };
    assert_eq!(get("epoch"), "3");
    assert_eq!(get("lr"), "0.125");
    assert_eq!(get("name"), "\"zoo\"");
    assert_eq!(get("flags.0"), "True");
    assert_eq!(get("flags.1"), "None");
    assert_eq!(get("pair.1"), "-2");
    assert_eq!(get("big"), "1099511627776");
    assert_eq!(get("raw"), "<2 bytes>");
    assert!(pth.tensors.iter().any(|(n, _)| n == "model.param"));
}

fn code_in_the_pickle_is_refused() {
    let e = load_pth(&fixture("pth_evil.pth")).unwrap_err().to_string();
    assert!(
        e.contains("posix.system") || e.contains("os.system"),
        "the error should name the global: {e}"
    );
    assert!(e.contains("pth_evil.pth"), "{e}");
    assert!(e.contains("not allowed"), "{e}");
}

fn a_pickled_module_and_the_legacy_format_are_refused() {
    let e = load_pth(&fixture("pth_module.pth"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("torch.nn.modules.linear"), "{e}");
    let e = load_pth(&fixture("pth_legacy.pth"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("before 1.6"), "{e}");
    let e = read_pth(b"hello", Path::new("x.pth"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a PyTorch file"), "{e}");
}

fn truncated_and_corrupt_files_are_errors() {
    let bytes = std::fs::read(fixture("resnet_small.pth")).unwrap();
    let full = read_pth(&bytes, Path::new("resnet_small.pth")).unwrap();
    assert!(full.tensors.len() > 40, "{}", full.tensors.len());
    for cut in [
        4,
        30,
        100,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 23,
        bytes.len() - 1,
    ] {
        let r = read_pth(&bytes[..cut], Path::new("cut.pth"));
        let e = r
            .err()
            .unwrap_or_else(|| panic!("a file cut at {cut} bytes was read"));
        assert!(e.to_string().contains("cut.pth"), "{e}");
    }
    // Random corruption: any outcome but a panic (or a read out of bounds) is acceptable.
    let zoo = std::fs::read(fixture("pth_zoo.pth")).unwrap();
    let mut rng = Rng::new(9);
    let mut errors = 0;
    for _ in 0..400 {
        let mut b = zoo.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] = rng.below(256) as u8;
        }
        if read_pth(&b, Path::new("bad.pth")).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0, "no corruption was noticed in 400 tries");
}
