//! CLIP in Hugging Face's `CLIPModel` layout: a folder with `config.json` and
//! `model.safetensors` (what `save_pretrained` writes), read into a vision tower (a ViT
//! over image patches, pooled at the class token) and a text tower (a causal transformer
//! pooled at the end-of-text token), each projected into the shared embedding space.
//!
//! The towers are pre-norm encoder stacks (`layer_norm1`, attention, residual,
//! `layer_norm2`, MLP, residual) with the activation the config names: QuickGELU
//! (`x * sigmoid(1.702 x)`, OpenAI's checkpoints) or the exact GELU. The attention runs the
//! fused kernel where the backend prefers it (half types on a GPU), else softmax of the
//! scaled scores.

use super::checks::{hyper_error, positive};
use crate::io::{load_safetensors, parse_json};
use crate::nn::{LayerNorm, Linear};
use crate::{AttnMask, DType, Device, Error, Result, Rng, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The largest factor `exp(logit_scale)` may reach (CLIP's training clamps it there).
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// The end-of-text id of old CLIP configs: where a config carries it, the text is pooled
/// at its largest id, as transformers does.
const LEGACY_EOS_ID: u32 = 2;

/// The activation between a tower's two MLP layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (`quick_gelu`, OpenAI's checkpoints).
    QuickGelu,
    /// The exact (erf) GELU (`gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl ClipActivation {
    fn parse(path: &Path, key: &str, name: &str) -> Result<Self> {
        Ok(match name {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => ClipActivation::GeluTanh,
            other => {
                return Err(hyper_error(
                    path,
                    key,
                    other,
                    "supported: quick_gelu, gelu, gelu_new, gelu_pytorch_tanh",
                ))
            }
        })
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ClipActivation::QuickGelu => x.mul(&x.mul_scalar(1.702)?.sigmoid()?),
            ClipActivation::Gelu => x.gelu_erf(),
            ClipActivation::GeluTanh => x.gelu(),
        }
    }
}

fn default_text_vocab() -> usize {
    49408
}
fn default_text_hidden() -> usize {
    512
}
fn default_text_mlp() -> usize {
    2048
}
fn default_text_heads() -> usize {
    8
}
fn default_layers() -> usize {
    12
}
fn default_positions() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_eos() -> u32 {
    49407
}
fn default_bos() -> u32 {
    49406
}
fn default_pad() -> u32 {
    1
}
fn default_vision_hidden() -> usize {
    768
}
fn default_vision_mlp() -> usize {
    3072
}
fn default_vision_heads() -> usize {
    12
}
fn default_image() -> usize {
    224
}
fn default_patch() -> usize {
    32
}
fn default_channels() -> usize {
    3
}
fn default_projection() -> usize {
    512
}

/// `text_config` of a CLIP `config.json` (transformers' defaults where a field is absent).
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct ClipTextConfig {
    #[serde(default = "default_text_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_text_mlp")]
    pub intermediate_size: usize,
    #[serde(default = "default_text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    #[serde(default = "default_bos")]
    pub bos_token_id: u32,
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
}

/// `vision_config` of a CLIP `config.json`.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct ClipVisionConfig {
    #[serde(default = "default_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_vision_mlp")]
    pub intermediate_size: usize,
    #[serde(default = "default_vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_image")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

/// A CLIP `config.json`.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
    #[serde(default)]
    pub model_type: Option<String>,
}

impl ClipConfig {
    /// Reads and checks `config.json`: sizes positive, widths splitting into heads, the
    /// image a whole number of patches, activations known.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let cfg: ClipConfig = parse_json(&bytes).map_err(|msg| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        })?;
        if let Some(t) = &cfg.model_type {
            if t != "clip" {
                return Err(hyper_error(path, "model_type", t, "this reader takes clip"));
            }
        }
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        for (key, value) in [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.num_channels", v.num_channels),
            ("projection_dim", cfg.projection_dim),
        ] {
            positive(path, key, value)?;
        }
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err(hyper_error(
                path,
                "text_config.num_attention_heads",
                t.num_attention_heads,
                "must divide hidden_size",
            ));
        }
        if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err(hyper_error(
                path,
                "vision_config.num_attention_heads",
                v.num_attention_heads,
                "must divide hidden_size",
            ));
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err(hyper_error(
                path,
                "vision_config.patch_size",
                v.patch_size,
                "must divide image_size",
            ));
        }
        if t.eos_token_id as usize >= t.vocab_size {
            return Err(hyper_error(
                path,
                "text_config.eos_token_id",
                t.eos_token_id,
                "must be below vocab_size",
            ));
        }
        ClipActivation::parse(path, "text_config.hidden_act", &t.hidden_act)?;
        ClipActivation::parse(path, "vision_config.hidden_act", &v.hidden_act)?;
        Ok(cfg)
    }

    /// transformers' default configuration: ViT-B/32 (224² images, 32² patches, width
    /// 768, 12 layers) beside a 512-wide, 12-layer text tower, QuickGELU, 512-dim embeddings.
    pub fn vit_b32() -> Self {
        ClipConfig {
            text_config: parse_defaults(),
            vision_config: parse_defaults(),
            projection_dim: default_projection(),
            model_type: Some("clip".into()),
        }
    }

    /// Patches per side of the image.
    pub fn grid(&self) -> usize {
        self.vision_config.image_size / self.vision_config.patch_size
    }
}

/// A config section with every field at its default.
fn parse_defaults<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_str("{}").expect("every field of a CLIP config section has a default")
}

/// Whether `dir` holds a CLIP folder (its `config.json` says `model_type: clip` or has
/// both towers' configs).
pub fn is_clip(dir: &Path) -> bool {
    let Ok(bytes) = std::fs::read(dir.join("config.json")) else {
        return false;
    };
    let Ok(serde_json::Value::Object(cfg)) = serde_json::from_slice(&bytes) else {
        return false;
    };
    cfg.get("model_type").and_then(|v| v.as_str()) == Some("clip")
        || (cfg.contains_key("text_config") && cfg.contains_key("vision_config"))
}

/// The weights of a folder by name, taken out one by one with their shapes checked.
struct Weights {
    path: PathBuf,
    map: HashMap<String, Tensor>,
    device: Device,
    dtype: DType,
}

impl Weights {
    /// Tensor `name` of shape `shape`, in the compute dtype on the device.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.map.remove(name).ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            msg: format!("missing tensor `{name}`"),
        })?;
        if t.shape() != shape {
            return Err(Error::Checkpoint {
                path: self.path.clone(),
                msg: format!("`{name}` has shape {:?}, expected {shape:?}", t.shape()),
            });
        }
        if !matches!(
            t.dtype(),
            DType::F32 | DType::F16 | DType::BF16 | DType::F64
        ) {
            return Err(Error::Checkpoint {
                path: self.path.clone(),
                msg: format!("`{name}` is {:?}; CLIP weights are floats", t.dtype()),
            });
        }
        t.to_dtype(self.dtype)?.to_device(self.device)
    }

    fn linear(&mut self, prefix: &str, inp: usize, out: usize, bias: bool) -> Result<Linear> {
        let weight = self.take(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(self.take(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            quant: None,
        })
    }

    fn norm(&mut self, prefix: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.take(&format!("{prefix}.weight"), &[dim])?,
            bias: Some(self.take(&format!("{prefix}.bias"), &[dim])?),
            eps,
        })
    }
}

/// One pre-norm encoder layer.
#[derive(Clone, Debug)]
struct EncoderLayer {
    norm1: LayerNorm,
    /// Queries, keys and values stacked: `[3 D, D]`.
    qkv: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A stack of encoder layers with its head count and activation.
#[derive(Clone, Debug)]
struct Encoder {
    layers: Vec<EncoderLayer>,
    heads: usize,
    act: ClipActivation,
}

/// The shape of one tower's encoder.
struct EncoderShape {
    layers: usize,
    dim: usize,
    mlp: usize,
    heads: usize,
    eps: f64,
    act: ClipActivation,
}

impl Encoder {
    fn load(w: &mut Weights, prefix: &str, shape: EncoderShape) -> Result<Self> {
        let EncoderShape {
            layers: n,
            dim,
            mlp,
            heads,
            eps,
            act,
        } = shape;
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let p = format!("{prefix}.encoder.layers.{i}");
            let q = w.linear(&format!("{p}.self_attn.q_proj"), dim, dim, true)?;
            let k = w.linear(&format!("{p}.self_attn.k_proj"), dim, dim, true)?;
            let v = w.linear(&format!("{p}.self_attn.v_proj"), dim, dim, true)?;
            let stack = |a: &Tensor, b: &Tensor, c: &Tensor| {
                Tensor::cat(&[a.clone(), b.clone(), c.clone()], 0)
            };
            let bias = match (&q.bias, &k.bias, &v.bias) {
                (Some(a), Some(b), Some(c)) => Some(stack(a, b, c)?),
                _ => None,
            };
            let qkv = Linear {
                weight: stack(&q.weight, &k.weight, &v.weight)?,
                bias,
                quant: None,
            };
            layers.push(EncoderLayer {
                norm1: w.norm(&format!("{p}.layer_norm1"), dim, eps)?,
                qkv,
                out: w.linear(&format!("{p}.self_attn.out_proj"), dim, dim, true)?,
                norm2: w.norm(&format!("{p}.layer_norm2"), dim, eps)?,
                fc1: w.linear(&format!("{p}.mlp.fc1"), dim, mlp, true)?,
                fc2: w.linear(&format!("{p}.mlp.fc2"), mlp, dim, true)?,
            });
        }
        Ok(Encoder { layers, heads, act })
    }

    /// `[B, T, D]` through every layer; `causal` masks keys after each query.
    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            // The residual adds ride in the output GEMMs' epilogues where the backend can.
            x = self.attend(l, &l.norm1.forward(&x)?, causal, &x)?;
            let h = l.fc1.forward(&l.norm2.forward(&x)?)?;
            x = l.fc2.forward_fused(&self.act.apply(&h)?, false, Some(&x))?;
        }
        Ok(x)
    }

    /// `residual` + multi-head self-attention of layer `l` over `x` `[B, T, D]`.
    fn attend(
        &self,
        l: &EncoderLayer,
        x: &Tensor,
        causal: bool,
        residual: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let (h, hd) = (self.heads, d / self.heads);
        let parts = l.qkv.forward(x)?.split(&[d, d, d], 2)?;
        let heads = |p: &Tensor| p.reshape(&[b, t, h, hd])?.transpose(1, 2);
        let (q, k, v) = (heads(&parts[0])?, heads(&parts[1])?, heads(&parts[2])?);
        let scale = 1.0 / (hd as f64).sqrt();
        let y = if q.read_storage().prefers_fused_attention(q.dtype(), hd) {
            let mask = AttnMask {
                causal,
                window: None,
            };
            q.flash_attention(&k, &v, mask, scale)?
        } else {
            let scores = q.mul_scalar(scale)?.matmul(&k.t()?)?;
            let probs = if causal {
                scores.softmax_causal()?
            } else {
                scores.softmax(3)?
            };
            probs.matmul(&v)?
        };
        l.out.forward_fused(
            &y.transpose(1, 2)?.reshape(&[b, t, h * hd])?,
            false,
            Some(residual),
        )
    }
}

/// The image tower: patch embedding, class token, positions, encoder, pooled class token.
#[derive(Clone, Debug)]
struct VisionTower {
    /// The patch convolution as a matrix `[D, C * P * P]` (stride = kernel, no bias).
    patch: Tensor,
    class: Tensor,
    positions: Tensor,
    pre_norm: LayerNorm,
    encoder: Encoder,
    post_norm: LayerNorm,
    projection: Linear,
}

/// The text tower: token and position embeddings, causal encoder, final norm, pooled at
/// the end-of-text token.
#[derive(Clone, Debug)]
struct TextTower {
    tokens: Tensor,
    positions: Tensor,
    encoder: Encoder,
    final_norm: LayerNorm,
    projection: Linear,
}

/// A CLIP model: both towers, their projections and the logit scale.
#[derive(Clone, Debug)]
pub struct Clip {
    pub cfg: ClipConfig,
    vision: VisionTower,
    text: TextTower,
    /// `exp(logit_scale)`, clamped at [`MAX_LOGIT_SCALE`].
    pub logit_scale: f64,
    dtype: DType,
    device: Device,
}

impl Clip {
    /// Reads `dir/config.json` and `dir/model.safetensors` into a model computing in
    /// `dtype` (f32, f16 or bf16) on `device`. A missing file, tensor or shape mismatch
    /// is an error naming it; `position_ids` buffers may be present or absent.
    pub fn load(dir: &Path, device: Device, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::invalid(
                "clip",
                format!("{dtype:?} is not a compute dtype (f32, f16, bf16)"),
            ));
        }
        let cfg = ClipConfig::read(&dir.join("config.json"))?;
        let file = dir.join("model.safetensors");
        if !file.exists() {
            return Err(Error::Checkpoint {
                path: file,
                msg: "missing: a CLIP folder holds config.json and model.safetensors".into(),
            });
        }
        let map = load_safetensors(&file)?;
        Clip::from_weights(cfg, map, &file, device, dtype)
    }

    /// A model of shape `cfg` with weights from N(0, 0.02²) (norms 1 and 0, logit scale
    /// ln(1 / 0.07)), for benchmarks and tests that need no checkpoint.
    pub fn random(cfg: ClipConfig, device: Device, dtype: DType, rng: &mut Rng) -> Result<Self> {
        let mut map = HashMap::new();
        for (name, shape) in tensor_shapes(&cfg) {
            let t = if name.contains("norm") && name.ends_with(".weight") {
                Tensor::ones(&shape, DType::F32, Device::Cpu)?
            } else if name.contains("norm") {
                Tensor::zeros(&shape, DType::F32, Device::Cpu)?
            } else if name == "logit_scale" {
                Tensor::full((1.0f64 / 0.07).ln(), &[], DType::F32, Device::Cpu)?
            } else {
                Tensor::randn(&shape, 0.0, 0.02, DType::F32, Device::Cpu, rng)?
            };
            map.insert(name, t);
        }
        Clip::from_weights(cfg, map, Path::new("(random weights)"), device, dtype)
    }

    /// A model of shape `cfg` from tensors in transformers' names (`path` names their file
    /// in errors).
    pub fn from_weights(
        cfg: ClipConfig,
        map: HashMap<String, Tensor>,
        path: &Path,
        device: Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut w = Weights {
            path: path.to_path_buf(),
            map,
            device,
            dtype,
        };
        let cfg_path = path.with_file_name("config.json");
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        let vact = ClipActivation::parse(&cfg_path, "vision_config.hidden_act", &v.hidden_act)?;
        let tact = ClipActivation::parse(&cfg_path, "text_config.hidden_act", &t.hidden_act)?;
        let (vd, td, p) = (v.hidden_size, t.hidden_size, v.patch_size);
        let patches = cfg.grid() * cfg.grid();
        let patch = w
            .take(
                "vision_model.embeddings.patch_embedding.weight",
                &[vd, v.num_channels, p, p],
            )?
            .reshape(&[vd, v.num_channels * p * p])?;
        let vision = VisionTower {
            patch,
            class: w.take("vision_model.embeddings.class_embedding", &[vd])?,
            positions: w.take(
                "vision_model.embeddings.position_embedding.weight",
                &[patches + 1, vd],
            )?,
            pre_norm: w.norm("vision_model.pre_layrnorm", vd, v.layer_norm_eps)?,
            encoder: Encoder::load(
                &mut w,
                "vision_model",
                EncoderShape {
                    layers: v.num_hidden_layers,
                    dim: vd,
                    mlp: v.intermediate_size,
                    heads: v.num_attention_heads,
                    eps: v.layer_norm_eps,
                    act: vact,
                },
            )?,
            post_norm: w.norm("vision_model.post_layernorm", vd, v.layer_norm_eps)?,
            projection: w.linear("visual_projection", vd, cfg.projection_dim, false)?,
        };
        let text = TextTower {
            tokens: w.take(
                "text_model.embeddings.token_embedding.weight",
                &[t.vocab_size, td],
            )?,
            positions: w.take(
                "text_model.embeddings.position_embedding.weight",
                &[t.max_position_embeddings, td],
            )?,
            encoder: Encoder::load(
                &mut w,
                "text_model",
                EncoderShape {
                    layers: t.num_hidden_layers,
                    dim: td,
                    mlp: t.intermediate_size,
                    heads: t.num_attention_heads,
                    eps: t.layer_norm_eps,
                    act: tact,
                },
            )?,
            final_norm: w.norm("text_model.final_layer_norm", td, t.layer_norm_eps)?,
            projection: w.linear("text_projection", td, cfg.projection_dim, false)?,
        };
        let logit_scale = w
            .take("logit_scale", &[])?
            .to_dtype(DType::F64)?
            .to_scalar()?
            .exp()
            .min(MAX_LOGIT_SCALE);
        Ok(Clip {
            cfg,
            vision,
            text,
            logit_scale,
            dtype,
            device,
        })
    }

    /// The dtype the model computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Projected image features `[N, projection_dim]` (not normalised) of preprocessed
    /// images `[N, C, S, S]` (S the config's `image_size`).
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let v = &self.cfg.vision_config;
        let (s, p, c) = (v.image_size, v.patch_size, v.num_channels);
        if pixels.rank() != 4 || pixels.shape()[1..] != [c, s, s] || pixels.shape()[0] == 0 {
            return Err(Error::invalid(
                "clip",
                format!(
                    "images must be [N, {c}, {s}, {s}] for this model, got {:?}",
                    pixels.shape()
                ),
            ));
        }
        let _no_grad = crate::no_grad();
        let (n, g, d) = (pixels.shape()[0], s / p, v.hidden_size);
        // The stride-P convolution as one product: [N, C, g, P, g, P] -> [N, g, g, C, P, P].
        let x = pixels
            .to_dtype(self.dtype)?
            .to_device(self.device)?
            .reshape(&[n, c, g, p, g, p])?
            .permute(&[0, 2, 4, 1, 3, 5])?
            .reshape(&[n, g * g, c * p * p])?
            .linear(&self.vision.patch, None)?;
        let class = self.vision.class.reshape(&[1, 1, d])?.expand(&[n, 1, d])?;
        let x = Tensor::cat(&[class, x], 1)?.add(&self.vision.positions)?;
        let x = self.vision.pre_norm.forward(&x)?;
        let x = self.vision.encoder.forward(&x, false)?;
        let pooled = self
            .vision
            .post_norm
            .forward(&x.narrow(1, 0, 1)?.reshape(&[n, d])?)?;
        self.vision.projection.forward(&pooled)
    }

    /// Projected text features `[B, projection_dim]` (not normalised) of token ids: one
    /// row per text, each padded to the same length after its end-of-text token. Pooled at
    /// the first end-of-text id, or at the largest id where the config carries the old
    /// end-of-text id 2, as transformers does.
    pub fn text_features(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let t = &self.cfg.text_config;
        let len = ids.first().map_or(0, Vec::len);
        if ids.is_empty() || len == 0 || ids.iter().any(|r| r.len() != len) {
            return Err(Error::invalid(
                "clip",
                "token rows must be non-empty and of one length (padded)",
            ));
        }
        if len > t.max_position_embeddings {
            return Err(Error::invalid(
                "clip",
                format!(
                    "{len} tokens exceed the text context of {}",
                    t.max_position_embeddings
                ),
            ));
        }
        if let Some(bad) = ids.iter().flatten().find(|&&i| i as usize >= t.vocab_size) {
            return Err(Error::invalid(
                "clip",
                format!(
                    "token id {bad} is outside the vocabulary of {}",
                    t.vocab_size
                ),
            ));
        }
        let _no_grad = crate::no_grad();
        let (b, d) = (ids.len(), t.hidden_size);
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i64::from(i)).collect();
        let ids_t = Tensor::from_vec(flat, &[b, len], Device::Cpu)?.to_device(self.device)?;
        let x = Tensor::embedding(&ids_t, &self.text.tokens)?
            .add(&self.text.positions.narrow(0, 0, len)?)?;
        let x = self.text.encoder.forward(&x, true)?;
        let x = self.text.final_norm.forward(&x)?;
        let rows: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(r, row)| (r * len + pool_position(row, t.eos_token_id)) as i64)
            .collect();
        let rows = Tensor::from_vec(rows, &[b], Device::Cpu)?.to_device(self.device)?;
        let pooled = x.reshape(&[b * len, d])?.index_select(0, &rows)?;
        self.text.projection.forward(&pooled)
    }

    /// `scale * image_embeds @ text_embeds^T` `[N_images, N_texts]` of L2-normalised
    /// embeddings: CLIP's `logits_per_image`.
    pub fn logits(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        image_embeds
            .matmul(&text_embeds.t()?)?
            .mul_scalar(self.logit_scale)
    }
}

/// The name and shape of every tensor a CLIP of shape `cfg` holds, in transformers' names.
pub fn tensor_shapes(cfg: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let (t, v) = (&cfg.text_config, &cfg.vision_config);
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut tower = |prefix: &str, n: usize, d: usize, mlp: usize| {
        for i in 0..n {
            let p = format!("{prefix}.encoder.layers.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                out.push((format!("{p}.self_attn.{proj}.weight"), vec![d, d]));
                out.push((format!("{p}.self_attn.{proj}.bias"), vec![d]));
            }
            for norm in ["layer_norm1", "layer_norm2"] {
                out.push((format!("{p}.{norm}.weight"), vec![d]));
                out.push((format!("{p}.{norm}.bias"), vec![d]));
            }
            out.push((format!("{p}.mlp.fc1.weight"), vec![mlp, d]));
            out.push((format!("{p}.mlp.fc1.bias"), vec![mlp]));
            out.push((format!("{p}.mlp.fc2.weight"), vec![d, mlp]));
            out.push((format!("{p}.mlp.fc2.bias"), vec![d]));
        }
    };
    tower(
        "vision_model",
        v.num_hidden_layers,
        v.hidden_size,
        v.intermediate_size,
    );
    tower(
        "text_model",
        t.num_hidden_layers,
        t.hidden_size,
        t.intermediate_size,
    );
    let (vd, td, p) = (v.hidden_size, t.hidden_size, v.patch_size);
    let g = v.image_size / p;
    for (name, shape) in [
        (
            "vision_model.embeddings.patch_embedding.weight",
            vec![vd, v.num_channels, p, p],
        ),
        ("vision_model.embeddings.class_embedding", vec![vd]),
        (
            "vision_model.embeddings.position_embedding.weight",
            vec![g * g + 1, vd],
        ),
        ("vision_model.pre_layrnorm.weight", vec![vd]),
        ("vision_model.pre_layrnorm.bias", vec![vd]),
        ("vision_model.post_layernorm.weight", vec![vd]),
        ("vision_model.post_layernorm.bias", vec![vd]),
        ("visual_projection.weight", vec![cfg.projection_dim, vd]),
        (
            "text_model.embeddings.token_embedding.weight",
            vec![t.vocab_size, td],
        ),
        (
            "text_model.embeddings.position_embedding.weight",
            vec![t.max_position_embeddings, td],
        ),
        ("text_model.final_layer_norm.weight", vec![td]),
        ("text_model.final_layer_norm.bias", vec![td]),
        ("text_projection.weight", vec![cfg.projection_dim, td]),
        ("logit_scale", vec![]),
    ] {
        out.push((name.to_string(), shape));
    }
    out
}

/// Where a text's features are pooled: the first end-of-text id, or (old configs whose
/// end-of-text id is 2) the first largest id; 0 when absent, as `argmax` gives.
pub fn pool_position(row: &[u32], eos: u32) -> usize {
    if eos == LEGACY_EOS_ID {
        let max = row.iter().copied().max().unwrap_or(0);
        row.iter().position(|&i| i == max).unwrap_or(0)
    } else {
        row.iter().position(|&i| i == eos).unwrap_or(0)
    }
}

/// `x / ||x||` along the last dim, in f32: the embeddings CLIP compares.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let last = x.rank() - 1;
    x.div(&x.sqr()?.sum_keepdim(&[last])?.sqrt()?)
}
