//! Image classification with a ResNet from a torchvision state dict (`.pth` or
//! safetensors): the file's architecture is read from its tensors, the images are
//! preprocessed as torchvision's ImageNet weights expect, and each gets its top classes.

use crate::io::pth::is_pth;
use crate::io::{load_pth, load_safetensors};
use crate::models::{ResNet, ResNetConfig};
use crate::vision::{ClassificationPreset, RgbImage};
use crate::{Device, Error, Result, Rng, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// ImageNet's 1000 class names in torchvision's order (`weights.meta["categories"]`).
pub fn imagenet_classes() -> Vec<&'static str> {
    include_str!("../vision/imagenet_classes.txt")
        .lines()
        .collect()
}

/// The tensors of a `.pth` or safetensors file (or a folder holding `model.safetensors`
/// or one `.pth`), by name, on the CPU.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = resolve(path)?;
    let mut head = [0u8; 4];
    let n = std::fs::File::open(&file)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::io(&file, e))?;
    if is_pth(&head[..n]) {
        Ok(load_pth(&file)?.state_dict())
    } else {
        load_safetensors(&file)
    }
}

fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let st = path.join("model.safetensors");
    if st.exists() {
        return Ok(st);
    }
    let mut pths: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pth" || x == "pt"))
        .collect();
    match pths.len() {
        1 => Ok(pths.remove(0)),
        0 => Err(Error::invalid(
            "classify",
            format!(
                "{}: no model.safetensors or .pth file in the folder",
                path.display()
            ),
        )),
        _ => Err(Error::invalid(
            "classify",
            format!("{}: several .pth files; name one", path.display()),
        )),
    }
}

/// What classification needs from a `smith train --images` run's `run.json`.
#[derive(serde::Deserialize)]
struct RunPreprocessing {
    classes: Vec<String>,
    mean: [f32; 3],
    std: [f32; 3],
    config: RunImageSize,
}

#[derive(serde::Deserialize)]
struct RunImageSize {
    image_size: usize,
}

/// A ResNet classifier with its preprocessing and class names.
pub struct Classifier {
    pub model: ResNet,
    pub preset: ClassificationPreset,
    /// One name per class.
    pub labels: Vec<String>,
}

/// One class of a prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub class: usize,
    pub label: String,
    pub probability: f64,
}

impl Classifier {
    /// Loads the ResNet in `path` (its shape read from the tensors) onto `device`, with
    /// ImageNet's class names for a 1000-class head and `class N` otherwise.
    ///
    /// A run folder of `smith train --images` brings its own preprocessing (image size,
    /// the training images' mean and deviation) and class names, from its `run.json`.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let weights = read_state_dict(path)?;
        let cfg = ResNetConfig::infer(&weights)?;
        let mut model = ResNet::new(cfg, &mut Rng::new(0), device)?;
        model.load_state_dict(&weights)?;
        let run = path.join("run.json");
        if path.is_dir() && run.exists() {
            let text = std::fs::read(&run).map_err(|e| Error::io(&run, e))?;
            let r: RunPreprocessing =
                crate::io::parse_json(&text).map_err(|msg| Error::Checkpoint {
                    path: run.clone(),
                    msg,
                })?;
            if r.classes.len() != cfg.num_classes {
                return Err(Error::Checkpoint {
                    path: run,
                    msg: format!(
                        "{} classes named for a {}-class model",
                        r.classes.len(),
                        cfg.num_classes
                    ),
                });
            }
            let s = r.config.image_size;
            return Ok(Classifier {
                model,
                preset: ClassificationPreset {
                    resize_size: s,
                    crop_size: s,
                    mean: r.mean,
                    std: r.std,
                },
                labels: r.classes,
            });
        }
        let labels = if cfg.num_classes == 1000 {
            imagenet_classes().into_iter().map(String::from).collect()
        } else {
            (0..cfg.num_classes).map(|i| format!("class {i}")).collect()
        };
        Ok(Classifier {
            model,
            preset: ClassificationPreset::default(),
            labels,
        })
    }

    /// Replaces the class names with the lines of `file` (one per class, in order).
    pub fn with_labels_file(mut self, file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
        let labels: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if labels.len() != self.model.cfg.num_classes {
            return Err(Error::invalid(
                "classify",
                format!(
                    "{} names {} labels; the model has {} classes",
                    file.display(),
                    labels.len(),
                    self.model.cfg.num_classes
                ),
            ));
        }
        self.labels = labels;
        Ok(self)
    }

    /// The `k` most probable classes of each image, most probable first; the images run
    /// through the network as one batch.
    pub fn classify(&mut self, images: &[RgbImage], k: usize) -> Result<Vec<Vec<Prediction>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let device = self.model.device();
        let batch = self.preset.batch(images, device)?;
        let logits = {
            let _no_grad = crate::no_grad();
            self.model.forward(&batch, false)?.to_vec_f64()?
        };
        let classes = self.model.cfg.num_classes;
        Ok(logits
            .chunks(classes)
            .map(|row| {
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exp: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                let mut order: Vec<usize> = (0..classes).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                order
                    .into_iter()
                    .take(k.max(1))
                    .map(|c| Prediction {
                        class: c,
                        label: self.labels[c].clone(),
                        probability: exp[c] / sum,
                    })
                    .collect()
            })
            .collect())
    }
}
