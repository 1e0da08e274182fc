//! Mutation fuzzing of the GGUF, safetensors and `.pth` readers: random byte changes, insertions
//! and truncations of the test fixtures, for as long as asked. Any panic is a bug; errors
//! are the expected outcome.
//!
//! `cargo run --release --example fuzz_readers -- SECONDS`

use smith::io::gguf::GgufFile;
use smith::io::load_safetensors;
use smith::io::pth::read_pth;
use smith::Rng;
use std::time::{Duration, Instant};

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let seeds = [
        (root.join("gguf/quant_types.gguf"), "gguf"),
        (root.join("hf_gpt2/model.safetensors"), "safetensors"),
        (root.join("vision/pth_zoo.pth"), "pth"),
    ];
    let inputs: Vec<(Vec<u8>, &str)> = seeds
        .iter()
        .map(|(p, g)| (std::fs::read(p).expect("fixture"), *g))
        .collect();
    let scratch = std::env::temp_dir().join(format!("smith_fuzz_{}", std::process::id()));
    let mut rng = Rng::new(std::process::id() as u64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut accepted) = (0u64, 0u64);
    while Instant::now() < deadline {
        let (seed, kind) = &inputs[rng.below(inputs.len() as u64) as usize];
        let mut bytes = seed.clone();
        let span = if rng.below(3) == 0 {
            bytes.len()
        } else {
            2048.min(bytes.len())
        };
        for _ in 0..1 + rng.below(16) {
            let i = rng.below(span as u64) as usize;
            match rng.below(4) {
                0 => bytes[i] = rng.below(256) as u8,
                1 => bytes[i] ^= 1 << rng.below(8),
                2 => bytes[i] = [0u8, 0xff, 0x7f, 0x80][rng.below(4) as usize],
                _ => bytes.insert(i, rng.below(256) as u8),
            }
        }
        if rng.below(10) == 0 {
            bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
        }
        std::fs::write(&scratch, &bytes).expect("scratch file");
        let ok = match *kind {
            "gguf" => GgufFile::open(&scratch).map(|f| {
                for t in &f.tensors {
                    let _ = f.dequantize(&t.name);
                }
            }),
            "pth" => read_pth(&bytes, &scratch).map(|_| ()),
            _ => load_safetensors(&scratch).map(|_| ()),
        };
        runs += 1;
        accepted += ok.is_ok() as u64;
    }
    std::fs::remove_file(&scratch).ok();
    println!("{runs} mutated files in {secs}s, {accepted} still valid, no panic");
}
