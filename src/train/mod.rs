//! Training a GPT, on characters of a text or on a token file (GPT-2 124M): batches,
//! AdamW with warmup + cosine, clipping, held-out evaluation, and checkpoints that resume
//! exactly.

pub mod data;
pub mod images;

use crate::io::checkpoint::current_checkpoint;
use crate::io::{load_safetensors, save_safetensors, write_atomic};
use crate::models::checkpoint_gpt;
use crate::models::{load_hf_gpt2, Gpt, GptConfig};
use crate::optim::{clip_grad_norm_scaled, AdamW, AdamWConfig, LossScaler, WarmupCosine};
use crate::text::CharTokenizer;
use crate::{DType, Device, Error, Result, Rng, Tensor};
use data::{Split, TextDataset};
use std::path::{Path, PathBuf};

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub seq_len: usize,
    pub layers: usize,
    pub heads: usize,
    pub dim: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    /// Step at which the cosine reaches `min_lr` (defaults to `steps`).
    pub lr_decay_steps: Option<u64>,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub dropout: f64,
    pub eval_interval: u64,
    pub eval_batches: usize,
    pub seed: u64,
    /// The dtype of activations, matmuls and attention; weights and optimizer state stay
    /// f32 (and f16 scales the loss dynamically).
    #[serde(default)]
    pub precision: Precision,
    /// The vocabulary of a token-file run (`None`: the characters of the text).
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// How training batches are drawn.
    #[serde(default)]
    pub batch_order: BatchOrder,
}

/// The order training batches are drawn in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchOrder {
    /// Windows at random offsets (character-level runs).
    #[default]
    Random,
    /// Consecutive windows in file order, pass after pass, as GPT-2 training scripts read
    /// their token files; batch `k` depends only on `k`.
    Ordered,
}

/// What a run trains on.
#[derive(Clone, Copy, Debug)]
pub enum Corpus<'a> {
    /// A text, tokenized by its characters.
    Text(&'a str),
    /// Token ids (e.g. from `smith tokenize`), each below the run's vocabulary size.
    Tokens(&'a [u32]),
}

/// How a run computes: all f32, or mixed precision with f16 or bf16 activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The activations' dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// Parses `f32`, `bf16` or `f16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" => Ok(Precision::F16),
            other => Err(Error::invalid(
                "precision",
                format!("`{other}` is not one of f32, bf16, f16"),
            )),
        }
    }
}

impl Default for TrainConfig {
    /// Sized to finish in a few minutes on two CPU cores.
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            batch_size: 16,
            seq_len: 128,
            layers: 4,
            heads: 4,
            dim: 128,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 50,
            lr_decay_steps: None,
            weight_decay: 0.1,
            grad_clip: 1.0,
            dropout: 0.0,
            eval_interval: 100,
            eval_batches: 8,
            seed: 1337,
            precision: Precision::F32,
            vocab_size: None,
            batch_order: BatchOrder::Random,
        }
    }
}

impl TrainConfig {
    /// GPT-2 124M on a token file of GPT-2 ids: 12 layers, 12 heads, width 768, context
    /// 1024, batch 16, AdamW at 6e-4 decaying to 6e-5, ordered batches. The vocabulary is
    /// GPT-2's 50257 padded to 50304 (a multiple of 64, as GPT-2 training scripts do): the
    /// head's matmuls then run on aligned rows, and the extra ids never occur.
    pub fn gpt2_124m() -> Self {
        TrainConfig {
            steps: 1000,
            batch_size: 16,
            seq_len: 1024,
            layers: 12,
            heads: 12,
            dim: 768,
            lr: 6e-4,
            min_lr: 6e-5,
            warmup: 100,
            eval_interval: 100,
            vocab_size: Some(50304),
            batch_order: BatchOrder::Ordered,
            ..TrainConfig::default()
        }
    }

    /// The learning-rate schedule of this run.
    pub fn schedule(&self) -> WarmupCosine {
        WarmupCosine {
            max_lr: self.lr,
            min_lr: self.min_lr,
            warmup: self.warmup,
            total: self.lr_decay_steps.unwrap_or(self.steps),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("train", m));
        if self.batch_size == 0
            || self.seq_len == 0
            || self.eval_batches == 0
            || self.eval_interval == 0
        {
            return bad(
                "batch size, sequence length, eval batches and eval interval must be positive"
                    .into(),
            );
        }
        if self.layers == 0 || self.heads == 0 || self.dim == 0 {
            return bad(format!(
                "layers ({}), heads ({}) and width ({}) must be positive",
                self.layers, self.heads, self.dim
            ));
        }
        let non_negative = |v: f64| v >= 0.0 && v.is_finite();
        let sane = (0.0..1.0).contains(&self.dropout)
            && non_negative(self.grad_clip)
            && non_negative(self.weight_decay);
        if !sane {
            return bad(format!(
                "dropout {} must be in [0, 1), grad clip {} and weight decay {} finite and non-negative",
                self.dropout, self.grad_clip, self.weight_decay
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && non_negative(self.min_lr)) {
            return bad(format!(
                "learning rates {} / {} are not valid",
                self.lr, self.min_lr
            ));
        }
        Ok(())
    }
}

/// What a checkpoint's `config.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointConfig {
    model: GptConfig,
    /// The tokenizer's characters in id order (empty for a token-file run).
    vocab: String,
    train: TrainConfig,
    /// The token file a token-file run reads, so that resuming finds it.
    #[serde(default)]
    token_file: Option<PathBuf>,
}

/// The token file recorded in the checkpoint in `dir`, if it is a token-file run.
pub fn checkpoint_token_file(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(read_checkpoint_config(&current_checkpoint(dir)?)?.token_file)
}

fn read_checkpoint_config(dir: &Path) -> Result<CheckpointConfig> {
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    crate::io::parse_json(&bytes).map_err(|msg| Error::Checkpoint {
        path: path.clone(),
        msg,
    })
}

/// Progress of a run, saved with every checkpoint (`trainer.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    /// The generator for batches and dropout, exactly where it stopped.
    pub rng: Rng,
    /// (step, training loss) for every step.
    #[serde(with = "loss_series")]
    pub train_losses: Vec<(u64, f64)>,
    /// (step, held-out loss) at each evaluation.
    #[serde(with = "loss_series")]
    pub val_losses: Vec<(u64, f64)>,
    /// The loss scale of an f16 run.
    #[serde(default)]
    pub scaler: Option<LossScaler>,
}

/// (step, loss) pairs in JSON with non-finite losses spelled `"NaN"`, `"inf"`, `"-inf"`
/// (JSON has no such numbers; writing `null` would make the file unreadable as f64).
mod loss_series {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loss {
        Number(f64),
        Word(String),
    }

    pub fn serialize<S: Serializer>(v: &[(u64, f64)], s: S) -> Result<S::Ok, S::Error> {
        let out: Vec<(u64, Loss)> = v
            .iter()
            .map(|&(step, x)| {
                let loss = match x {
                    x if x.is_finite() => Loss::Number(x),
                    x if x.is_nan() => Loss::Word("NaN".into()),
                    x if x > 0.0 => Loss::Word("inf".into()),
                    _ => Loss::Word("-inf".into()),
                };
                (step, loss)
            })
            .collect();
        out.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, f64)>, D::Error> {
        let raw: Vec<(u64, Option<Loss>)> = Vec::deserialize(d)?;
        raw.into_iter()
            .map(|(step, loss)| {
                let x = match loss {
                    Some(Loss::Number(x)) => x,
                    // Older checkpoints wrote non-finite losses as null.
                    None => f64::NAN,
                    Some(Loss::Word(w)) => match w.as_str() {
                        "NaN" => f64::NAN,
                        "inf" => f64::INFINITY,
                        "-inf" => f64::NEG_INFINITY,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "loss `{other}` is not a number"
                            )))
                        }
                    },
                };
                Ok((step, x))
            })
            .collect()
    }
}

/// A model, its data and optimizer, and where the run stands.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Gpt,
    /// The character tokenizer of a text run (`None` for a token-file run).
    pub tokenizer: Option<CharTokenizer>,
    /// The token file of a token-file run, recorded in checkpoints.
    pub token_file: Option<PathBuf>,
    data: TextDataset,
    optimizer: AdamW,
    pub state: TrainState,
    device: Device,
}

impl Trainer {
    /// A fresh run on the characters of `text` (weights initialised from the seed).
    pub fn new(cfg: TrainConfig, text: &str, device: Device) -> Result<Self> {
        Self::start(cfg, Corpus::Text(text), None, device)
    }

    /// A fresh run on `corpus`, from the weights of a Hugging Face GPT-2 folder `init`
    /// when given (its shape replaces the configured one) or else from the seed.
    pub fn start(
        mut cfg: TrainConfig,
        corpus: Corpus,
        init: Option<&Path>,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let tokenizer = match corpus {
            Corpus::Text(text) => {
                if cfg.vocab_size.is_some() {
                    return Err(Error::invalid(
                        "train",
                        "a run with a fixed vocabulary trains on a token file, not on text",
                    ));
                }
                Some(CharTokenizer::from_text(text))
            }
            Corpus::Tokens(_) => None,
        };
        let vocab_size = match &tokenizer {
            Some(t) => Some(t.vocab_size()),
            None => cfg.vocab_size,
        };
        let model = match init {
            Some(dir) => {
                if tokenizer.is_some() {
                    return Err(Error::invalid(
                        "train",
                        "starting from a GPT-2 folder needs a token file of its token ids",
                    ));
                }
                gpt_from_folder(dir, &mut cfg, device)?
            }
            None => {
                let vocab_size = vocab_size.ok_or_else(|| {
                    Error::invalid("train", "a token-file run needs its vocabulary size")
                })?;
                let model_cfg = GptConfig {
                    vocab_size,
                    block_size: cfg.seq_len,
                    n_layer: cfg.layers,
                    n_head: cfg.heads,
                    n_embd: cfg.dim,
                    dropout: cfg.dropout,
                };
                if device == Device::Cpu {
                    check_memory(model_cfg.activation_bytes(cfg.batch_size))?;
                }
                Gpt::new(model_cfg, &mut Rng::new(cfg.seed), device)?
            }
        };
        // Batches and dropout draw from their own stream, separate from initialisation.
        let batch_rng = Rng::new(cfg.seed.wrapping_add(1));
        Self::assemble(cfg, model, tokenizer, corpus, device, batch_rng)
    }

    fn assemble(
        cfg: TrainConfig,
        model: Gpt,
        tokenizer: Option<CharTokenizer>,
        corpus: Corpus,
        device: Device,
        rng: Rng,
    ) -> Result<Self> {
        let ids = match (corpus, &tokenizer) {
            (Corpus::Text(text), Some(t)) => t.encode(text)?,
            (Corpus::Tokens(ids), None) => {
                let vocab = model.cfg.vocab_size;
                if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab)
                {
                    return Err(Error::invalid(
                        "train",
                        format!("token {i} has id {id}, outside the vocabulary of {vocab}"),
                    ));
                }
                ids.to_vec()
            }
            (Corpus::Text(_), None) => {
                return Err(Error::invalid(
                    "train",
                    "this run trains on a token file; pass the token file, not text",
                ))
            }
            (Corpus::Tokens(_), Some(_)) => {
                return Err(Error::invalid(
                    "train",
                    "this run trains on the characters of a text; pass the text, not a token file",
                ))
            }
        };
        let data = TextDataset::new(ids, cfg.seq_len)?;
        let optimizer = AdamW::new(
            model.params(),
            AdamWConfig {
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            },
        )?;
        let scaler = (cfg.precision == Precision::F16).then(LossScaler::default);
        Ok(Trainer {
            cfg,
            model,
            tokenizer,
            token_file: None,
            data,
            optimizer,
            state: TrainState {
                step: 0,
                rng,
                train_losses: vec![],
                val_losses: vec![],
                scaler,
            },
            device,
        })
    }

    /// Continues the run saved in `dir`, on `corpus` (the same text or token file);
    /// `steps` extends it.
    pub fn resume(dir: &Path, corpus: Corpus, steps: Option<u64>, device: Device) -> Result<Self> {
        let dir = &current_checkpoint(dir)?;
        let ckpt_err = |msg: String| Error::Checkpoint {
            path: dir.to_path_buf(),
            msg,
        };
        let config = read_checkpoint_config(dir)?;
        let state_path = dir.join("trainer.json");
        let state_bytes = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: TrainState =
            crate::io::parse_json(&state_bytes).map_err(|msg| Error::Checkpoint {
                path: state_path.clone(),
                msg,
            })?;
        let mut cfg = config.train.clone();
        if let Some(s) = steps {
            cfg.steps = s;
        }
        // A stored config is as untrusted as a command line: checked the same way.
        cfg.validate()
            .map_err(|e| ckpt_err(format!("config.json: {e}")))?;
        let tokenizer = match cfg.vocab_size {
            None => Some(CharTokenizer::from_chars(config.vocab.chars().collect())),
            Some(_) => None,
        };
        let model = checkpoint_gpt(dir, &config.model, device)?;
        let mut t = Self::assemble(cfg, model, tokenizer, corpus, device, state.rng.clone())?;
        let moments = load_safetensors(&dir.join("optimizer.safetensors"))?;
        t.optimizer
            .load_state(&moments, state.step)
            .map_err(|e| ckpt_err(e.to_string()))?;
        t.state = state;
        t.token_file = config.token_file;
        Ok(t)
    }

    /// The number of distinct tokens the model predicts.
    pub fn vocab_size(&self) -> usize {
        self.model.cfg.vocab_size
    }

    /// The training batch of the current step: a random window per row, or the next
    /// windows in file order.
    fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        let (b, t) = (self.cfg.batch_size, self.cfg.seq_len);
        match self.cfg.batch_order {
            BatchOrder::Random => {
                self.data
                    .batch(Split::Train, b, t, &mut self.state.rng, self.device)
            }
            BatchOrder::Ordered => {
                self.data
                    .ordered_batch(Split::Train, b, t, self.state.step, self.device)
            }
        }
    }

    /// One optimizer step on a fresh training batch; returns the batch loss.
    pub fn train_step(&mut self) -> Result<f64> {
        let (x, y) = self.next_batch()?;
        let dropout_rng = if self.cfg.dropout > 0.0 {
            Some(&mut self.state.rng)
        } else {
            None
        };
        let compute = self.cfg.precision.dtype();
        let loss = self.model.loss_in(&x, &y, dropout_rng, compute)?;
        let scale = self.state.scaler.as_ref().map(|s| s.scale);
        let mut grads = match scale {
            Some(s) => loss.mul_scalar(s)?.backward()?,
            None => loss.backward()?,
        };
        let params = self.optimizer.params().to_vec();
        // The global norm, clipped to `grad_clip`; with a loss scale the gradients are
        // divided by it in the same pass, and the norm tells whether they overflowed.
        let norm = if self.cfg.grad_clip > 0.0 || scale.is_some() {
            let max = if self.cfg.grad_clip > 0.0 {
                self.cfg.grad_clip
            } else {
                f64::INFINITY
            };
            clip_grad_norm_scaled(&mut grads, &params, max, scale.unwrap_or(1.0))?
        } else {
            0.0
        };
        let take = match &mut self.state.scaler {
            Some(scaler) => scaler.update(norm.is_finite()),
            None => true,
        };
        if take {
            let lr = self.cfg.schedule().lr(self.state.step);
            self.optimizer.step(&grads, lr)?;
        }
        let value = loss.to_scalar()?;
        if !value.is_finite() {
            return Err(Error::invalid(
                "train",
                format!("loss became {value} at step {}", self.state.step),
            ));
        }
        self.state.step += 1;
        self.state.train_losses.push((self.state.step, value));
        Ok(value)
    }

    /// Mean held-out loss over the same fixed batches every time (its own generator, so
    /// evaluating never changes the training run).
    pub fn evaluate(&self) -> Result<f64> {
        let _guard = crate::no_grad();
        let mut rng = Rng::new(self.cfg.seed ^ 0x5eed_e7a1);
        let mut total = 0.0;
        for _ in 0..self.cfg.eval_batches {
            let (x, y) = self.data.batch(
                Split::Val,
                self.cfg.batch_size,
                self.cfg.seq_len,
                &mut rng,
                self.device,
            )?;
            total += self
                .model
                .loss_in(&x, &y, None, self.cfg.precision.dtype())?
                .to_scalar()?;
        }
        Ok(total / self.cfg.eval_batches as f64)
    }

    /// Records a held-out evaluation at the current step.
    pub fn record_eval(&mut self) -> Result<f64> {
        let v = self.evaluate()?;
        if !v.is_finite() {
            return Err(Error::invalid(
                "train",
                format!(
                    "the held-out loss became {v} at step {}; the last checkpoint is kept",
                    self.state.step
                ),
            ));
        }
        self.state.val_losses.retain(|&(s, _)| s != self.state.step);
        self.state.val_losses.push((self.state.step, v));
        Ok(v)
    }

    /// Saves the checkpoint of the current step into run folder `dir` as one set (weights,
    /// configuration, optimizer state, progress): complete or absent, never mixed with an
    /// earlier one (see [`crate::io::checkpoint`]). Returns the set's folder.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        crate::io::checkpoint::commit(dir, self.state.step, |set| self.write_set(set))
    }

    /// Writes the files of a checkpoint into the fresh folder `dir`.
    fn write_set(&self, dir: &Path) -> Result<()> {
        let weights: Vec<(String, Tensor)> = self
            .model
            .params()
            .into_iter()
            .map(|p| (p.name, p.tensor))
            .collect();
        save_safetensors(&dir.join("model.safetensors"), &weights)?;
        let (moments, _) = self.optimizer.state()?;
        let mut moments: Vec<(String, Tensor)> = moments.into_iter().collect();
        moments.sort_by(|a, b| a.0.cmp(&b.0));
        save_safetensors(&dir.join("optimizer.safetensors"), &moments)?;
        let config = CheckpointConfig {
            model: self.model.cfg,
            vocab: self
                .tokenizer
                .as_ref()
                .map(|t| t.chars().iter().collect())
                .unwrap_or_default(),
            train: self.cfg.clone(),
            token_file: self.token_file.clone(),
        };
        write_atomic(
            &dir.join("config.json"),
            &serde_json::to_vec_pretty(&config)?,
        )?;
        write_atomic(&dir.join("trainer.json"), &serde_json::to_vec(&self.state)?)?;
        Ok(())
    }
}

/// The GPT-2 of a Hugging Face folder as the start of a token-file run: its shape and
/// vocabulary become the run's (a different `cfg.vocab_size` is an error), its positions
/// must cover `cfg.seq_len`, and it is rebuilt with the run's dropout.
fn gpt_from_folder(dir: &Path, cfg: &mut TrainConfig, device: Device) -> Result<Gpt> {
    let model = load_hf_gpt2(dir, device)?;
    let m = model.cfg;
    if let Some(v) = cfg.vocab_size.filter(|&v| v != m.vocab_size) {
        return Err(Error::invalid(
            "train",
            format!(
                "{} has a vocabulary of {}, but the run's is {v}",
                dir.display(),
                m.vocab_size
            ),
        ));
    }
    if cfg.seq_len > m.block_size {
        return Err(Error::invalid(
            "train",
            format!(
                "sequences of {} are longer than the {} positions of {}",
                cfg.seq_len,
                m.block_size,
                dir.display()
            ),
        ));
    }
    cfg.vocab_size = Some(m.vocab_size);
    (cfg.layers, cfg.heads, cfg.dim) = (m.n_layer, m.n_head, m.n_embd);
    if cfg.dropout == 0.0 {
        return Ok(model);
    }
    // The folder's weights in a model built with the run's dropout.
    let with_dropout = GptConfig {
        dropout: cfg.dropout,
        ..m
    };
    let fresh = Gpt::new(with_dropout, &mut Rng::new(cfg.seed), device)?;
    let weights = model.params().into_iter().map(|p| (p.name, p.tensor));
    fresh.load_weights(&weights.collect())?;
    Ok(fresh)
}

/// Refuses a run whose activations would not fit in the memory this machine has free.
fn check_memory(needed: u64) -> Result<()> {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
        return Ok(());
    };
    let available_kib = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    match available_kib {
        Some(kib) if needed > kib * 1024 => Err(Error::invalid(
            "train",
            format!(
                "one step needs about {:.1} GiB of activations but only {:.1} GiB of memory is free; use a smaller --batch-size, --seq-len or model",
                needed as f64 / (1u64 << 30) as f64,
                (kib * 1024) as f64 / (1u64 << 30) as f64
            ),
        )),
        _ => Ok(()),
    }
}
