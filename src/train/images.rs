//! Training a ResNet classifier on an ImageFolder: SGD with momentum and weight decay (none
//! on batch norms and biases), warmup + cosine, random-crop and flip augmentation,
//! held-out accuracy and a confusion matrix at each evaluation, and checkpoints (weights,
//! momentum, progress) that a run resumes from.

use crate::io::{load_safetensors, save_safetensors, write_atomic};
use crate::models::{ResNet, ResNetConfig};
use crate::optim::{Sgd, WarmupCosine};
use crate::vision::{read_image, resize_bilinear, ImageFolder};
use crate::{Device, Error, Result, Rng, Tensor};
use std::path::{Path, PathBuf};

/// The settings of an image-classification run (saved with its checkpoints).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ImageTrainConfig {
    /// `resnet-small` or a torchvision name (`resnet18` ...).
    pub model: String,
    /// Images are resized to this square before augmentation.
    pub image_size: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Warmup steps of the learning rate.
    pub warmup: u64,
    /// Zero padding on each side before the random crop back to `image_size`.
    pub crop_padding: usize,
    /// Random horizontal flips (off for digits and text, where a mirror is another class).
    pub hflip: bool,
    pub seed: u64,
}

impl Default for ImageTrainConfig {
    fn default() -> Self {
        ImageTrainConfig {
            model: "resnet-small".into(),
            image_size: 0,
            epochs: 15,
            batch_size: 64,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup: 20,
            crop_padding: 1,
            hflip: false,
            seed: 0,
        }
    }
}

/// What a checkpoint records besides the weights and momentum.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ImageRunState {
    pub config: ImageTrainConfig,
    pub classes: Vec<String>,
    /// Channel means and deviations of the training images (inputs are normalised by them).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub epoch: usize,
    pub step: u64,
    /// Held-out accuracy after each finished epoch.
    pub accuracy: Vec<f64>,
}

/// Decoded images at one size: `[N, 3, S, S]` values in [0, 1], channel-major per image.
struct ImageSet {
    pixels: Vec<f32>,
    labels: Vec<usize>,
    size: usize,
}

impl ImageSet {
    fn load(folder: &ImageFolder, size: usize) -> Result<Self> {
        let mut pixels = Vec::with_capacity(folder.samples.len() * 3 * size * size);
        let mut labels = Vec::with_capacity(folder.samples.len());
        for (path, label) in &folder.samples {
            let mut img = read_image(path)?;
            if img.width != size || img.height != size {
                img = resize_bilinear(&img, size, size)?;
            }
            for c in 0..3 {
                pixels.extend(
                    img.data
                        .iter()
                        .skip(c)
                        .step_by(3)
                        .map(|&v| f32::from(v) / 255.0),
                );
            }
            labels.push(*label);
        }
        Ok(ImageSet {
            pixels,
            labels,
            size,
        })
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn image(&self, i: usize) -> &[f32] {
        let n = 3 * self.size * self.size;
        &self.pixels[i * n..(i + 1) * n]
    }
    fn stats(&self) -> ([f32; 3], [f32; 3]) {
        let plane = self.size * self.size;
        let mut mean = [0f32; 3];
        let mut std = [0f32; 3];
        for c in 0..3 {
            let vals =
                (0..self.len()).flat_map(|i| self.image(i)[c * plane..(c + 1) * plane].iter());
            let (mut s, mut s2, mut n) = (0f64, 0f64, 0f64);
            for &v in vals {
                s += f64::from(v);
                s2 += f64::from(v) * f64::from(v);
                n += 1.0;
            }
            let m = s / n.max(1.0);
            mean[c] = m as f32;
            std[c] = ((s2 / n.max(1.0) - m * m).max(1e-6)).sqrt() as f32;
        }
        (mean, std)
    }
}

/// The training and held-out folders of `root`: `root/train` and `root/val` where they
/// exist, else `root` and `val` (required then).
pub fn split_folders(root: &Path, val: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    if root.join("train").is_dir() {
        let v = val
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.join("val"));
        return Ok((root.join("train"), v));
    }
    match val {
        Some(v) => Ok((root.to_path_buf(), v.to_path_buf())),
        None => Err(Error::invalid(
            "train",
            format!(
                "{}: no train/ and val/ folders inside; give the held-out images with --val",
                root.display()
            ),
        )),
    }
}

/// A run: the model, its optimizer, the data and the progress so far.
pub struct ImageTrainer {
    pub model: ResNet,
    pub state: ImageRunState,
    opt: Sgd,
    schedule: WarmupCosine,
    train: ImageSet,
    val: ImageSet,
    device: Device,
}

impl ImageTrainer {
    /// A fresh run on the images of `train_dir` (held out: `val_dir`).
    pub fn new(
        cfg: ImageTrainConfig,
        train_dir: &Path,
        val_dir: &Path,
        device: Device,
    ) -> Result<Self> {
        let train_folder = ImageFolder::open(train_dir)?;
        let val_folder = ImageFolder::open(val_dir)?;
        if val_folder.classes != train_folder.classes {
            return Err(Error::invalid(
                "train",
                format!(
                    "{} and {} hold different classes",
                    train_dir.display(),
                    val_dir.display()
                ),
            ));
        }
        let mut cfg = cfg;
        if cfg.image_size == 0 {
            let first = &train_folder.samples[0].0;
            let img = read_image(first)?;
            cfg.image_size = img.width.max(img.height);
        }
        let train = ImageSet::load(&train_folder, cfg.image_size)?;
        let val = ImageSet::load(&val_folder, cfg.image_size)?;
        let (mean, std) = train.stats();
        let classes = train_folder.classes.clone();
        let model = build_model(&cfg, classes.len(), device)?;
        let state = ImageRunState {
            config: cfg,
            classes,
            mean,
            std,
            epoch: 0,
            step: 0,
            accuracy: Vec::new(),
        };
        Self::assemble(model, state, train, val, device)
    }

    fn assemble(
        model: ResNet,
        state: ImageRunState,
        train: ImageSet,
        val: ImageSet,
        device: Device,
    ) -> Result<Self> {
        let cfg = &state.config;
        if cfg.batch_size == 0 || cfg.epochs == 0 {
            return Err(Error::invalid(
                "train",
                "--batch-size and --epochs must be positive",
            ));
        }
        let steps_per_epoch = train.len().div_ceil(cfg.batch_size) as u64;
        let schedule = WarmupCosine {
            max_lr: cfg.lr,
            min_lr: 0.0,
            warmup: cfg.warmup,
            total: steps_per_epoch * cfg.epochs as u64,
        };
        let opt = Sgd::new(model.params()?, cfg.momentum, cfg.weight_decay);
        Ok(ImageTrainer {
            model,
            state,
            opt,
            schedule,
            train,
            val,
            device,
        })
    }

    /// Continues the run saved in `dir` (weights, momentum and progress), for `epochs`
    /// epochs in all when given.
    pub fn resume(
        dir: &Path,
        train_dir: &Path,
        val_dir: &Path,
        epochs: Option<usize>,
        device: Device,
    ) -> Result<Self> {
        let path = dir.join("run.json");
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut state: ImageRunState =
            crate::io::parse_json(&text).map_err(|m| Error::Checkpoint {
                path: path.clone(),
                msg: m,
            })?;
        if let Some(e) = epochs {
            state.config.epochs = e;
        }
        let train_folder = ImageFolder::open(train_dir)?;
        let val_folder = ImageFolder::open(val_dir)?;
        if train_folder.classes != state.classes {
            return Err(Error::invalid(
                "train",
                "the images' classes differ from the run's",
            ));
        }
        let train = ImageSet::load(&train_folder, state.config.image_size)?;
        let val = ImageSet::load(&val_folder, state.config.image_size)?;
        let mut model = build_model(&state.config, state.classes.len(), device)?;
        let weights = load_safetensors(&dir.join("model.safetensors"))?;
        model.load_state_dict(&weights)?;
        let mut t = Self::assemble(model, state, train, val, device)?;
        let momentum = load_safetensors(&dir.join("momentum.safetensors"))?;
        t.opt.load_velocities(&momentum)?;
        Ok(t)
    }

    /// Steps in one epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.train.len().div_ceil(self.state.config.batch_size) as u64
    }

    /// A batch tensor of images `idx`, normalised, augmented when `rng` is given.
    fn batch(
        &self,
        set: &ImageSet,
        idx: &[usize],
        mut rng: Option<&mut Rng>,
    ) -> Result<(Tensor, Tensor)> {
        let s = set.size;
        let p = self.state.config.crop_padding as isize;
        let mut x = vec![0f32; idx.len() * 3 * s * s];
        for (b, &i) in idx.iter().enumerate() {
            let img = set.image(i);
            let (dy, dx, flip) = match rng.as_deref_mut() {
                Some(r) => (
                    r.below(2 * p as u64 + 1) as isize - p,
                    r.below(2 * p as u64 + 1) as isize - p,
                    self.state.config.hflip && r.below(2) == 1,
                ),
                None => (0, 0, false),
            };
            for c in 0..3 {
                let (m, sd) = (self.state.mean[c], self.state.std[c]);
                for y in 0..s {
                    for xx in 0..s {
                        let sy = y as isize + dy;
                        let sx0 = if flip {
                            (s - 1 - xx) as isize
                        } else {
                            xx as isize
                        };
                        let sx = sx0 + dx;
                        let v = if sy < 0 || sx < 0 || sy >= s as isize || sx >= s as isize {
                            0.0
                        } else {
                            img[c * s * s + sy as usize * s + sx as usize]
                        };
                        x[((b * 3 + c) * s + y) * s + xx] = (v - m) / sd;
                    }
                }
            }
        }
        let labels: Vec<i64> = idx.iter().map(|&i| set.labels[i] as i64).collect();
        Ok((
            Tensor::from_vec(x, &[idx.len(), 3, s, s], self.device)?,
            Tensor::from_vec(labels, &[idx.len()], self.device)?,
        ))
    }

    /// Trains one epoch (a fresh shuffle seeded by the run's seed and the epoch) and returns
    /// its mean loss; `on_step` sees each step's loss.
    pub fn train_epoch(&mut self, on_step: &mut dyn FnMut(u64, f64)) -> Result<f64> {
        let mut rng =
            Rng::new(self.state.config.seed.wrapping_mul(1_000_003) ^ self.state.epoch as u64);
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut total = 0.0;
        let bs = self.state.config.batch_size;
        for chunk in order.chunks(bs) {
            let (x, y) = self.batch(&self.train, chunk, Some(&mut rng))?;
            let loss = self.model.forward(&x, true)?.cross_entropy(&y, -100)?;
            let grads = loss.backward()?;
            self.opt.step(&grads, self.schedule.lr(self.state.step))?;
            let l = loss.to_vec_f64()?[0];
            total += l;
            self.state.step += 1;
            on_step(self.state.step, l);
        }
        self.state.epoch += 1;
        Ok(total / order.len().div_ceil(bs) as f64)
    }

    /// Held-out accuracy and the confusion matrix (`[true][predicted]` counts).
    pub fn evaluate(&mut self) -> Result<(f64, Vec<Vec<usize>>)> {
        let k = self.state.classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        let _no_grad = crate::no_grad();
        let idx: Vec<usize> = (0..self.val.len()).collect();
        for chunk in idx.chunks(256) {
            let (x, _) = self.batch(&self.val, chunk, None)?;
            let logits = self.model.forward(&x, false)?.to_vec_f64()?;
            for (row, &i) in logits.chunks(k).zip(chunk) {
                let pred = (0..k)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0);
                confusion[self.val.labels[i]][pred] += 1;
            }
        }
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        Ok((correct as f64 / self.val.len().max(1) as f64, confusion))
    }

    /// Writes the checkpoint into `dir`: `model.safetensors` (torchvision names),
    /// `momentum.safetensors` and `run.json`, each atomically; `run.json` last, so an
    /// interrupted save leaves the previous progress record.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut weights: Vec<(String, Tensor)> = self.model.state_dict()?.into_iter().collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        save_safetensors(&dir.join("model.safetensors"), &weights)?;
        save_safetensors(&dir.join("momentum.safetensors"), &self.opt.velocities())?;
        let json = serde_json::to_vec_pretty(&self.state)?;
        write_atomic(&dir.join("run.json"), &json)
    }
}

fn build_model(cfg: &ImageTrainConfig, classes: usize, device: Device) -> Result<ResNet> {
    let mut rc = ResNetConfig::named(&cfg.model)?;
    rc.num_classes = classes;
    ResNet::new(rc, &mut Rng::new(cfg.seed), device)
}

/// The confusion matrix as a table: rows are true classes, columns predictions.
pub fn format_confusion(classes: &[String], m: &[Vec<usize>]) -> String {
    let w = classes.iter().map(|c| c.len()).max().unwrap_or(1).max(4);
    let mut out = format!("{:>w$} |", "true");
    for c in classes {
        out += &format!(" {c:>w$}");
    }
    out += "\n";
    for (c, row) in classes.iter().zip(m) {
        out += &format!("{c:>w$} |");
        for v in row {
            out += &format!(" {v:>w$}");
        }
        out += "\n";
    }
    out
}
