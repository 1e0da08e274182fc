//! Checkpoints: resuming gives exactly the run that never stopped, and damaged or
//! mismatched checkpoints are errors that say what is wrong.

use smith::infer::load_for_inference;
use smith::io::{load_safetensors, save_safetensors};
use smith::train::{Corpus, TrainConfig, Trainer};
use smith::Device;
use std::path::PathBuf;

/// The corpus the tool bundles.
const SHAKESPEARE: &str = include_str!("../data/shakespeare.txt");

fn tiny(steps: u64, decay: Option<u64>) -> TrainConfig {
    TrainConfig {
        steps,
        lr_decay_steps: decay,
        batch_size: 4,
        seq_len: 16,
        layers: 1,
        heads: 2,
        dim: 16,
        warmup: 3,
        eval_interval: 5,
        eval_batches: 2,
        dropout: 0.1,
        ..TrainConfig::default()
    }
}

fn text() -> &'static str {
    &SHAKESPEARE[..60_000]
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smith-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run_to_end(t: &mut Trainer) -> f64 {
    let mut last = f64::NAN;
    while t.state.step < t.cfg.steps {
        last = t.train_step().unwrap();
    }
    last
}

#[test]
fn resume_continues_exactly() {
    let mut straight = Trainer::new(tiny(20, None), text(), Device::Cpu).unwrap();
    let straight_loss = run_to_end(&mut straight);

    let dir = scratch("resume");
    let mut first = Trainer::new(tiny(10, Some(20)), text(), Device::Cpu).unwrap();
    run_to_end(&mut first);
    first.record_eval().unwrap();
    first.save(&dir).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&dir, Corpus::Text(text()), Some(20), Device::Cpu).unwrap();
    assert_eq!(resumed.state.step, 10);
    let resumed_loss = run_to_end(&mut resumed);

    assert_eq!(
        straight_loss.to_bits(),
        resumed_loss.to_bits(),
        "{straight_loss} vs {resumed_loss}"
    );
    assert_eq!(
        straight.evaluate().unwrap().to_bits(),
        resumed.evaluate().unwrap().to_bits()
    );
    let a: Vec<f64> = straight.state.train_losses.iter().map(|p| p.1).collect();
    let b: Vec<f64> = resumed.state.train_losses.iter().map(|p| p.1).collect();
    assert_eq!(a, b);
    // The saved model also loads for inference.
    let (model, tok) = load_for_inference(&dir, Device::Cpu).unwrap();
    assert_eq!(model.num_params(), straight.model.num_params());
    assert_eq!(tok.vocab_size(), straight.vocab_size());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_checkpoints_are_clear_errors() {
    let dir = scratch("damaged");
    let mut t = Trainer::new(tiny(2, None), text(), Device::Cpu).unwrap();
    run_to_end(&mut t);
    let set = t.save(&dir).unwrap();
    let weights_path = set.join("model.safetensors");
    let original = std::fs::read(&weights_path).unwrap();
    let weights = load_safetensors(&weights_path).unwrap();
    let mut names: Vec<_> = weights.keys().cloned().collect();
    names.sort();

    // A missing tensor is named.
    let missing = "h.0.attn.qkv.weight";
    let fewer: Vec<_> = names
        .iter()
        .filter(|n| *n != missing)
        .map(|n| (n.clone(), weights[n].clone()))
        .collect();
    save_safetensors(&weights_path, &fewer).unwrap();
    let Err(e) = Trainer::resume(&dir, Corpus::Text(text()), None, Device::Cpu) else {
        panic!("missing tensor must fail")
    };
    let msg = e.to_string();
    assert!(msg.contains(missing), "{msg}");

    // A mis-shaped tensor is named with both shapes.
    let mut reshaped: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), weights[n].clone()))
        .collect();
    for (n, t) in reshaped.iter_mut() {
        if n == "ln_f.weight" {
            *t = smith::Tensor::zeros(&[3], smith::DType::F32, Device::Cpu).unwrap();
        }
    }
    save_safetensors(&weights_path, &reshaped).unwrap();
    let Err(e) = load_for_inference(&dir, Device::Cpu) else {
        panic!("bad shape must fail")
    };
    let msg = e.to_string();
    assert!(msg.contains("ln_f.weight") && msg.contains("[3]"), "{msg}");

    // A truncated file is an error, not a panic.
    std::fs::write(&weights_path, &original[..original.len() / 2]).unwrap();
    assert!(load_for_inference(&dir, Device::Cpu).is_err());
    std::fs::write(&weights_path, b"not a checkpoint").unwrap();
    assert!(load_for_inference(&dir, Device::Cpu).is_err());

    // A missing folder names the file it looked for.
    let msg = load_for_inference(&dir.join("nope"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("config.json"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn atomic_writes_leave_no_temporary_files() {
    let dir = scratch("atomic");
    let mut t = Trainer::new(tiny(1, None), text(), Device::Cpu).unwrap();
    run_to_end(&mut t);
    t.save(&dir).unwrap();
    let set = t.save(&dir).unwrap();
    let list = |d: &std::path::Path| {
        let mut files: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
    };
    // The second save at the same step is a new set; the first is gone after the switch.
    let name = set.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(list(&dir), ["latest".to_string(), name.clone()]);
    assert_eq!(
        std::fs::read_to_string(dir.join("latest")).unwrap().trim(),
        name
    );
    assert_eq!(
        list(&set),
        [
            "config.json",
            "model.safetensors",
            "optimizer.safetensors",
            "trainer.json"
        ]
    );
    // Leftovers of an interrupted save are cleaned by the next one.
    std::fs::create_dir(dir.join("step-000099.tmp")).unwrap();
    std::fs::write(dir.join(".latest.tmp"), b"x").unwrap();
    let set = t.save(&dir).unwrap();
    let name = set.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(list(&dir), ["latest".to_string(), name]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mixed precision on the CPU: bf16 and f16 (with its loss scale) runs from the same
/// weights and batches follow the f32 run's losses closely and keep learning; an f16 scale
/// so large that the gradients overflow skips those steps and backs off; the scale is
/// saved with the checkpoint and restored on resume.
#[test]
fn mixed_precision_runs_track_f32_and_f16_backs_off_on_overflow() {
    use smith::train::Precision;
    let run = |precision: Precision| -> Vec<f64> {
        let cfg = TrainConfig {
            precision,
            dropout: 0.0,
            dim: 32,
            ..tiny(40, None)
        };
        let mut t = Trainer::new(cfg, text(), Device::Cpu).unwrap();
        (0..40).map(|_| t.train_step().unwrap()).collect()
    };
    let f32_losses = run(Precision::F32);
    for p in [Precision::Bf16, Precision::F16] {
        let losses = run(p);
        for (i, (a, b)) in losses.iter().zip(&f32_losses).enumerate() {
            assert!((a - b).abs() / b < 0.03, "{p:?} step {i}: {a} vs f32 {b}");
        }
        assert!(
            losses[39] < losses[0] - 0.5,
            "{p:?} did not learn: {losses:?}"
        );
    }
    let cfg = TrainConfig {
        precision: Precision::F16,
        ..tiny(12, None)
    };
    let mut t = Trainer::new(cfg.clone(), text(), Device::Cpu).unwrap();
    t.state.scaler.as_mut().unwrap().scale = 2f64.powi(60);
    let first = t.model.params()[0].tensor.to_vec_f64().unwrap();
    t.train_step().unwrap();
    let scaler = t.state.scaler.clone().unwrap();
    assert_eq!((scaler.skipped, scaler.scale), (1, 2f64.powi(59)));
    assert_eq!(
        t.model.params()[0].tensor.to_vec_f64().unwrap(),
        first,
        "skipped step moved weights"
    );
    while t.state.scaler.as_ref().unwrap().skipped < 100 && t.state.step < 12 {
        t.train_step().unwrap();
    }
    let dir = scratch("f16-scale");
    t.save(&dir).unwrap();
    let back = Trainer::resume(&dir, Corpus::Text(text()), None, Device::Cpu).unwrap();
    assert_eq!(back.state.scaler, t.state.scaler);
    assert_eq!(back.cfg.precision, Precision::F16);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `smith` binary under test: the one cargo built beside this test, or `SMITH_BIN` when
/// the tests run on a machine apart from their build.
fn smith_bin() -> std::path::PathBuf {
    std::env::var_os("SMITH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_smith").into())
}

/// `smith train` on a small text with a checkpoint at every step (or every 3rd), so that
/// kills land inside saves.
fn train_cmd(
    dir: &std::path::Path,
    data: &std::path::Path,
    save_every: u64,
) -> std::process::Command {
    let mut c = std::process::Command::new(smith_bin());
    c.args([
        "train",
        "--device",
        "cpu",
        "--steps",
        "60",
        "--lr-decay-steps",
        "60",
    ])
    .args([
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
    ])
    .args([
        "--dim",
        "16",
        "--eval-interval",
        "20",
        "--sample-tokens",
        "0",
    ])
    .arg("--save-interval")
    .arg(save_every.to_string())
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(dir)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    c
}

/// The losses of the uninterrupted run, step by step (in a folder of its own per data file:
/// the tests that call this run in parallel).
fn reference_losses(data: &std::path::Path) -> Vec<f64> {
    let name = data.file_name().unwrap().to_string_lossy();
    let dir = scratch(&format!("reference_{name}"));
    assert!(train_cmd(&dir, data, 20).status().unwrap().success());
    let t = Trainer::resume(
        &dir,
        Corpus::Text(&std::fs::read_to_string(data).unwrap()),
        None,
        Device::Cpu,
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    t.state.train_losses.iter().map(|p| p.1).collect()
}

#[test]
fn sigkill_at_random_moments_always_leaves_a_checkpoint_that_resumes_exactly() {
    let data = scratch("kill_text.txt");
    std::fs::write(&data, text()).unwrap();
    let text = std::fs::read_to_string(&data).unwrap();
    let want = reference_losses(&data);
    // How long a whole run takes, to spread the kills over it.
    let dir = scratch("kill_timing");
    let started = std::time::Instant::now();
    assert!(train_cmd(&dir, &data, 1).status().unwrap().success());
    let whole = started.elapsed().as_micros() as u64;
    let _ = std::fs::remove_dir_all(&dir);
    let mut rng = smith::Rng::new(11);
    let mut resumed_from = Vec::new();
    for round in 0..24 {
        let dir = scratch(&format!("kill_{round}"));
        let mut child = train_cmd(&dir, &data, if round % 2 == 0 { 1 } else { 3 })
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(rng.below(whole.max(1))));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if !dir.join("latest").exists() {
            // Killed before the first save: nothing, which is allowed; but no set either.
            continue;
        }
        let mut t = Trainer::resume(&dir, Corpus::Text(&text), None, Device::Cpu)
            .unwrap_or_else(|e| panic!("round {round}: the checkpoint does not load: {e}"));
        let from = t.state.step as usize;
        resumed_from.push(from);
        for (step, want) in want.iter().enumerate().skip(from).take(3) {
            let loss = t.train_step().unwrap();
            assert_eq!(
                loss.to_bits(),
                want.to_bits(),
                "round {round}, step {}",
                step + 1
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        resumed_from.len() >= 10,
        "too few kills after a save: {resumed_from:?}"
    );
}

#[cfg(unix)]
#[test]
fn sigint_saves_the_step_and_resumes_exactly() {
    let data = scratch("int_text.txt");
    std::fs::write(&data, text()).unwrap();
    let text = std::fs::read_to_string(&data).unwrap();
    let want = reference_losses(&data);
    let dir = scratch("sigint");
    let mut child = train_cmd(&dir, &data, 1000).spawn().unwrap();
    // Wait until training is under way (the first evaluation's save), then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.join("latest").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut t = Trainer::resume(&dir, Corpus::Text(&text), None, Device::Cpu).unwrap();
    let from = t.state.step as usize;
    assert!(from >= 20, "saved at step {from}");
    if status.code() == Some(130) {
        assert!(from < 60);
    }
    for (step, want) in want.iter().enumerate().skip(from) {
        assert_eq!(
            t.train_step().unwrap().to_bits(),
            want.to_bits(),
            "step {}",
            step + 1
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
