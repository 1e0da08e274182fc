//! Rotary scaling read from GGUF metadata: none, linear (positions divided by a factor),
//! Llama 3.1's per-frequency divisors (`rope_freqs.weight`) and YaRN (frequencies blended
//! between interpolated and extrapolated by a ramp, cos and sin scaled up), as llama.cpp
//! and transformers compute them.

use super::from_gguf::{bad, hyper_f};
use crate::io::gguf::GgufFile;
use crate::nn::RopeAdjust;
use crate::Result;

/// What the file asks of the rotary tables of its full-attention layers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RopeSettings {
    /// Linear scaling: positions divided by this.
    pub scale: Option<f64>,
    /// Per-frequency divisors and a magnitude.
    pub adjust: Option<RopeAdjust>,
}

/// Reads `{arch}.rope.scaling.*` and `rope_freqs.weight` for heads rotating `rot_dims`
/// features with frequency base `base`; unsupported schemes are named errors.
pub fn rope_settings(f: &GgufFile, arch: &str, rot_dims: usize, base: f64) -> Result<RopeSettings> {
    let long_rope = ["rope_factors_long.weight", "rope_factors_short.weight"];
    if long_rope.iter().any(|n| f.tensor_info(n).is_some()) {
        return Err(bad(
            f,
            "LongRoPE factors (`rope_factors_long/short`, Phi-3 128k style) are not supported",
        ));
    }
    if !(base > 1.0 && base.is_finite()) {
        return Err(bad(
            f,
            format!("`{arch}.rope.freq_base` = {base}: must be a finite number above 1"),
        ));
    }
    let kind = f
        .get(&format!("{arch}.rope.scaling.type"))
        .and_then(|v| v.as_str())
        .unwrap_or("none");
    let factor = hyper_f(f, arch, "rope.scaling.factor", 1.0);
    if !(factor > 0.0 && factor.is_finite()) {
        return Err(bad(
            f,
            format!("rope scaling factor {factor} is not positive"),
        ));
    }
    let freqs = rope_freqs(f, rot_dims)?;
    match kind {
        "none" | "linear" => Ok(RopeSettings {
            scale: (kind == "linear" && factor != 1.0).then_some(factor),
            adjust: freqs.map(|factors| RopeAdjust {
                factors,
                magnitude: 1.0,
            }),
        }),
        "yarn" => {
            if freqs.is_some() {
                return Err(bad(
                    f,
                    "YaRN together with `rope_freqs.weight` is not supported",
                ));
            }
            let orig = hyper_f(f, arch, "rope.scaling.original_context_length", 0.0);
            if orig < 1.0 || !orig.is_finite() {
                return Err(bad(f, "YaRN needs `rope.scaling.original_context_length`"));
            }
            let beta_fast = hyper_f(f, arch, "rope.scaling.yarn_beta_fast", 32.0);
            let beta_slow = hyper_f(f, arch, "rope.scaling.yarn_beta_slow", 1.0);
            let attn = hyper_f(f, arch, "rope.scaling.attn_factor", 1.0);
            let sane = |v: f64| v > 0.0 && v.is_finite();
            if !(sane(beta_fast) && sane(beta_slow) && beta_fast > beta_slow && sane(attn)) {
                return Err(bad(
                    f,
                    format!(
                        "YaRN betas {beta_fast} / {beta_slow} (fast above slow) and attention factor {attn} must be positive and finite"
                    ),
                ));
            }
            Ok(RopeSettings {
                scale: None,
                adjust: Some(RopeAdjust {
                    factors: yarn_factors(rot_dims, base, factor, orig, beta_fast, beta_slow)
                        .into(),
                    magnitude: attn * (0.1 * factor.ln() + 1.0),
                }),
            })
        }
        other => Err(bad(
            f,
            format!("rope scaling `{other}` is not supported (none, linear and yarn are)"),
        )),
    }
}

/// YaRN's divisor for each rotary frequency: high frequencies (many turns within the
/// original context) keep their value, low ones are divided by `factor`, and those between
/// blend linearly over the pair indices between the `beta_fast` and `beta_slow` turn counts.
pub fn yarn_factors(
    rot_dims: usize,
    base: f64,
    factor: f64,
    original_context: f64,
    beta_fast: f64,
    beta_slow: f64,
) -> Vec<f64> {
    let d = rot_dims as f64;
    // The pair index whose wavelength fits `turns` times into the original context.
    let pair = |turns: f64| {
        d * (original_context / (turns * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
    };
    let low = pair(beta_fast).floor().max(0.0);
    let mut high = pair(beta_slow).ceil().min(d - 1.0);
    if high == low {
        high += 0.001;
    }
    (0..rot_dims / 2)
        .map(|i| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            // Weight of the original (extrapolated) frequency.
            let keep = 1.0 - ramp;
            1.0 / ((1.0 - keep) / factor + keep)
        })
        .collect()
}

/// Llama 3.1's per-frequency rope divisors (`rope_freqs.weight`, one per rotated pair of
/// `rot_dims`), when the file has them.
fn rope_freqs(f: &GgufFile, rot_dims: usize) -> Result<Option<std::sync::Arc<[f64]>>> {
    if f.tensor_info("rope_freqs.weight").is_none() {
        return Ok(None);
    }
    let factors = f.dequantize("rope_freqs.weight")?.to_vec_f64()?;
    if factors.len() != rot_dims / 2 || factors.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
        return Err(bad(
            f,
            format!(
                "`rope_freqs.weight` has {} entries; {} positive ones are needed",
                factors.len(),
                rot_dims / 2
            ),
        ));
    }
    Ok(Some(factors.into()))
}
