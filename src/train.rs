//! Training the character-level GPT: batches, AdamW with warmup + cosine, clipping,
//! held-out evaluation, and checkpoints that resume exactly.

use crate::data::{CharTokenizer, Split, TextDataset};
use crate::io::{load_safetensors, save_safetensors, write_atomic};
use crate::models::{Gpt, GptConfig};
use crate::optim::{clip_grad_norm_scaled, AdamW, AdamWConfig, LossScaler, WarmupCosine};
use crate::{DType, Device, Error, Result, Rng, Tensor};
use std::path::Path;

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
        }
    }
}

impl TrainConfig {
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
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 {
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
    /// The tokenizer's characters in id order.
    vocab: String,
    train: TrainConfig,
}

/// Progress of a run, saved with every checkpoint (`trainer.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    /// The generator for batches and dropout, exactly where it stopped.
    pub rng: Rng,
    /// (step, training loss) for every step.
    pub train_losses: Vec<(u64, f64)>,
    /// (step, held-out loss) at each evaluation.
    pub val_losses: Vec<(u64, f64)>,
    /// The loss scale of an f16 run.
    #[serde(default)]
    pub scaler: Option<LossScaler>,
}

/// A model, its data and optimizer, and where the run stands.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Gpt,
    pub tokenizer: CharTokenizer,
    data: TextDataset,
    optimizer: AdamW,
    pub state: TrainState,
    device: Device,
}

impl Trainer {
    /// A fresh run on `text` (weights initialised from the seed).
    pub fn new(cfg: TrainConfig, text: &str, device: Device) -> Result<Self> {
        cfg.validate()?;
        let tokenizer = CharTokenizer::from_text(text);
        let model_cfg = GptConfig {
            vocab_size: tokenizer.vocab_size(),
            block_size: cfg.seq_len,
            n_layer: cfg.layers,
            n_head: cfg.heads,
            n_embd: cfg.dim,
            dropout: cfg.dropout,
        };
        check_memory(model_cfg.activation_bytes(cfg.batch_size))?;
        let mut init_rng = Rng::new(cfg.seed);
        let model = Gpt::new(model_cfg, &mut init_rng, device)?;
        // Batches and dropout draw from their own stream, separate from initialisation.
        let batch_rng = Rng::new(cfg.seed.wrapping_add(1));
        Self::assemble(cfg, model, tokenizer, text, device, batch_rng)
    }

    fn assemble(
        cfg: TrainConfig,
        model: Gpt,
        tokenizer: CharTokenizer,
        text: &str,
        device: Device,
        rng: Rng,
    ) -> Result<Self> {
        let data = TextDataset::new(tokenizer.encode(text)?, cfg.seq_len)?;
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

    /// Continues the run saved in `dir`, on `text` (the same corpus); `steps` extends it.
    pub fn resume(dir: &Path, text: &str, steps: Option<u64>, device: Device) -> Result<Self> {
        let ckpt_err = |msg: String| Error::Checkpoint {
            path: dir.to_path_buf(),
            msg,
        };
        let read =
            |name: &str| std::fs::read(dir.join(name)).map_err(|e| Error::io(dir.join(name), e));
        let config: CheckpointConfig = serde_json::from_slice(&read("config.json")?)?;
        let state: TrainState = serde_json::from_slice(&read("trainer.json")?)?;
        let mut cfg = config.train;
        if let Some(s) = steps {
            cfg.steps = s;
        }
        let tokenizer = CharTokenizer::from_chars(config.vocab.chars().collect());
        let model = Gpt::new(config.model, &mut Rng::new(0), device)?;
        model
            .load_weights(&load_safetensors(&dir.join("model.safetensors"))?)
            .map_err(|e| ckpt_err(e.to_string()))?;
        let mut t = Self::assemble(cfg, model, tokenizer, text, device, state.rng.clone())?;
        let moments = load_safetensors(&dir.join("optimizer.safetensors"))?;
        t.optimizer
            .load_state(&moments, state.step)
            .map_err(|e| ckpt_err(e.to_string()))?;
        t.state = state;
        Ok(t)
    }

    /// One optimizer step on a fresh training batch; returns the batch loss.
    pub fn train_step(&mut self) -> Result<f64> {
        let (x, y) = self.data.batch(
            Split::Train,
            self.cfg.batch_size,
            self.cfg.seq_len,
            &mut self.state.rng,
            self.device,
        )?;
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
        self.state.val_losses.retain(|&(s, _)| s != self.state.step);
        self.state.val_losses.push((self.state.step, v));
        Ok(v)
    }

    /// Writes weights, configuration, optimizer state and progress into `dir`, each file
    /// atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
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
            vocab: self.tokenizer.chars().iter().collect(),
            train: self.cfg.clone(),
        };
        write_atomic(
            &dir.join("config.json"),
            &serde_json::to_vec_pretty(&config)?,
        )?;
        write_atomic(&dir.join("trainer.json"), &serde_json::to_vec(&self.state)?)?;
        Ok(())
    }
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

/// Loads a checkpoint's model and tokenizer for generation.
pub fn load_for_inference(dir: &Path, device: Device) -> Result<(Gpt, CharTokenizer)> {
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let config: CheckpointConfig =
        serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            msg: e.to_string(),
        })?;
    let model = Gpt::new(config.model, &mut Rng::new(0), device)?;
    model
        .load_weights(&load_safetensors(&dir.join("model.safetensors"))?)
        .map_err(|e| Error::Checkpoint {
            path: dir.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok((
        model,
        CharTokenizer::from_chars(config.vocab.chars().collect()),
    ))
}
