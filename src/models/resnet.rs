//! ResNet 18/34/50/101/152 in torchvision's layout (v1.5: a bottleneck's stride is on its
//! 3×3 convolution; downsampling by a 1×1 convolution and batch norm), with torchvision's
//! parameter and buffer names, so its state dicts load as they are.

use crate::nn::{BatchNorm2d, Linear, Param};
use crate::{Conv2dSpec, DType, Device, Error, Padding2d, Pool2dSpec, Result, Rng, Tensor};
use std::collections::HashMap;

/// The two residual blocks of torchvision's ResNets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlockKind {
    /// Two 3×3 convolutions (ResNet-18 and -34).
    Basic,
    /// 1×1, 3×3 (strided), 1×1 with four times the channels (ResNet-50 and deeper).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per block channel.
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The first layers of a ResNet, before its four stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stem {
    /// torchvision's: a 7×7 stride-2 convolution and a 3×3 stride-2 max pool (ImageNet-sized
    /// inputs; a quarter of the resolution remains).
    #[default]
    ImageNet,
    /// A 3×3 stride-1 convolution and no pool, for small images (CIFAR-style, digits).
    Small,
}

/// The shape of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    pub block: BlockKind,
    /// Blocks in each of the four stages.
    pub layers: [usize; 4],
    pub num_classes: usize,
    /// Zero the last batch norm's scale in each block, so every block starts as the
    /// identity (torchvision's `zero_init_residual`).
    pub zero_init_residual: bool,
    /// The stem (torchvision's for every named ResNet).
    #[serde(default)]
    pub stem: Stem,
    /// Each stage's block width (bottlenecks output four times as many channels); the stem
    /// outputs the first. torchvision: 64, 128, 256, 512.
    #[serde(default = "imagenet_widths")]
    pub widths: [usize; 4],
}

fn imagenet_widths() -> [usize; 4] {
    [64, 128, 256, 512]
}

impl ResNetConfig {
    fn of(block: BlockKind, layers: [usize; 4]) -> Self {
        ResNetConfig {
            block,
            layers,
            num_classes: 1000,
            zero_init_residual: false,
            stem: Stem::ImageNet,
            widths: imagenet_widths(),
        }
    }
    /// A small ResNet for small images (`resnet-small`): the 3×3 stem, one basic block per
    /// stage, widths 16, 32, 64, 128 (0.3M parameters with 10 classes).
    pub fn small(num_classes: usize) -> Self {
        ResNetConfig {
            num_classes,
            stem: Stem::Small,
            widths: [16, 32, 64, 128],
            ..Self::of(BlockKind::Basic, [1, 1, 1, 1])
        }
    }
    /// ResNet-18.
    pub fn resnet18() -> Self {
        Self::of(BlockKind::Basic, [2, 2, 2, 2])
    }
    /// ResNet-34.
    pub fn resnet34() -> Self {
        Self::of(BlockKind::Basic, [3, 4, 6, 3])
    }
    /// ResNet-50.
    pub fn resnet50() -> Self {
        Self::of(BlockKind::Bottleneck, [3, 4, 6, 3])
    }
    /// ResNet-101.
    pub fn resnet101() -> Self {
        Self::of(BlockKind::Bottleneck, [3, 4, 23, 3])
    }
    /// ResNet-152.
    pub fn resnet152() -> Self {
        Self::of(BlockKind::Bottleneck, [3, 8, 36, 3])
    }
    /// The configuration of the ResNet whose torchvision-named state dict is `weights`:
    /// block kind, blocks per stage, widths, stem and classes read from the tensors' names
    /// and shapes; a state dict that is not a ResNet's is an error saying what is missing.
    pub fn infer(weights: &HashMap<String, Tensor>) -> Result<Self> {
        let shape = |k: &str| {
            weights.get(k).map(|t| t.shape().to_vec()).ok_or_else(|| {
                Error::invalid(
                    "resnet",
                    format!("not a torchvision ResNet state dict: no `{k}`"),
                )
            })
        };
        let stem_k = shape("conv1.weight")?;
        let fc = shape("fc.weight")?;
        if stem_k.len() != 4 || fc.len() != 2 {
            return Err(Error::invalid(
                "resnet",
                "`conv1.weight` or `fc.weight` has the wrong rank",
            ));
        }
        let block = if weights.contains_key("layer1.0.conv3.weight") {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        let mut layers = [0usize; 4];
        let mut widths = [0usize; 4];
        for (i, (l, w)) in layers.iter_mut().zip(widths.iter_mut()).enumerate() {
            while weights.contains_key(&format!("layer{}.{}.conv1.weight", i + 1, *l)) {
                *l += 1;
            }
            *w = shape(&format!("layer{}.0.conv1.weight", i + 1))?[0];
        }
        let stem = match stem_k[2] {
            7 => Stem::ImageNet,
            3 => Stem::Small,
            k => {
                return Err(Error::invalid(
                    "resnet",
                    format!("a {k}x{k} stem convolution (torchvision's is 7x7, the small one 3x3)"),
                ))
            }
        };
        Ok(ResNetConfig {
            block,
            layers,
            num_classes: fc[0],
            zero_init_residual: false,
            stem,
            widths,
        })
    }

    /// torchvision's name for this shape (`resnet50`), or `None` for another one.
    pub fn torchvision_name(&self) -> Option<&'static str> {
        ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
            .into_iter()
            .find(|n| {
                Self::named(n).is_ok_and(|c| {
                    (c.block, c.layers, c.widths, c.stem)
                        == (self.block, self.layers, self.widths, self.stem)
                })
            })
    }

    /// The configuration torchvision names `name` (`resnet18` .. `resnet152`).
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "resnet18" => Ok(Self::resnet18()),
            "resnet34" => Ok(Self::resnet34()),
            "resnet50" => Ok(Self::resnet50()),
            "resnet101" => Ok(Self::resnet101()),
            "resnet152" => Ok(Self::resnet152()),
            "resnet-small" => Ok(Self::small(1000)),
            other => Err(Error::invalid(
                "resnet",
                format!(
                    "unknown model `{other}` (resnet18, resnet34, resnet50, resnet101, resnet152, resnet-small)"
                ),
            )),
        }
    }
}

/// A convolution without bias followed by batch norm (and, outside, maybe a ReLU).
#[derive(Clone, Debug)]
struct ConvBn {
    weight: Tensor,
    spec: Conv2dSpec,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// Kaiming-normal weights (fan-out, for ReLU), as torchvision initialises them.
    fn new(
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        rng: &mut Rng,
        device: Device,
    ) -> Result<Self> {
        let std = (2.0 / (out * k * k) as f64).sqrt();
        Ok(ConvBn {
            weight: Tensor::randn(&[out, inp, k, k], 0.0, std, DType::F32, device, rng)?
                .requires_grad()?,
            spec: Conv2dSpec {
                stride: (stride, stride),
                padding: Padding2d::Explicit(k / 2, k / 2),
                ..Conv2dSpec::default()
            },
            bn: BatchNorm2d::new(out, device)?,
        })
    }

    fn forward(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let w = self.weight.to_dtype(x.dtype())?;
        self.bn.forward(&x.conv2d(&w, None, self.spec)?, training)
    }

    /// The parameters and buffers under `conv` and `bn` names.
    fn tensors(&self, conv: &str, bn: &str, out: &mut Vec<(String, Tensor, bool)>) -> Result<()> {
        out.push((format!("{conv}.weight"), self.weight.clone(), true));
        let mut ps = Vec::new();
        self.bn.params(bn, &mut ps);
        out.extend(ps.into_iter().map(|p| (p.name, p.tensor, true)));
        out.extend(self.bn.buffers(bn)?.into_iter().map(|(n, t)| (n, t, false)));
        Ok(())
    }
}

/// One residual block.
#[derive(Clone, Debug)]
struct ResBlock {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl ResBlock {
    fn new(
        kind: BlockKind,
        inp: usize,
        planes: usize,
        stride: usize,
        rng: &mut Rng,
        device: Device,
    ) -> Result<Self> {
        let out = planes * kind.expansion();
        let convs = match kind {
            BlockKind::Basic => vec![
                ConvBn::new(inp, planes, 3, stride, rng, device)?,
                ConvBn::new(planes, planes, 3, 1, rng, device)?,
            ],
            BlockKind::Bottleneck => vec![
                ConvBn::new(inp, planes, 1, 1, rng, device)?,
                ConvBn::new(planes, planes, 3, stride, rng, device)?,
                ConvBn::new(planes, out, 1, 1, rng, device)?,
            ],
        };
        let downsample = if stride != 1 || inp != out {
            Some(ConvBn::new(inp, out, 1, stride, rng, device)?)
        } else {
            None
        };
        Ok(ResBlock { convs, downsample })
    }

    fn forward(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (i, c) in self.convs.iter_mut().enumerate() {
            y = c.forward(&y, training)?;
            if i < last {
                y = y.relu()?;
            }
        }
        let identity = match &mut self.downsample {
            Some(d) => d.forward(x, training)?,
            None => x.clone(),
        };
        y.add(&identity)?.relu()
    }

    fn tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor, bool)>) -> Result<()> {
        for (i, c) in self.convs.iter().enumerate() {
            c.tensors(
                &format!("{prefix}.conv{}", i + 1),
                &format!("{prefix}.bn{}", i + 1),
                out,
            )?;
        }
        if let Some(d) = &self.downsample {
            d.tensors(
                &format!("{prefix}.downsample.0"),
                &format!("{prefix}.downsample.1"),
                out,
            )?;
        }
        Ok(())
    }
}

/// A ResNet classifier: `[N, 3, H, W]` images to `[N, classes]` logits.
#[derive(Clone, Debug)]
pub struct ResNet {
    pub cfg: ResNetConfig,
    stem: ConvBn,
    stages: Vec<Vec<ResBlock>>,
    fc: Linear,
}

impl ResNet {
    /// A freshly initialised network (torchvision's initialisation: Kaiming-normal
    /// convolutions, batch norms at scale 1 and shift 0, the classifier uniform in
    /// ±1/sqrt(fan-in)).
    pub fn new(cfg: ResNetConfig, rng: &mut Rng, device: Device) -> Result<Self> {
        if cfg.num_classes == 0 || cfg.layers.contains(&0) || cfg.widths.contains(&0) {
            return Err(Error::invalid(
                "resnet",
                format!("every stage needs a block and a width, the head a class: {cfg:?}"),
            ));
        }
        let stem = match cfg.stem {
            Stem::ImageNet => {
                let mut stem = ConvBn::new(3, cfg.widths[0], 7, 2, rng, device)?;
                stem.spec.padding = Padding2d::Explicit(3, 3);
                stem
            }
            Stem::Small => ConvBn::new(3, cfg.widths[0], 3, 1, rng, device)?,
        };
        let mut inp = cfg.widths[0];
        let mut stages = Vec::with_capacity(4);
        for (i, &blocks) in cfg.layers.iter().enumerate() {
            let planes = cfg.widths[i];
            let stride = if i == 0 { 1 } else { 2 };
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let block = ResBlock::new(
                    cfg.block,
                    inp,
                    planes,
                    if b == 0 { stride } else { 1 },
                    rng,
                    device,
                )?;
                inp = planes * cfg.block.expansion();
                stage.push(block);
            }
            stages.push(stage);
        }
        if cfg.zero_init_residual {
            for block in stages.iter_mut().flatten() {
                if let Some(last) = block.convs.last_mut() {
                    if let Some(w) = &last.bn.weight {
                        w.assign(&w.zeros_like()?)?;
                    }
                }
            }
        }
        let bound = 1.0 / (inp as f64).sqrt();
        let fc = Linear {
            weight: Tensor::rand(
                &[cfg.num_classes, inp],
                -bound,
                bound,
                DType::F32,
                device,
                rng,
            )?
            .requires_grad()?,
            bias: Some(
                Tensor::rand(&[cfg.num_classes], -bound, bound, DType::F32, device, rng)?
                    .requires_grad()?,
            ),
            quant: None,
        };
        Ok(ResNet {
            cfg,
            stem,
            stages,
            fc,
        })
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.fc.weight.device()
    }

    /// Logits of `images` (`[N, 3, H, W]`, a float dtype); `training` uses and updates the
    /// batch norms' batch statistics.
    pub fn forward(&mut self, images: &Tensor, training: bool) -> Result<Tensor> {
        if images.rank() != 4 || images.shape()[1] != 3 {
            return Err(Error::invalid(
                "resnet",
                format!("expected images [N, 3, H, W], got {:?}", images.shape()),
            ));
        }
        let pool = Pool2dSpec {
            stride: (2, 2),
            padding: (1, 1),
            ..Pool2dSpec::new((3, 3))
        };
        let mut x = self.stem.forward(images, training)?.relu()?;
        if self.cfg.stem == Stem::ImageNet {
            x = x.max_pool2d(pool)?;
        }
        for block in self.stages.iter_mut().flatten() {
            x = block.forward(&x, training)?;
        }
        let features = x
            .global_avg_pool2d()?
            .flatten_all()?
            .reshape(&[images.shape()[0], x.shape()[1]])?;
        let w = self.fc.weight.to_dtype(features.dtype())?;
        let b = self
            .fc
            .bias
            .as_ref()
            .map(|b| b.to_dtype(features.dtype()))
            .transpose()?;
        features.linear(&w, b.as_ref())
    }

    /// Every parameter and buffer by its torchvision name, with whether it is trainable.
    fn tensors(&self) -> Result<Vec<(String, Tensor, bool)>> {
        let mut out = Vec::new();
        self.stem.tensors("conv1", "bn1", &mut out)?;
        for (s, stage) in self.stages.iter().enumerate() {
            for (b, block) in stage.iter().enumerate() {
                block.tensors(&format!("layer{}.{b}", s + 1), &mut out)?;
            }
        }
        out.push(("fc.weight".into(), self.fc.weight.clone(), true));
        if let Some(b) = &self.fc.bias {
            out.push(("fc.bias".into(), b.clone(), true));
        }
        Ok(out)
    }

    /// The trainable parameters by their torchvision names; weight decay on convolution
    /// and classifier weights only (never batch norms or biases).
    pub fn params(&self) -> Result<Vec<Param>> {
        Ok(self
            .tensors()?
            .into_iter()
            .filter(|(_, _, trainable)| *trainable)
            .map(|(name, tensor, _)| {
                let decay = tensor.rank() > 1;
                Param {
                    name,
                    tensor,
                    decay,
                }
            })
            .collect())
    }

    /// The state dict torchvision's `state_dict()` holds: parameters and batch-norm
    /// buffers, by name.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        Ok(self
            .tensors()?
            .into_iter()
            .map(|(n, t, _)| (n, t))
            .collect())
    }

    /// Loads a torchvision state dict: every parameter and running statistic must be
    /// present with its shape; `num_batches_tracked` is read where present; an unknown
    /// name is an error that names it.
    pub fn load_state_dict(&mut self, weights: &HashMap<String, Tensor>) -> Result<()> {
        let params = self.params()?;
        crate::nn::assign_params(&params, weights)?;
        let known: Vec<String> = self.tensors()?.into_iter().map(|(n, ..)| n).collect();
        if let Some(extra) = weights.keys().find(|k| !known.contains(k)) {
            return Err(Error::invalid(
                "resnet",
                format!("unexpected tensor `{extra}` in the state dict"),
            ));
        }
        let mut bns: Vec<(String, &mut BatchNorm2d)> = Vec::new();
        bns.push(("bn1".into(), &mut self.stem.bn));
        for (s, stage) in self.stages.iter_mut().enumerate() {
            for (b, block) in stage.iter_mut().enumerate() {
                let prefix = format!("layer{}.{b}", s + 1);
                for (i, c) in block.convs.iter_mut().enumerate() {
                    bns.push((format!("{prefix}.bn{}", i + 1), &mut c.bn));
                }
                if let Some(d) = &mut block.downsample {
                    bns.push((format!("{prefix}.downsample.1"), &mut d.bn));
                }
            }
        }
        for (prefix, bn) in bns {
            for (name, target) in [
                ("running_mean", &bn.running_mean),
                ("running_var", &bn.running_var),
            ] {
                let key = format!("{prefix}.{name}");
                let t = weights
                    .get(&key)
                    .ok_or_else(|| Error::invalid("resnet", format!("missing tensor `{key}`")))?;
                if t.shape() != target.shape() {
                    return Err(Error::invalid(
                        "resnet",
                        format!(
                            "`{key}` has shape {:?}, the model expects {:?}",
                            t.shape(),
                            target.shape()
                        ),
                    ));
                }
                target.assign(&t.to_dtype(DType::F32)?.to_device(target.device())?)?;
            }
            if let Some(t) = weights.get(&format!("{prefix}.num_batches_tracked")) {
                let v = t.to_dtype(DType::F64)?.to_vec_f64()?;
                bn.num_batches_tracked = v.first().copied().unwrap_or(0.0).max(0.0) as u64;
            }
        }
        Ok(())
    }
}
