//! Element types a tensor can hold, and the Rust types that map to them.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DType {
    /// 64-bit float: used by gradient checks and anywhere exactness matters more than speed.
    F64,
    /// 32-bit float: the default training type.
    F32,
    /// IEEE half precision (storage; arithmetic accumulates in f32).
    F16,
    /// bfloat16 (storage; arithmetic accumulates in f32).
    BF16,
    /// Signed 64-bit integers: token ids, indices, argmax results.
    I64,
    /// Unsigned 32-bit integers: compact indices.
    U32,
    /// Bytes: masks produced by comparisons (0 or 1).
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// True for floating-point dtypes, the only ones that carry gradients.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// True for the integer dtypes accepted as indices.
    pub fn is_index(self) -> bool {
        matches!(self, DType::I64 | DType::U32 | DType::U8)
    }

    /// Short lowercase name, as used in file formats and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::U32 => "u32",
            DType::U8 => "u8",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "f64" => DType::F64,
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            "i64" => DType::I64,
            "u32" => DType::U32,
            "u8" => DType::U8,
            other => {
                return Err(crate::Error::invalid(
                    "dtype",
                    format!(
                        "unknown dtype `{other}` (expected f64, f32, f16, bf16, i64, u32 or u8)"
                    ),
                ))
            }
        })
    }
}

/// A Rust scalar type that can be stored in a tensor.
pub trait WithDType: Copy + Send + Sync + 'static + fmt::Debug {
    /// The matching dtype.
    const DTYPE: DType;
    /// Converts to f64 (exactly for every supported type except large i64).
    fn to_f64(self) -> f64;
    /// Converts from f64, rounding to the nearest representable value.
    fn from_f64(v: f64) -> Self;
}

macro_rules! with_dtype {
    ($t:ty, $d:ident, $to:expr, $from:expr) => {
        impl WithDType for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}

with_dtype!(f64, F64, |x: f64| x, |v: f64| v);
with_dtype!(f32, F32, |x: f32| x as f64, |v: f64| v as f32);
with_dtype!(f16, F16, |x: f16| x.to_f64(), |v| half_from_f64(
    v,
    f16::from_f32
));
with_dtype!(bf16, BF16, |x: bf16| x.to_f64(), |v| half_from_f64(
    v,
    bf16::from_f32
));

/// `v` rounded to nearest-even in a half type, through its exact f32 conversion.
///
/// (The `half` crate's own f64 conversions drop the low 32 bits of the f64 before
/// rounding, so they misround values whose only sticky bits lie there, such as f32 values
/// with low mantissa bits set.) f32 is rounded once from f64; that is exact or within half
/// an f32 ulp of `v`, and rounding it again is right unless it landed exactly on a tie of
/// the half type, which is then broken toward `v` through the neighbouring f32.
pub(crate) fn half_from_f64<H: PartialEq>(v: f64, from_f32: fn(f32) -> H) -> H {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v {
        return from_f32(f);
    }
    let (down, up) = (f.next_down(), f.next_up());
    if from_f32(down) != from_f32(up) {
        return from_f32(if v > f as f64 { up } else { down });
    }
    from_f32(f)
}
with_dtype!(i64, I64, |x: i64| x as f64, |v: f64| v as i64);
with_dtype!(u32, U32, |x: u32| x as f64, |v: f64| v as u32);
with_dtype!(u8, U8, |x: u8| x as f64, |v: f64| v as u8);
