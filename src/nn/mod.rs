//! Layers built from tensor ops. Each layer owns its parameters and lists them, named, with
//! whether weight decay applies to them.

mod attention;
mod batch_norm;
mod block;
mod kv_cache;
mod layers;
mod mlp;

pub use attention::{AttentionConfig, CausalSelfAttention, RopeAdjust};
pub use batch_norm::BatchNorm2d;
pub use block::{Block, BlockConfig};
pub use kv_cache::KvCache;
pub use layers::{Embedding, LayerNorm, Linear, Norm, NormKind, RmsNorm};
pub use mlp::{Mlp, MlpKind};

use crate::Tensor;

/// A named trainable tensor.
#[derive(Clone, Debug)]
pub struct Param {
    /// Dotted name, stable across saves and loads (e.g. `h.0.attn.qkv.weight`).
    pub name: String,
    /// The tensor itself (a variable that requires grad).
    pub tensor: Tensor,
    /// Whether AdamW's decoupled weight decay applies (matrices of linear layers only;
    /// never biases, norms or embeddings).
    pub decay: bool,
}

/// Appends `prefix.name` to `out`.
pub(crate) fn push(out: &mut Vec<Param>, prefix: &str, name: &str, tensor: &Tensor, decay: bool) {
    let name = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    };
    out.push(Param {
        name,
        tensor: tensor.clone(),
        decay,
    });
}

/// Overwrites each parameter with the tensor of the same name in `weights`, cast to the
/// parameter's dtype and moved to its device; a missing or mis-shaped tensor is an error
/// that names it (the caller wraps it with the file's path).
pub fn assign_params(
    params: &[Param],
    weights: &std::collections::HashMap<String, Tensor>,
) -> crate::Result<()> {
    for p in params {
        let w = weights.get(&p.name).ok_or_else(|| {
            crate::Error::invalid("load weights", format!("missing tensor `{}`", p.name))
        })?;
        if w.shape() != p.tensor.shape() {
            return Err(crate::Error::invalid(
                "load weights",
                format!(
                    "tensor `{}` has shape {:?}, the model expects {:?}",
                    p.name,
                    w.shape(),
                    p.tensor.shape()
                ),
            ));
        }
        if !w.dtype().is_float() {
            return Err(crate::Error::invalid(
                "load weights",
                format!(
                    "tensor `{}` holds {} integers, not floating-point weights",
                    p.name,
                    w.dtype()
                ),
            ));
        }
        let w = w.to_dtype(p.tensor.dtype())?;
        if let Some(i) = first_non_finite(&w)? {
            return Err(crate::Error::invalid(
                "load weights",
                format!("tensor `{}` holds a NaN or infinity at element {i}", p.name),
            ));
        }
        p.tensor.assign(&w.to_device(p.tensor.device())?)?;
    }
    Ok(())
}

/// The index of the first NaN or infinity among a weight tensor's elements, if any: the
/// loaders' cheap guard against weights that would only ever produce garbage.
pub fn first_non_finite(t: &crate::Tensor) -> crate::Result<Option<usize>> {
    Ok(t.to_dtype(crate::DType::F32)?
        .to_vec::<f32>()?
        .iter()
        .position(|v| !v.is_finite()))
}
