//! Linear, Embedding and the two norms.

use super::{push, Param};
use crate::{DType, Device, Error, QMatrix, Result, Rng, Tensor};

/// `y = x W^T + b` with `W` of shape `[out, in]` (PyTorch's layout).
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`; with `quant` set, an empty `[0, in]` tensor whose dtype and device are
    /// the layer's compute dtype and device.
    pub weight: Tensor,
    /// `[out]`, when the layer has a bias.
    pub bias: Option<Tensor>,
    /// The weight kept quantized (inference only); it replaces `weight` when set.
    pub quant: Option<QMatrix>,
}

impl Linear {
    /// Weights from N(0, std²), bias zero.
    pub fn new(
        inp: usize,
        out: usize,
        bias: bool,
        std: f64,
        rng: &mut Rng,
        device: Device,
    ) -> Result<Self> {
        let weight =
            Tensor::randn(&[out, inp], 0.0, std, DType::F32, device, rng)?.requires_grad()?;
        let bias = if bias {
            Some(Tensor::zeros(&[out], DType::F32, device)?.requires_grad()?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            quant: None,
        })
    }

    /// A layer over a quantized weight `[out, in]` computing in `dtype` on the weight's
    /// device; the bias, when given, is cast to `dtype`.
    pub fn quantized(weight: QMatrix, bias: Option<Tensor>, dtype: DType) -> Result<Self> {
        let [out, inp] = weight.shape();
        let device = weight.device();
        let bias = match bias {
            Some(b) if b.shape() != [out] => {
                return Err(Error::ShapeMismatch {
                    op: "quantized linear bias",
                    lhs: b.shape().to_vec(),
                    rhs: vec![out],
                })
            }
            Some(b) => Some(b.detach().to_dtype(dtype)?.to_device(device)?),
            None => None,
        };
        Ok(Linear {
            weight: Tensor::zeros(&[0, inp], dtype, device)?,
            bias,
            quant: Some(weight),
        })
    }

    /// `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        match &self.quant {
            Some(q) => q.shape(),
            None => [self.weight.shape()[0], self.weight.shape()[1]],
        }
    }

    /// An error unless `x` is `[.., in]`.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let [out, inp] = self.shape();
        if x.shape().last() == Some(&inp) {
            return Ok(());
        }
        Err(Error::ShapeMismatch {
            op: "linear",
            lhs: x.shape().to_vec(),
            rhs: vec![out, inp],
        })
    }

    /// Applies the layer to `[.., in]`, giving `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        match &self.quant {
            Some(q) => {
                let y = q.linear(x)?;
                match &self.bias {
                    Some(b) => y.add(b),
                    None => Ok(y),
                }
            }
            None => x.linear(&like(&self.weight, x)?, like_opt(&self.bias, x)?.as_ref()),
        }
    }

    /// `gelu_tanh?(layer(x)) (+ residual)`, fused into the GEMM where the backend can
    /// (inference on a GPU; see [`Tensor::linear_fused`]).
    pub fn forward_fused(
        &self,
        x: &Tensor,
        gelu: bool,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.quant.is_some() {
            let mut y = self.forward(x)?;
            if gelu {
                y = y.gelu()?;
            }
            return match residual {
                Some(r) => y.add(r),
                None => Ok(y),
            };
        }
        self.check_input(x)?;
        x.linear_fused(
            &like(&self.weight, x)?,
            like_opt(&self.bias, x)?.as_ref(),
            gelu,
            residual,
        )
    }

    /// `gelu?(layer(norm(x)))`, the norm folded into the decoding matrix-vector kernel
    /// where it applies (dense weights, a few rows on a GPU, inference), otherwise the two
    /// layers in turn.
    pub fn forward_normed(&self, x: &Tensor, norm: &Norm, gelu: bool) -> Result<Tensor> {
        if self.quant.is_none() {
            let folded = match norm {
                Norm::Layer(n) => n.bias.as_ref().map(|b| crate::ops::FoldedNorm {
                    gamma: &n.weight,
                    beta: Some(b),
                    eps: n.eps,
                }),
                Norm::Rms(n) => Some(crate::ops::FoldedNorm {
                    gamma: &n.weight,
                    beta: None,
                    eps: n.eps,
                }),
            };
            if let Some(f) = folded {
                if let Some(y) = x.normed_linear(&f, &self.weight, self.bias.as_ref(), gelu)? {
                    return Ok(y);
                }
            }
        }
        self.forward_fused(&norm.forward(x)?, gelu, None)
    }

    /// Appends this layer's parameters (a quantized weight is not a parameter).
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        if self.quant.is_none() {
            push(out, prefix, "weight", &self.weight, true);
        }
        if let Some(b) = &self.bias {
            push(out, prefix, "bias", b, false);
        }
    }
}

/// A lookup table of `[num, dim]` vectors.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `[num, dim]`; with `quant` set, an empty `[0, dim]` tensor carrying the compute
    /// dtype and device.
    pub weight: Tensor,
    /// The table kept quantized (inference only); it replaces `weight` when set.
    pub quant: Option<QMatrix>,
}

impl Embedding {
    /// Vectors from N(0, std²).
    pub fn new(num: usize, dim: usize, std: f64, rng: &mut Rng, device: Device) -> Result<Self> {
        Ok(Embedding {
            weight: Tensor::randn(&[num, dim], 0.0, std, DType::F32, device, rng)?
                .requires_grad()?,
            quant: None,
        })
    }

    /// A table kept quantized, looked up into `dtype` on the table's device.
    pub fn quantized(table: QMatrix, dtype: DType) -> Result<Self> {
        let dim = table.shape()[1];
        Ok(Embedding {
            weight: Tensor::zeros(&[0, dim], dtype, table.device())?,
            quant: Some(table),
        })
    }

    /// Rows for integer `ids` of any shape: `ids.shape + [dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.quant {
            Some(q) => q.embedding(ids, self.weight.dtype()),
            None => Tensor::embedding(ids, &self.weight),
        }
    }

    /// `x @ table^T`: the output head of a model that ties it to this embedding.
    pub fn tied_head(&self, x: &Tensor) -> Result<Tensor> {
        match &self.quant {
            Some(q) => q.linear(x),
            None => x.linear(&like(&self.weight, x)?, None),
        }
    }

    /// Appends this layer's parameters (no weight decay on embeddings; a quantized table
    /// is not a parameter).
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        if self.quant.is_none() {
            push(out, prefix, "weight", &self.weight, false);
        }
    }
}

/// Layer norm over the last dim with learned scale and shift.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub eps: f64,
}

impl LayerNorm {
    /// Scale 1, shift 0.
    pub fn new(dim: usize, bias: bool, eps: f64, device: Device) -> Result<Self> {
        Ok(LayerNorm {
            weight: Tensor::ones(&[dim], DType::F32, device)?.requires_grad()?,
            bias: if bias {
                Some(Tensor::zeros(&[dim], DType::F32, device)?.requires_grad()?)
            } else {
                None
            },
            eps,
        })
    }

    /// Normalizes `[.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(
            Some(&like(&self.weight, x)?),
            like_opt(&self.bias, x)?.as_ref(),
            self.eps,
        )
    }

    /// Appends this layer's parameters (no weight decay on norms).
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        push(out, prefix, "weight", &self.weight, false);
        if let Some(b) = &self.bias {
            push(out, prefix, "bias", b, false);
        }
    }
}

/// RMS norm over the last dim with a learned scale.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    /// Scale 1.
    pub fn new(dim: usize, eps: f64, device: Device) -> Result<Self> {
        Ok(RmsNorm {
            weight: Tensor::ones(&[dim], DType::F32, device)?.requires_grad()?,
            eps,
        })
    }

    /// Normalizes `[.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.rms_norm(Some(&like(&self.weight, x)?), self.eps)
    }

    /// Appends this layer's parameters (no weight decay on norms).
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        push(out, prefix, "weight", &self.weight, false);
    }
}

pub use crate::backend::NormKind;

/// Either norm, chosen by configuration.
#[derive(Clone, Debug)]
pub enum Norm {
    Layer(LayerNorm),
    Rms(RmsNorm),
}

impl Norm {
    /// A fresh norm of the given kind.
    pub fn new(kind: NormKind, dim: usize, eps: f64, device: Device) -> Result<Self> {
        Ok(match kind {
            NormKind::Layer => Norm::Layer(LayerNorm::new(dim, true, eps, device)?),
            NormKind::Rms => Norm::Rms(RmsNorm::new(dim, eps, device)?),
        })
    }

    /// Normalizes `[.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Layer(n) => n.forward(x),
            Norm::Rms(n) => n.forward(x),
        }
    }

    /// Appends this layer's parameters.
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        match self {
            Norm::Layer(n) => n.params(prefix, out),
            Norm::Rms(n) => n.params(prefix, out),
        }
    }
}

/// Mixed precision: a parameter in the dtype of the activations `x` it meets (a cast that
/// autograd carries back to the f32 master weights), or the parameter itself.
fn like(p: &Tensor, x: &Tensor) -> Result<Tensor> {
    if p.dtype() == x.dtype() || !x.dtype().is_float() {
        Ok(p.clone())
    } else {
        p.to_dtype(x.dtype())
    }
}

fn like_opt(p: &Option<Tensor>, x: &Tensor) -> Result<Option<Tensor>> {
    p.as_ref().map(|p| like(p, x)).transpose()
}

/// A detached copy of `t` in `dtype` (for inference in a half type).
pub(crate) fn cast_param(t: &Tensor, dtype: crate::DType) -> Result<Tensor> {
    t.detach().to_dtype(dtype)?.contiguous()
}

fn cast_opt(t: &Option<Tensor>, dtype: crate::DType) -> Result<Option<Tensor>> {
    t.as_ref().map(|t| cast_param(t, dtype)).transpose()
}

impl Linear {
    /// A copy with its tensors in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        Ok(Linear {
            weight: cast_param(&self.weight, dtype)?,
            bias: cast_opt(&self.bias, dtype)?,
            quant: self.quant.clone(),
        })
    }
}

impl Embedding {
    /// A copy with its table in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        Ok(Embedding {
            weight: cast_param(&self.weight, dtype)?,
            quant: self.quant.clone(),
        })
    }
}

impl Norm {
    /// A copy with its tensors in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        Ok(match self {
            Norm::Layer(n) => Norm::Layer(LayerNorm {
                weight: cast_param(&n.weight, dtype)?,
                bias: cast_opt(&n.bias, dtype)?,
                eps: n.eps,
            }),
            Norm::Rms(n) => Norm::Rms(RmsNorm {
                weight: cast_param(&n.weight, dtype)?,
                eps: n.eps,
            }),
        })
    }
}

impl RmsNorm {
    /// A copy with its tensors in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        Ok(RmsNorm {
            weight: cast_param(&self.weight, dtype)?,
            eps: self.eps,
        })
    }
}

impl LayerNorm {
    /// A copy with its tensors in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        Ok(LayerNorm {
            weight: cast_param(&self.weight, dtype)?,
            bias: cast_opt(&self.bias, dtype)?,
            eps: self.eps,
        })
    }
}
