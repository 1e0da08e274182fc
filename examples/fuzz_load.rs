//! Mutation fuzzing of the whole load path: the GGUF model fixtures with random byte
//! changes and with metadata integers set to hostile values (0, 1, 2^31, 2^40, 2^63, …),
//! each read, built into a model and run for one forward step and two generated tokens.
//! Errors are the expected outcome; a panic, an abort or an input that takes longer than
//! `--hang-secs` is a bug. The input being tried is kept at the path printed first, so an
//! abort leaves it behind for a regression test.
//!
//! `cargo run --release --example fuzz_load -- SECONDS` (run it under `ulimit -v` to catch
//! allocations the file cannot back).

use smith::infer::generate::{generate, Sampling};
use smith::models::from_gguf::load_gguf_model;
use smith::{DType, Device, Rng};
use std::time::{Duration, Instant};

/// Hostile integers for metadata values.
const NASTY: [u64; 9] = [0, 1, 2, 3, 1 << 31, 1 << 32, 1 << 40, 1 << 63, u64::MAX];

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_models");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&root)
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .map(|p| std::fs::read(p).expect("fixture"))
        .collect();
    seeds.sort();
    let scratch = std::env::temp_dir().join(format!("smith_fuzz_load_{}.gguf", std::process::id()));
    println!("current input: {}", scratch.display());
    let mut rng = Rng::new(std::process::id() as u64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut loaded) = (0u64, 0u64);
    while Instant::now() < deadline {
        let seed = &seeds[rng.below(seeds.len() as u64) as usize];
        let bytes = mutate(seed, &mut rng);
        std::fs::write(&scratch, &bytes).expect("scratch file");
        let started = Instant::now();
        let ok = try_load(&scratch);
        if started.elapsed() > Duration::from_secs(5) {
            let keep = scratch.with_extension("hang.gguf");
            let _ = std::fs::copy(&scratch, &keep);
            panic!(
                "an input took {:?}: kept at {}",
                started.elapsed(),
                keep.display()
            );
        }
        runs += 1;
        loaded += ok as u64;
    }
    std::fs::remove_file(&scratch).ok();
    println!("{runs} mutated model files in {secs}s, {loaded} loaded and ran, no panic or abort");
}

/// Reads, builds, runs one forward step and two tokens; whether it all succeeded.
fn try_load(path: &std::path::Path) -> bool {
    let Ok((model, _)) = load_gguf_model(path, Device::Cpu, DType::F32) else {
        return false;
    };
    let greedy = Sampling {
        temperature: 0.0,
        ..Sampling::default()
    };
    let prompt = [0u32, 1];
    generate(
        &model,
        &prompt,
        2,
        &greedy,
        &mut Rng::new(0),
        Device::Cpu,
        |_| Ok(true),
    )
    .is_ok()
}

/// One mutation of a seed: a metadata integer set to a hostile value (most often), or
/// random byte changes, insertions and a truncation.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    if rng.below(3) != 0 {
        let ints = integer_values(seed);
        if !ints.is_empty() {
            let (pos, width) = ints[rng.below(ints.len() as u64) as usize];
            let v = NASTY[rng.below(NASTY.len() as u64) as usize].to_le_bytes();
            bytes[pos..pos + width].copy_from_slice(&v[..width]);
            return bytes;
        }
    }
    let span = 4096.min(bytes.len());
    for _ in 0..1 + rng.below(8) {
        let i = rng.below(span as u64) as usize;
        match rng.below(3) {
            0 => bytes[i] = rng.below(256) as u8,
            1 => bytes[i] ^= 1 << rng.below(8),
            _ => bytes.insert(i, rng.below(256) as u8),
        }
    }
    if rng.below(10) == 0 {
        bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
    }
    bytes
}

/// (byte offset, width) of every scalar integer metadata value of a GGUF file, found by
/// walking the header the way the format lays it out.
fn integer_values(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let u64_at =
        |p: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(p..p + 8)?.try_into().ok()?)) };
    let u32_at =
        |p: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(p..p + 4)?.try_into().ok()?)) };
    let Some(n_kv) = u64_at(16) else { return out };
    let mut p = 24usize;
    let width = |ty: u32| match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    };
    for _ in 0..n_kv.min(10_000) {
        let Some(klen) = u64_at(p) else { break };
        p = p.saturating_add(8).saturating_add(klen as usize);
        let Some(ty) = u32_at(p) else { break };
        p += 4;
        match ty {
            8 => {
                let Some(n) = u64_at(p) else { break };
                p = p.saturating_add(8).saturating_add(n as usize);
            }
            9 => {
                let (Some(elem), Some(n)) = (u32_at(p), u64_at(p + 4)) else {
                    break;
                };
                p += 12;
                for _ in 0..n.min(1 << 24) {
                    match (elem, width(elem)) {
                        (8, _) => {
                            let Some(len) = u64_at(p) else { return out };
                            p = p.saturating_add(8).saturating_add(len as usize);
                        }
                        (_, Some(w)) => p += w,
                        _ => return out,
                    }
                }
            }
            t => match width(t) {
                Some(w) => {
                    if t != 6 && t != 7 && t != 12 && p + w <= b.len() {
                        out.push((p, w));
                    }
                    p += w;
                }
                None => break,
            },
        }
    }
    out
}
