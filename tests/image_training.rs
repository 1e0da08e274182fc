//! `smith train --images`: a ResNet trained on an ImageFolder of generated stripes learns
//! it, resumes from its checkpoint where it stopped, and `smith classify` reads the run
//! folder; on scikit-learn's digits (tools/make_digits_imagefolder.py, when present) it
//! reaches 97% held-out accuracy.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let digits = digits_missing();
    common::run_suite(vec![
        (
            "stripes_are_learned_and_resumed",
            stripes_are_learned_and_resumed,
            None,
        ),
        ("digits_reach_97_percent", digits_reach_97_percent, digits),
    ]);
}

fn smith_bin() -> PathBuf {
    std::env::var_os("SMITH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_smith").into())
}

fn digits_dir() -> PathBuf {
    std::env::var_os("SMITH_DIGITS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/digits"))
}

/// Why the digits test cannot run (`SMITH_REQUIRE_DIGITS` makes it a failure).
fn digits_missing() -> Option<String> {
    if digits_dir().join("val").is_dir() {
        return None;
    }
    assert!(
        std::env::var_os("SMITH_REQUIRE_DIGITS").is_none(),
        "SMITH_REQUIRE_DIGITS is set but {} has no digits",
        digits_dir().display()
    );
    Some(format!(
        "no digits in {} (python3 tools/make_digits_imagefolder.py target/digits)",
        digits_dir().display()
    ))
}

/// 12x12 PNGs of three classes: horizontal stripes, vertical stripes, a checkerboard, each
/// with a random phase and noise.
fn write_stripes(root: &Path) {
    let mut rng = smith::Rng::new(4);
    for split in ["train", "val"] {
        for (c, name) in ["horizontal", "vertical", "checks"].iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..if split == "train" { 40 } else { 15 } {
                let phase = rng.below(2) as usize;
                let mut img = image::RgbImage::new(12, 12);
                for (x, y, p) in img.enumerate_pixels_mut() {
                    let (x, y) = (x as usize, y as usize);
                    let on = match c {
                        0 => (y / 2 + phase).is_multiple_of(2),
                        1 => (x / 2 + phase).is_multiple_of(2),
                        _ => (x / 2 + y / 2 + phase).is_multiple_of(2),
                    };
                    let v: i32 = if on { 200 } else { 40 } + rng.below(40) as i32 - 20;
                    *p = image::Rgb([v as u8; 3]);
                }
                img.save(dir.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
}

fn run(args: &[&str], extra: &[&Path]) -> String {
    let out = Command::new(smith_bin())
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "smith {args:?} failed:\n{text}");
    text
}

fn accuracies(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split("held-out accuracy ").nth(1))
        .filter_map(|r| r.split('%').next()?.parse().ok())
        .collect()
}

fn stripes_are_learned_and_resumed() {
    let root = std::env::temp_dir().join(format!("smith_stripes_{}", std::process::id()));
    let run_dir = root.join("run");
    write_stripes(&root);
    let log = run(
        &[
            "train",
            "--model",
            "resnet-small",
            "--device",
            "cpu",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--warmup",
            "5",
            "--images",
        ],
        &[&root, Path::new("--out"), &run_dir],
    );
    assert_eq!(accuracies(&log).len(), 3, "{log}");
    assert!(log.contains("confusion matrix"), "{log}");
    let run_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["epoch"], 3);
    assert_eq!(run_json["step"], 3 * 8); // 120 images in batches of 16
                                         // Resume for two more epochs: epochs 4 and 5, steps continuing from 24.
    let log = run(
        &["train", "--device", "cpu", "--epochs", "5", "--images"],
        &[&root, Path::new("--resume"), &run_dir],
    );
    let acc = accuracies(&log);
    assert_eq!(acc.len(), 2, "{log}");
    assert!(
        log.contains("epoch 4:") && log.contains("epoch 5:"),
        "{log}"
    );
    assert!(
        *acc.last().unwrap() >= 90.0,
        "stripes not learned after 5 epochs:\n{log}"
    );
    let run_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["step"], 5 * 8);
    // The run folder classifies with its own class names and preprocessing.
    let img = root.join("val/vertical/000.png");
    let out = run(
        &["classify", "--device", "cpu", "--top-k", "1", "--model"],
        &[&run_dir, Path::new("--image"), &img],
    );
    assert!(out.contains("vertical"), "{out}");
    // A folder without train/ and val/ needs --val.
    let bad = Command::new(smith_bin())
        .args(["train", "--device", "cpu", "--images"])
        .arg(root.join("train"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--val"));
    std::fs::remove_dir_all(&root).ok();
}

fn digits_reach_97_percent() {
    let out = std::env::temp_dir().join(format!("smith_digits_{}", std::process::id()));
    let started = std::time::Instant::now();
    let log = run(
        &[
            "train",
            "--model",
            "resnet-small",
            "--device",
            "cpu",
            "--images",
        ],
        &[&digits_dir(), Path::new("--out"), &out],
    );
    let acc = accuracies(&log);
    eprintln!(
        "digits: {acc:?} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(*acc.last().unwrap() >= 97.0, "{log}");
    std::fs::remove_dir_all(&out).ok();
}
