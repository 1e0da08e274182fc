//! Position-wise feed-forward networks.

use super::{Linear, Param};
use crate::{Device, Result, Rng, Tensor};

/// The feed-forward flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlpKind {
    /// `proj(gelu(fc(x)))` (GPT, GPT-2).
    Gelu,
    /// `down(silu(gate(x)) * up(x))` (Llama).
    SwiGlu,
    /// `down(gelu_tanh(gate(x)) * up(x))` (Gemma).
    GeGlu,
}

/// A feed-forward block.
#[derive(Clone, Debug)]
pub enum Mlp {
    Gelu {
        fc: Linear,
        proj: Linear,
    },
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    GeGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

impl Mlp {
    /// `dim -> hidden -> dim`, weights N(0, std²), output projection N(0, proj_std²).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: MlpKind,
        dim: usize,
        hidden: usize,
        bias: bool,
        std: f64,
        proj_std: f64,
        rng: &mut Rng,
        device: Device,
    ) -> Result<Self> {
        Ok(match kind {
            MlpKind::Gelu => Mlp::Gelu {
                fc: Linear::new(dim, hidden, bias, std, rng, device)?,
                proj: Linear::new(hidden, dim, bias, proj_std, rng, device)?,
            },
            MlpKind::SwiGlu | MlpKind::GeGlu => {
                let gate = Linear::new(dim, hidden, bias, std, rng, device)?;
                let up = Linear::new(dim, hidden, bias, std, rng, device)?;
                let down = Linear::new(hidden, dim, bias, proj_std, rng, device)?;
                if kind == MlpKind::SwiGlu {
                    Mlp::SwiGlu { gate, up, down }
                } else {
                    Mlp::GeGlu { gate, up, down }
                }
            }
        })
    }

    /// `[.., dim]` to `[.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mlp::Gelu { fc, proj } => proj.forward(&fc.forward(x)?.gelu()?),
            _ => self.forward_residual(x, None),
        }
    }

    /// `residual + mlp(norm(x))`: the norm folded into the first projection of a GELU MLP
    /// where the backend can (inference), the rest as [`Mlp::forward_residual`].
    pub fn forward_residual_normed(
        &self,
        x: &Tensor,
        norm: &super::Norm,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        match self {
            Mlp::Gelu { fc, proj } => {
                proj.forward_fused(&fc.forward_normed(x, norm, true)?, false, residual)
            }
            _ => self.forward_residual(&norm.forward(x)?, residual),
        }
    }

    /// `residual + mlp(x)` with the activation and the add fused into the GEMMs where the
    /// backend can (inference).
    pub fn forward_residual(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Mlp::Gelu { fc, proj } => {
                proj.forward_fused(&fc.forward_fused(x, true, None)?, false, residual)
            }
            Mlp::SwiGlu { gate, up, down } => down.forward_fused(
                &gate.forward(x)?.silu()?.mul(&up.forward(x)?)?,
                false,
                residual,
            ),
            Mlp::GeGlu { gate, up, down } => down.forward_fused(
                &gate.forward(x)?.gelu()?.mul(&up.forward(x)?)?,
                false,
                residual,
            ),
        }
    }

    /// The three projections of a gated MLP (SwiGLU or GeGLU), mutably.
    pub fn gated_mut(&mut self) -> Option<[&mut Linear; 3]> {
        match self {
            Mlp::Gelu { .. } => None,
            Mlp::SwiGlu { gate, up, down } | Mlp::GeGlu { gate, up, down } => {
                Some([gate, up, down])
            }
        }
    }

    /// Appends this layer's parameters.
    pub fn params(&self, prefix: &str, out: &mut Vec<Param>) {
        match self {
            Mlp::Gelu { fc, proj } => {
                fc.params(&format!("{prefix}.fc"), out);
                proj.params(&format!("{prefix}.proj"), out);
            }
            Mlp::SwiGlu { gate, up, down } | Mlp::GeGlu { gate, up, down } => {
                gate.params(&format!("{prefix}.gate"), out);
                up.params(&format!("{prefix}.up"), out);
                down.params(&format!("{prefix}.down"), out);
            }
        }
    }
}

impl Mlp {
    /// A copy with its tensors in `dtype`.
    pub fn to_dtype(&self, dtype: crate::DType) -> Result<Self> {
        Ok(match self {
            Mlp::Gelu { fc, proj } => Mlp::Gelu {
                fc: fc.to_dtype(dtype)?,
                proj: proj.to_dtype(dtype)?,
            },
            Mlp::SwiGlu { gate, up, down } => Mlp::SwiGlu {
                gate: gate.to_dtype(dtype)?,
                up: up.to_dtype(dtype)?,
                down: down.to_dtype(dtype)?,
            },
            Mlp::GeGlu { gate, up, down } => Mlp::GeGlu {
                gate: gate.to_dtype(dtype)?,
                up: up.to_dtype(dtype)?,
                down: down.to_dtype(dtype)?,
            },
        })
    }
}
