//! Training on a token file: batches in file order, exact resumption, starting from a
//! Hugging Face GPT-2 folder, and clear errors for ids outside the vocabulary.

use smith::infer::load_for_inference;
use smith::models::save_hf_gpt2;
use smith::train::{BatchOrder, Corpus, TrainConfig, Trainer};
use smith::{Device, Rng};
use std::path::PathBuf;

const VOCAB: usize = 97;

fn tiny(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 3,
        seq_len: 16,
        layers: 1,
        heads: 2,
        dim: 16,
        warmup: 2,
        lr: 1e-2,
        eval_interval: 5,
        eval_batches: 2,
        vocab_size: Some(VOCAB),
        batch_order: BatchOrder::Ordered,
        ..TrainConfig::default()
    }
}

/// A token stream with structure to learn: each id mostly follows from the previous one.
fn tokens(n: usize) -> Vec<u32> {
    let mut rng = Rng::new(7);
    let mut ids = vec![1u32];
    while ids.len() < n {
        let prev = *ids.last().unwrap_or(&0);
        let next = if rng.uniform() < 0.8 {
            (prev * 5 + 3) % VOCAB as u32
        } else {
            rng.below(VOCAB as u64) as u32
        };
        ids.push(next);
    }
    ids
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smith-tok-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run_to_end(t: &mut Trainer) -> Vec<f64> {
    while t.state.step < t.cfg.steps {
        t.train_step().unwrap();
    }
    t.state.train_losses.iter().map(|p| p.1).collect()
}

#[test]
fn a_token_run_learns_and_resumes_exactly() {
    let ids = tokens(4000);
    let mut straight = Trainer::start(tiny(30), Corpus::Tokens(&ids), None, Device::Cpu).unwrap();
    let first_eval = straight.evaluate().unwrap();
    let all = run_to_end(&mut straight);
    let last_eval = straight.evaluate().unwrap();
    assert!(
        last_eval < first_eval - 0.5,
        "held-out loss {first_eval} -> {last_eval}"
    );

    let dir = scratch("resume");
    let mut cfg = tiny(12);
    cfg.lr_decay_steps = Some(30);
    let mut first_run = Trainer::start(cfg, Corpus::Tokens(&ids), None, Device::Cpu).unwrap();
    run_to_end(&mut first_run);
    first_run.save(&dir).unwrap();
    let mut resumed = Trainer::resume(&dir, Corpus::Tokens(&ids), Some(30), Device::Cpu).unwrap();
    assert_eq!(resumed.state.step, 12);
    assert_eq!(run_to_end(&mut resumed), all);

    // A token checkpoint resumes only on tokens, and has no character tokenizer.
    assert!(Trainer::resume(&dir, Corpus::Text("some text"), None, Device::Cpu).is_err());
    let msg = load_for_inference(&dir, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("--export-hf"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ordered_batches_walk_the_file() {
    // Batch k reads tokens [k*B*T, (k+1)*B*T] of the training split, so the first step's
    // loss is the loss of exactly those windows.
    let ids = tokens(4000);
    let cfg = tiny(1);
    let mut t = Trainer::start(cfg.clone(), Corpus::Tokens(&ids), None, Device::Cpu).unwrap();
    let span = cfg.batch_size * cfg.seq_len;
    let x: Vec<i64> = ids[..span].iter().map(|&i| i as i64).collect();
    let y: Vec<i64> = ids[1..span + 1].iter().map(|&i| i as i64).collect();
    let shape = [cfg.batch_size, cfg.seq_len];
    let x = smith::Tensor::from_vec(x, &shape, Device::Cpu).unwrap();
    let y = smith::Tensor::from_vec(y, &shape, Device::Cpu).unwrap();
    let expected = {
        let _g = smith::no_grad();
        t.model.loss(&x, &y, None).unwrap().to_scalar().unwrap()
    };
    let got = t.train_step().unwrap();
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
}

#[test]
fn a_run_starts_from_a_gpt2_folder() {
    let ids = tokens(4000);
    let mut source = Trainer::start(tiny(5), Corpus::Tokens(&ids), None, Device::Cpu).unwrap();
    run_to_end(&mut source);
    let dir = scratch("hf");
    save_hf_gpt2(&source.model, &dir, None).unwrap();

    // Other shape flags: the folder's weights and shape win.
    let mut cfg = tiny(1);
    cfg.layers = 3;
    cfg.dim = 32;
    let t = Trainer::start(cfg, Corpus::Tokens(&ids), Some(&dir), Device::Cpu).unwrap();
    assert_eq!(t.cfg.layers, 1);
    assert_eq!(
        t.evaluate().unwrap().to_bits(),
        source.evaluate().unwrap().to_bits()
    );

    // A folder with another vocabulary, or sequences longer than its positions, are errors.
    let mut wrong = tiny(1);
    wrong.vocab_size = Some(VOCAB + 1);
    let msg = Trainer::start(wrong, Corpus::Tokens(&ids), Some(&dir), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("vocabulary"), "{msg}");
    let mut long = tiny(1);
    long.seq_len = 64;
    let msg = Trainer::start(long, Corpus::Tokens(&ids), Some(&dir), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("longer than"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_outside_the_vocabulary_are_errors() {
    let mut ids = tokens(1000);
    ids[321] = VOCAB as u32;
    let msg = Trainer::start(tiny(1), Corpus::Tokens(&ids), None, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("token 321") && msg.contains("97"), "{msg}");
    let mut no_vocab = tiny(1);
    no_vocab.vocab_size = None;
    assert!(Trainer::start(no_vocab, Corpus::Tokens(&ids), None, Device::Cpu).is_err());
}
