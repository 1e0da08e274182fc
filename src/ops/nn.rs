//! Fused neural-network ops: softmax, log-softmax, layer/RMS norm, cross-entropy, dropout,
//! rotary embeddings, and the causal mask.

use super::{check_float, check_same};
use crate::autograd::{record, Op};
use crate::backend::NormKind;
use crate::backend::RotaryStyle;
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Rng, Tensor};

impl Tensor {
    fn softmax_impl(&self, dim: usize, log: bool, causal: bool) -> Result<Tensor> {
        check_float("softmax", self)?;
        self.layout().check_dim("softmax", dim)?;
        let last = self.rank() - 1;
        if dim != last {
            return self
                .transpose(dim, last)?
                .softmax_impl(last, log, causal)?
                .transpose(dim, last);
        }
        let out = self
            .read_storage()
            .softmax_last(self.layout(), log, causal)?;
        let y = Tensor::from_storage(out, self.shape(), None);
        let rec = record(&[self], || Op::Softmax {
            x: self.clone(),
            y: y.clone(),
            log,
            causal,
        });
        Ok(y.view_with(y.layout().clone(), rec))
    }

    /// Softmax over `dim`, one fused pass per row (max-subtracted, so it never overflows).
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_impl(dim, false, false)
    }

    /// Softmax over the last dim of attention scores `[.., queries, keys]` with a causal
    /// mask fused in: query q sees keys up to q + (keys - queries); later entries are
    /// exactly 0. Equal to `masked_fill(causal_mask, -inf)` then `softmax`, in one pass.
    pub fn softmax_causal(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::invalid(
                "softmax_causal",
                format!("needs [.., queries, keys], got {:?}", self.shape()),
            ));
        }
        self.softmax_impl(self.rank() - 1, false, true)
    }

    /// Log-softmax over `dim`.
    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        self.softmax_impl(dim, true, false)
    }

    fn norm_impl(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        kind: NormKind,
        eps: f64,
    ) -> Result<Tensor> {
        let op = if kind == NormKind::Layer {
            "layer_norm"
        } else {
            "rms_norm"
        };
        check_float(op, self)?;
        let c = *self
            .shape()
            .last()
            .ok_or_else(|| Error::invalid(op, "input is a scalar"))?;
        for p in weight.iter().chain(bias.iter()) {
            check_same(op, self, p)?;
            if p.shape() != [c] {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().to_vec(),
                    rhs: p.shape().to_vec(),
                });
            }
        }
        let out = {
            let ws = weight.map(|w| w.read_storage());
            let bs = bias.map(|b| b.read_storage());
            self.read_storage().norm(
                self.layout(),
                view(&ws, weight),
                view(&bs, bias),
                kind,
                eps,
            )?
        };
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let rec = record(&inputs, || Op::Norm {
            x: self.clone(),
            weight: weight.cloned(),
            bias: bias.cloned(),
            kind,
            eps,
        });
        Ok(Tensor::from_storage(out, self.shape(), rec))
    }

    /// Layer norm over the last dim, with optional weight and bias of shape `[C]`.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        self.norm_impl(weight, bias, NormKind::Layer, eps)
    }

    /// RMS norm over the last dim, with an optional weight of shape `[C]`.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.norm_impl(weight, None, NormKind::Rms, eps)
    }

    /// Mean cross-entropy of logits `[.., V]` against integer targets `[..]`, skipping
    /// targets equal to `ignore_index`. Fused: the softmax is never materialised.
    pub fn cross_entropy(&self, targets: &Tensor, ignore_index: i64) -> Result<Tensor> {
        self.cross_entropy_as(targets, ignore_index, self.dtype())
    }

    /// [`Tensor::cross_entropy`] with the loss in f32 whatever the logits' dtype, as mixed
    /// precision wants it. Where the backend can (the GPU), f16/bf16 logits are read as
    /// they are, their rows accumulated in f32 and their gradient rounded once: what
    /// casting them to f32 first gives, without the f32 copy of the logits and its
    /// gradient. Elsewhere the logits are cast.
    pub fn cross_entropy_f32(&self, targets: &Tensor, ignore_index: i64) -> Result<Tensor> {
        let half = matches!(self.dtype(), DType::F16 | DType::BF16);
        if half && self.read_storage().cross_entropy_reads_half() {
            return self.cross_entropy_as(targets, ignore_index, DType::F32);
        }
        let logits = if self.dtype() == DType::F32 {
            self.clone()
        } else {
            self.to_dtype(DType::F32)?
        };
        logits.cross_entropy(targets, ignore_index)
    }

    /// Cross-entropy with the loss in `out` (the logits' dtype, or f32 for GPU half logits).
    fn cross_entropy_as(&self, targets: &Tensor, ignore_index: i64, out: DType) -> Result<Tensor> {
        check_float("cross_entropy", self)?;
        if !targets.dtype().is_index() {
            return Err(Error::UnsupportedDType {
                op: "cross_entropy (targets)",
                dtype: targets.dtype(),
            });
        }
        if self.rank() < 1 || targets.shape() != &self.shape()[..self.rank() - 1] {
            return Err(Error::ShapeMismatch {
                op: "cross_entropy",
                lhs: self.shape().to_vec(),
                rhs: targets.shape().to_vec(),
            });
        }
        super::check_same_device("cross_entropy", self, targets)?;
        let out = self.read_storage().cross_entropy(
            self.layout(),
            (&targets.read_storage(), targets.layout()),
            ignore_index,
            out,
        )?;
        let rec = record(&[self], || Op::CrossEntropy {
            logits: self.clone(),
            targets: targets.clone(),
            ignore: ignore_index,
        });
        Ok(Tensor::from_storage(out, &[], rec))
    }

    /// Zeroes each element with probability `p` and scales the rest by `1/(1-p)`.
    pub fn dropout(&self, p: f64, rng: &mut Rng) -> Result<Tensor> {
        check_float("dropout", self)?;
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("probability {p} is not in [0, 1)"),
            ));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let keep = Tensor::rand(self.shape(), 0.0, 1.0, DType::F64, self.device(), rng)?
            .ge(&Tensor::scalar(p, DType::F64, self.device())?)?;
        let mask = keep.to_dtype(self.dtype())?.affine(1.0 / (1.0 - p), 0.0)?;
        let out = self.detach().mul(&mask)?;
        let rec = record(&[self], || Op::Dropout(self.clone(), mask.clone()));
        Ok(out.view_with(out.layout().clone(), rec))
    }

    /// Rotary position embedding of `[.., T, D]` with tables `cos`, `sin` of `[T, D/2]`
    /// (see [`rotary_tables`]).
    pub fn rotary(&self, cos: &Tensor, sin: &Tensor, style: RotaryStyle) -> Result<Tensor> {
        self.rotary_inner(cos, sin, style, false)
    }

    pub(crate) fn rotary_inner(
        &self,
        cos: &Tensor,
        sin: &Tensor,
        style: RotaryStyle,
        inverse: bool,
    ) -> Result<Tensor> {
        check_float("rotary", self)?;
        let r = self.rank();
        let ok = r >= 2
            && self.shape()[r - 1].is_multiple_of(2)
            && cos.shape() == [self.shape()[r - 2], self.shape()[r - 1] / 2]
            && sin.shape() == cos.shape();
        if !ok {
            return Err(Error::ShapeMismatch {
                op: "rotary",
                lhs: self.shape().to_vec(),
                rhs: cos.shape().to_vec(),
            });
        }
        let out = {
            self.read_storage().rotary(
                self.layout(),
                (&cos.read_storage(), cos.layout()),
                (&sin.read_storage(), sin.layout()),
                style,
                inverse,
            )?
        };
        let rec = record(&[self], || Op::Rotary {
            x: self.clone(),
            cos: cos.clone(),
            sin: sin.clone(),
            style,
        });
        Ok(Tensor::from_storage(out, self.shape(), rec))
    }
}

/// cos and sin tables `[t, dim/2]` for rotary embeddings with frequency base `base`,
/// for positions `start..start + t`: views into tables made once per (base, dim, dtype,
/// device) and grown by doubling, so decoding uploads nothing per step.
pub fn rotary_tables(
    start: usize,
    t: usize,
    dim: usize,
    base: f64,
    dtype: DType,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    rotary_tables_scaled(start, t, dim, base, 1.0, dtype, device)
}

/// [`rotary_tables`] with linear position scaling: position p turns by the angles of
/// p / `scale` (rope scaling type "linear", which stretches a model's context).
pub fn rotary_tables_scaled(
    start: usize,
    t: usize,
    dim: usize,
    base: f64,
    scale: f64,
    dtype: DType,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let spec = RotarySpec {
        scale,
        ..RotarySpec::plain(dim, base)
    };
    rotary_tables_for(start, t, &spec, dtype, device)
}

/// How rotary angles are made: frequency i of a `dim`-feature rotation is
/// `base^(-2i/dim) / factors[i]`, positions are divided by `scale`, and cos and sin are
/// multiplied by `magnitude`.
#[derive(Clone, Debug, PartialEq)]
pub struct RotarySpec<'a> {
    pub dim: usize,
    pub base: f64,
    /// Linear scaling (1: none).
    pub scale: f64,
    /// Per-frequency divisors (Llama 3.1's `rope_freqs`, YaRN); empty or `dim / 2` of them.
    pub factors: &'a [f64],
    /// YaRN's attention factor (1: none).
    pub magnitude: f64,
}

impl RotarySpec<'_> {
    /// The unscaled tables of `dim` features with frequency base `base`.
    pub fn plain(dim: usize, base: f64) -> Self {
        RotarySpec {
            dim,
            base,
            scale: 1.0,
            factors: &[],
            magnitude: 1.0,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("rotary_tables", m));
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !self.dim.is_multiple_of(2) {
            return bad(format!("head dim {} must be even", self.dim));
        }
        if !positive(self.scale) || !positive(self.magnitude) {
            return bad(format!(
                "rope scale {} and magnitude {} must be positive",
                self.scale, self.magnitude
            ));
        }
        let ok = self.factors.is_empty()
            || (self.factors.len() == self.dim / 2 && self.factors.iter().all(|&f| positive(f)));
        if !ok {
            return bad(format!(
                "{} frequency factors for head dim {}: expected {} positive ones",
                self.factors.len(),
                self.dim,
                self.dim / 2
            ));
        }
        Ok(())
    }
}

/// cos and sin tables `[t, spec.dim / 2]` for positions `start..start + t` under `spec`:
/// views into tables made once per spec, dtype and device and grown by doubling.
pub fn rotary_tables_for(
    start: usize,
    t: usize,
    spec: &RotarySpec,
    dtype: DType,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::sync::Mutex;
    type Key = (u64, usize, DType, Device);
    static TABLES: Mutex<Option<HashMap<Key, (Tensor, Tensor)>>> = Mutex::new(None);
    spec.validate()?;
    let end = start + t;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for v in [spec.base, spec.scale, spec.magnitude]
        .iter()
        .chain(spec.factors)
    {
        v.to_bits().hash(&mut hasher);
    }
    let key = (hasher.finish(), spec.dim, dtype, device);
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let map = tables.get_or_insert_with(HashMap::new);
    let have = map.get(&key).map_or(0, |(c, _)| c.shape()[0]);
    if have < end {
        let n = end.next_power_of_two().max(256);
        map.insert(key, build_rotary_tables(n, spec, dtype, device)?);
    }
    let (c, s) = &map[&key];
    Ok((c.narrow(0, start, t)?, s.narrow(0, start, t)?))
}

/// cos and sin `[n, dim/2]` for positions `0..n` under `spec`, computed in f64.
fn build_rotary_tables(
    n: usize,
    spec: &RotarySpec,
    dtype: DType,
    device: Device,
) -> Result<(Tensor, Tensor)> {
    let RotarySpec {
        dim,
        base,
        scale,
        factors,
        magnitude,
    } = *spec;
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half)
        .map(|i| {
            let freq = base.powf(-((2 * i) as f64) / dim as f64);
            factors.get(i).map_or(freq, |f| freq / f)
        })
        .collect();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for freq in &freqs {
            let angle = if scale == 1.0 {
                p as f64 * freq
            } else {
                p as f64 / scale * freq
            };
            cos.push(magnitude * angle.cos());
            sin.push(magnitude * angle.sin());
        }
    }
    let c = Tensor::from_vec(cos, &[n, half], device)?.to_dtype(dtype)?;
    let s = Tensor::from_vec(sin, &[n, half], device)?.to_dtype(dtype)?;
    Ok((c, s))
}

/// A `[t, t]` u8 mask with 1 where a query may not see a key (key after query).
pub fn causal_mask(t: usize, device: Device) -> Result<Tensor> {
    let mut m = vec![0u8; t * t];
    for q in 0..t {
        for k in q + 1..t {
            m[q * t + k] = 1;
        }
    }
    Tensor::from_vec(m, &[t, t], device)
}

/// An optional parameter's buffer (read through `guard`) and layout, for the backend.
pub(crate) fn view<'a>(
    guard: &'a Option<std::sync::RwLockReadGuard<'_, Storage>>,
    t: Option<&'a Tensor>,
) -> Option<(&'a Storage, &'a crate::Layout)> {
    match (guard, t) {
        (Some(g), Some(t)) => Some((&**g, t.layout())),
        _ => None,
    }
}
