//! The CPU backend: typed host vectors and multithreaded kernels that honour strides.
//!
//! Float kernels are written once, generic over [`Real`] (f32 and f64); f16 and bf16 are
//! widened to f32 for the arithmetic and rounded back, so every sum accumulates in f32 or
//! better.

mod batch_norm;
mod elementwise;
mod flash;
mod index;
mod interface;
mod matmul;
mod nn;
mod quant;
pub mod real;
mod reduce;

pub use batch_norm::{channel_affine, channel_sums};
pub use elementwise::*;
pub use flash::{flash_backward, flash_forward};
pub use index::*;
pub use matmul::*;
pub use nn::*;
pub use quant::*;
pub use reduce::*;

use crate::{DType, Error, Layout, Result, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;

/// A typed host buffer.
#[derive(Debug, Clone)]
pub enum CpuStorage {
    F64(Vec<f64>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U8(Vec<u8>),
}

impl CpuStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::U8(_) => DType::U8,
        }
    }

    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
            CpuStorage::U8(v) => v.len(),
        }
    }

    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A buffer of `n` copies of `value` (rounded to the dtype).
    pub fn full(dtype: DType, n: usize, value: f64) -> CpuStorage {
        match dtype {
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F16 => CpuStorage::F16(vec![<f16 as WithDType>::from_f64(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![<bf16 as WithDType>::from_f64(value); n]),
            DType::I64 => CpuStorage::I64(vec![value as i64; n]),
            DType::U32 => CpuStorage::U32(vec![value as u32; n]),
            DType::U8 => CpuStorage::U8(vec![value as u8; n]),
        }
    }

    /// [`CpuStorage::full`], with an allocation the system refuses returned as an error
    /// instead of ending the process.
    pub fn try_full(dtype: DType, n: usize, value: f64) -> crate::Result<CpuStorage> {
        fn filled<T: Clone>(n: usize, v: T) -> crate::Result<Vec<T>> {
            let mut out = Vec::new();
            out.try_reserve_exact(n).map_err(|_| {
                crate::Error::invalid(
                    "allocate",
                    format!(
                        "out of memory: {n} elements of {} bytes each",
                        std::mem::size_of::<T>()
                    ),
                )
            })?;
            out.resize(n, v);
            Ok(out)
        }
        Ok(match dtype {
            DType::F64 => CpuStorage::F64(filled(n, value)?),
            DType::F32 => CpuStorage::F32(filled(n, value as f32)?),
            DType::F16 => CpuStorage::F16(filled(n, <f16 as WithDType>::from_f64(value))?),
            DType::BF16 => CpuStorage::BF16(filled(n, <bf16 as WithDType>::from_f64(value))?),
            DType::I64 => CpuStorage::I64(filled(n, value as i64)?),
            DType::U32 => CpuStorage::U32(filled(n, value as u32)?),
            DType::U8 => CpuStorage::U8(filled(n, value as u8)?),
        })
    }

    /// Builds a buffer from f64 values, rounding to `dtype`.
    pub fn from_f64s(dtype: DType, v: &[f64]) -> CpuStorage {
        match dtype {
            DType::F64 => CpuStorage::F64(v.to_vec()),
            DType::F32 => CpuStorage::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F16 => {
                CpuStorage::F16(v.iter().map(|&x| <f16 as WithDType>::from_f64(x)).collect())
            }
            DType::BF16 => CpuStorage::BF16(
                v.iter()
                    .map(|&x| <bf16 as WithDType>::from_f64(x))
                    .collect(),
            ),
            DType::I64 => CpuStorage::I64(v.iter().map(|&x| x as i64).collect()),
            DType::U32 => CpuStorage::U32(v.iter().map(|&x| x as u32).collect()),
            DType::U8 => CpuStorage::U8(v.iter().map(|&x| x as u8).collect()),
        }
    }

    /// Elements under `layout`, in logical order, converted to f64.
    pub fn to_f64s(&self, layout: &Layout) -> Vec<f64> {
        macro_rules! go {
            ($v:expr) => {{
                let mut out = Vec::with_capacity(layout.numel());
                layout.for_each_offset(|o| out.push(WithDType::to_f64($v[o])));
                out
            }};
        }
        match self {
            CpuStorage::F64(v) => go!(v),
            CpuStorage::F32(v) => go!(v),
            CpuStorage::F16(v) => go!(v),
            CpuStorage::BF16(v) => go!(v),
            CpuStorage::I64(v) => go!(v),
            CpuStorage::U32(v) => go!(v),
            CpuStorage::U8(v) => go!(v),
        }
    }

    /// Index values under `layout` as i64, for ops that take indices.
    pub fn to_indices(&self, op: &'static str, layout: &Layout) -> Result<Vec<i64>> {
        macro_rules! go {
            ($v:expr) => {{
                let mut out = Vec::with_capacity(layout.numel());
                layout.for_each_offset(|o| out.push($v[o] as i64));
                Ok(out)
            }};
        }
        match self {
            CpuStorage::I64(v) => go!(v),
            CpuStorage::U32(v) => go!(v),
            CpuStorage::U8(v) => go!(v),
            other => Err(Error::UnsupportedDType {
                op,
                dtype: other.dtype(),
            }),
        }
    }
}

impl CpuStorage {
    /// The elements as little-endian bytes (the layout of safetensors files and of GPU
    /// buffers).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            CpuStorage::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuStorage::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuStorage::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuStorage::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuStorage::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuStorage::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            CpuStorage::U8(v) => v.clone(),
        }
    }

    /// Elements of `dtype` decoded from little-endian bytes (a trailing partial element is
    /// ignored; callers check lengths).
    pub fn from_le_bytes(dtype: DType, b: &[u8]) -> CpuStorage {
        fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        match dtype {
            DType::F64 => CpuStorage::F64(chunks(b, f64::from_le_bytes)),
            DType::F32 => CpuStorage::F32(chunks(b, f32::from_le_bytes)),
            DType::F16 => CpuStorage::F16(chunks(b, f16::from_le_bytes)),
            DType::BF16 => CpuStorage::BF16(chunks(b, bf16::from_le_bytes)),
            DType::I64 => CpuStorage::I64(chunks(b, i64::from_le_bytes)),
            DType::U32 => CpuStorage::U32(chunks(b, u32::from_le_bytes)),
            DType::U8 => CpuStorage::U8(b.to_vec()),
        }
    }
}

/// Converts a typed vector into storage.
pub trait IntoCpuStorage: WithDType {
    /// Wraps the vector.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Borrows the vector back out, if the dtype matches.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! into_storage {
    ($t:ty, $variant:ident) => {
        impl IntoCpuStorage for $t {
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
into_storage!(f64, F64);
into_storage!(f32, F32);
into_storage!(f16, F16);
into_storage!(bf16, BF16);
into_storage!(i64, I64);
into_storage!(u32, U32);
into_storage!(u8, U8);

/// Widens a half-precision buffer to f32.
pub(crate) fn widen<H: WithDType + Sync>(v: &[H]) -> Vec<f32> {
    v.par_iter().map(|&x| x.to_f64() as f32).collect()
}

/// Rounds an f32 buffer to a half-precision type.
pub(crate) fn narrow_to<H: WithDType + Send>(v: Vec<f32>) -> Vec<H> {
    v.into_par_iter().map(|x| H::from_f64(x as f64)).collect()
}

/// Runs `$body` with `$v` bound to a float slice of `$s` (half types widened to f32); the
/// body returns a `Vec` of that float type, which is wrapped back into `$s`'s dtype.
macro_rules! map_float {
    ($op:expr, $s:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F64($v) => CpuStorage::F64($body),
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F16(h) => {
                let wide = $crate::backend::cpu::widen(h);
                let $v = &wide;
                CpuStorage::F16($crate::backend::cpu::narrow_to($body))
            }
            CpuStorage::BF16(h) => {
                let wide = $crate::backend::cpu::widen(h);
                let $v = &wide;
                CpuStorage::BF16($crate::backend::cpu::narrow_to($body))
            }
            other => {
                return Err($crate::Error::UnsupportedDType {
                    op: $op,
                    dtype: other.dtype(),
                })
            }
        }
    };
}
pub(crate) use map_float;

/// Like [`map_float`] for two storages that must share a float dtype.
macro_rules! map_float2 {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F64($x), CpuStorage::F64($y)) => CpuStorage::F64($body),
            (CpuStorage::F32($x), CpuStorage::F32($y)) => CpuStorage::F32($body),
            (CpuStorage::F16(p), CpuStorage::F16(q)) => {
                let (wp, wq) = (
                    $crate::backend::cpu::widen(p),
                    $crate::backend::cpu::widen(q),
                );
                let ($x, $y) = (&wp, &wq);
                CpuStorage::F16($crate::backend::cpu::narrow_to($body))
            }
            (CpuStorage::BF16(p), CpuStorage::BF16(q)) => {
                let (wp, wq) = (
                    $crate::backend::cpu::widen(p),
                    $crate::backend::cpu::widen(q),
                );
                let ($x, $y) = (&wp, &wq);
                CpuStorage::BF16($crate::backend::cpu::narrow_to($body))
            }
            (a, b) => {
                return Err(if a.dtype() == b.dtype() {
                    $crate::Error::UnsupportedDType {
                        op: $op,
                        dtype: a.dtype(),
                    }
                } else {
                    $crate::Error::DTypeMismatch {
                        op: $op,
                        lhs: a.dtype(),
                        rhs: b.dtype(),
                    }
                })
            }
        }
    };
}
pub(crate) use map_float2;

/// Runs `$body` with `$v` bound to the typed slice of `$s`, for any dtype; the body
/// returns a `Vec` of the same element type.
macro_rules! map_any {
    ($s:expr, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F64($v) => CpuStorage::F64($body),
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F16($v) => CpuStorage::F16($body),
            CpuStorage::BF16($v) => CpuStorage::BF16($body),
            CpuStorage::I64($v) => CpuStorage::I64($body),
            CpuStorage::U32($v) => CpuStorage::U32($body),
            CpuStorage::U8($v) => CpuStorage::U8($body),
        }
    };
}
pub(crate) use map_any;

/// Smallest number of elements one parallel task gets.
const MIN_PAR_CHUNK: usize = 1 << 14;

/// Fills `out` in parallel chunks; `f(start, chunk)` writes logical elements
/// `start..start + chunk.len()`.
pub(crate) fn par_fill<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let n = out.len();
    if n <= MIN_PAR_CHUNK {
        f(0, out);
        return;
    }
    let chunk = (n / (rayon::current_num_threads() * 4)).max(MIN_PAR_CHUNK);
    out.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| f(i * chunk, c));
}

/// Elements under `layout` copied into a new contiguous vector.
pub(crate) fn gather_strided<T: Copy + Send + Sync + Default>(
    src: &[T],
    layout: &Layout,
) -> Vec<T> {
    let n = layout.numel();
    if layout.is_contiguous() {
        return src[layout.offset()..layout.offset() + n].to_vec();
    }
    let mut out = vec![T::default(); n];
    par_fill(&mut out, |start, chunk| {
        let mut i = 0;
        layout.for_each_run_in(start, chunk.len(), |off, n, stride| {
            for (j, o) in chunk[i..i + n].iter_mut().enumerate() {
                *o = src[off + j * stride];
            }
            i += n;
        });
    });
    out
}

/// The elements under `layout` as a contiguous slice, copying only when needed.
pub(crate) fn contiguous_cow<'a, T: Copy + Send + Sync + Default>(
    src: &'a [T],
    layout: &Layout,
) -> std::borrow::Cow<'a, [T]> {
    if layout.is_contiguous() {
        std::borrow::Cow::Borrowed(&src[layout.offset()..layout.offset() + layout.numel()])
    } else {
        std::borrow::Cow::Owned(gather_strided(src, layout))
    }
}

/// Copies the elements under `layout` into a new contiguous buffer of the same dtype.
pub fn copy_contiguous(s: &CpuStorage, layout: &Layout) -> CpuStorage {
    map_any!(s, |v| gather_strided(v, layout))
}

/// Converts the elements under `layout` to `dtype` (contiguous result).
pub fn cast(s: &CpuStorage, layout: &Layout, dtype: DType) -> CpuStorage {
    if s.dtype() == dtype {
        return copy_contiguous(s, layout);
    }
    match (s, dtype) {
        (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(narrow_to(gather_strided(v, layout))),
        (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(narrow_to(gather_strided(v, layout))),
        (CpuStorage::F16(v), DType::F32) => CpuStorage::F32(widen(&gather_strided(v, layout))),
        (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(widen(&gather_strided(v, layout))),
        _ => CpuStorage::from_f64s(dtype, &s.to_f64s(layout)),
    }
}
