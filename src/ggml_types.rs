//! ggml tensor types: block sizes and dequantization to f32 of every type smith reads
//! (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q2_K..Q6_K), matching
//! the reference dequantizers bit for bit (same products in the same order, in f32).

use crate::{Error, Result};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// A ggml tensor type, by its GGUF id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

/// Elements per super-block of the K-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// Whether this is a block-quantized type (the ones a [`crate::QMatrix`] keeps as they
    /// are), rather than a plain float type.
    pub fn is_block_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// The type with GGUF id `id`; an error names types smith does not read.
    pub fn from_id(id: u32) -> Result<Self> {
        Ok(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::BF16,
            other => {
                let name = match other {
                    4 | 5 => "Q4_2/Q4_3 (removed from ggml)",
                    9 => "Q8_1",
                    15 => "Q8_K",
                    16..=23 | 29 => "an IQ quantization",
                    24 => "I8",
                    25 => "I16",
                    26 => "I32",
                    27 => "I64",
                    28 => "F64",
                    34 | 35 => "a ternary quantization (TQ1_0/TQ2_0)",
                    _ => "an unknown type",
                };
                return Err(Error::invalid(
                    "gguf",
                    format!("tensor type {other} ({name}) is not supported"),
                ));
            }
        })
    }

    /// GGUF id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    /// ggml's name for it.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (QK_K, 84),
            GgmlType::Q3K => (QK_K, 110),
            GgmlType::Q4K => (QK_K, 144),
            GgmlType::Q5K => (QK_K, 176),
            GgmlType::Q6K => (QK_K, 210),
        }
    }

    /// Bytes of `n` elements (`None` when `n` is not a whole number of blocks or the size
    /// overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (per, bytes) = self.block();
        if !n.is_multiple_of(per as u64) {
            return None;
        }
        (n / per as u64).checked_mul(bytes as u64)
    }
}

/// Byte offsets, within one block, of the f16 scale fields of a quantized type (the block's
/// `d`, and `dmin`/`m` where it has one); empty for the dense types.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => &[],
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
    }
}

/// The index of the first block of `data` (whole blocks of `ty`) whose f16 scale is a NaN
/// or an infinity: such a block dequantizes to non-finite weights, so loaders refuse it
/// without dequantizing the whole tensor.
pub fn first_non_finite_scale(ty: GgmlType, data: &[u8]) -> Option<usize> {
    let offsets = scale_offsets(ty);
    if offsets.is_empty() {
        return None;
    }
    let (_, bytes) = ty.block();
    data.chunks_exact(bytes)
        .position(|b| offsets.iter().any(|&o| !f16_at(b, o).is_finite()))
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `data` (whole blocks of `ty`) to f32.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Result<Vec<f32>> {
    let (per, bytes) = ty.block();
    if !data.len().is_multiple_of(bytes) {
        return Err(Error::invalid(
            "dequantize",
            format!(
                "{} bytes are not whole {} blocks of {bytes} bytes",
                data.len(),
                ty.name()
            ),
        ));
    }
    let mut out = Vec::with_capacity(data.len() / bytes * per);
    for b in data.chunks_exact(bytes) {
        dequantize_block(ty, b, &mut out);
    }
    Ok(out)
}

/// Dequantizes `data` (whole blocks of `ty`, checked by the caller) into `out`, replacing
/// its contents: the allocation-free form for row-at-a-time kernels.
#[inline(always)]
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match ty {
        // One value per "block": converted in bulk, not dispatched per value.
        GgmlType::F32 => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => {
            let mut halves = [f16::ZERO; 64];
            let mut wide = [0f32; 64];
            for chunk in data.chunks(128) {
                let n = chunk.len() / 2;
                for (h, b) in halves.iter_mut().zip(chunk.chunks_exact(2)) {
                    *h = f16::from_le_bytes([b[0], b[1]]);
                }
                halves[..n].convert_to_f32_slice(&mut wide[..n]);
                out.extend_from_slice(&wide[..n]);
            }
        }
        GgmlType::BF16 => out.extend(
            data.chunks_exact(2)
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
        ),
        _ => {
            for b in data.chunks_exact(ty.block().1) {
                dequantize_block(ty, b, out);
            }
        }
    }
}

/// Appends the `block().0` values of one block.
#[inline(always)]
fn dequantize_block(ty: GgmlType, b: &[u8], out: &mut Vec<f32>) {
    match ty {
        GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => out.push(f16_at(b, 0)),
        GgmlType::BF16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            let qs = &b[2..18];
            out.extend(qs.iter().map(|q| d * ((q & 0xF) as i32 - 8) as f32));
            out.extend(qs.iter().map(|q| d * ((q >> 4) as i32 - 8) as f32));
        }
        GgmlType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qs = &b[4..20];
            out.extend(qs.iter().map(|q| d * (q & 0xF) as f32 + m));
            out.extend(qs.iter().map(|q| d * (q >> 4) as f32 + m));
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (d, m, at) = if ty == GgmlType::Q5_0 {
                (f16_at(b, 0), None, 2)
            } else {
                (f16_at(b, 0), Some(f16_at(b, 2)), 4)
            };
            let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            let qs = &b[at + 4..at + 20];
            let value = |j: usize, nibble: u8| -> f32 {
                let q = (nibble | ((((qh >> j) & 1) as u8) << 4)) as i32;
                match m {
                    None => d * (q - 16) as f32,
                    Some(m) => d * q as f32 + m,
                }
            };
            for (j, q) in qs.iter().enumerate() {
                out.push(value(j, q & 0xF));
            }
            for (j, q) in qs.iter().enumerate() {
                out.push(value(j + 16, q >> 4));
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
        }
        GgmlType::Q2K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            // 256 values: two halves of 128, each 4 shifts x 2 groups of 16 bytes x 2 bits.
            for half in 0..2 {
                let q = &qs[32 * half..32 * half + 32];
                for shift in 0..4 {
                    for group in 0..2 {
                        let sc = scales[8 * half + 2 * shift + group];
                        let dl = d * (sc & 0xF) as f32;
                        let ml = dmin * (sc >> 4) as f32;
                        for l in 0..16 {
                            let v = (q[16 * group + l] >> (2 * shift)) & 3;
                            out.push(dl * v as f32 - ml);
                        }
                    }
                }
            }
        }
        GgmlType::Q3K => {
            let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
            let d = f16_at(b, 108);
            let scales = q3k_scales(packed);
            for half in 0..2 {
                let q = &qs[32 * half..32 * half + 32];
                for shift in 0..4 {
                    let bit = 4 * half + shift; // which hmask bit marks "no -4"
                    for group in 0..2 {
                        let dl = d * (scales[8 * half + 2 * shift + group] as i32 - 32) as f32;
                        for l in 0..16 {
                            let i = 16 * group + l;
                            let low = ((q[i] >> (2 * shift)) & 3) as i32;
                            let high = if hmask[i] & (1 << bit) != 0 { 0 } else { 4 };
                            out.push(dl * (low - high) as f32);
                        }
                    }
                }
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let packed = &b[4..16];
            let (qh, qs) = if ty == GgmlType::Q5K {
                (Some(&b[16..48]), &b[48..176])
            } else {
                (None, &b[16..144])
            };
            for chunk in 0..4 {
                let q = &qs[32 * chunk..32 * chunk + 32];
                for nib in 0..2 {
                    let (sc, m) = k4_scale_min(2 * chunk + nib, packed);
                    let dl = d * sc as f32;
                    let ml = dmin * m as f32;
                    for (l, &byte) in q.iter().enumerate() {
                        let mut v = if nib == 0 { byte & 0xF } else { byte >> 4 } as u32;
                        if let Some(qh) = qh {
                            v |= (((qh[l] >> (2 * chunk + nib)) & 1) as u32) << 4;
                        }
                        out.push(dl * v as f32 - ml);
                    }
                }
            }
        }
        GgmlType::Q6K => {
            let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
            let d = f16_at(b, 208);
            for half in 0..2 {
                let (ql, qh, sc) = (
                    &ql[64 * half..64 * half + 64],
                    &qh[32 * half..32 * half + 32],
                    &sc[8 * half..8 * half + 8],
                );
                // Four rows of 32: low/high nibble of ql[0..32] and ql[32..64], with 2 bits
                // of qh each.
                for row in 0..4 {
                    for l in 0..32 {
                        let low = if row < 2 {
                            ql[l + 32 * row] & 0xF
                        } else {
                            ql[l + 32 * (row - 2)] >> 4
                        };
                        let high = (qh[l] >> (2 * row)) & 3;
                        let q = ((low | (high << 4)) as i32) - 32;
                        let scale = d * (sc[2 * row + l / 16] as i8) as f32;
                        out.push(scale * q as f32);
                    }
                }
            }
        }
    }
}

/// The sixteen 6-bit scales of a Q3_K block from its 12 packed bytes: the low 4 bits of
/// scale i are nibble i of bytes 0..8, the high 2 bits come from bytes 8..12.
fn q3k_scales(p: &[u8]) -> [u8; 16] {
    let mut s = [0u8; 16];
    for (i, v) in s.iter_mut().enumerate() {
        let low = if i < 8 { p[i] & 0xF } else { p[i - 8] >> 4 };
        let high = (p[8 + i % 4] >> (2 * (i / 4))) & 3;
        *v = low | (high << 4);
    }
    s
}

/// (scale, min) number `j` (0..8) of a Q4_K/Q5_K block's 12 packed bytes (6 bits each).
fn k4_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUANTIZED: [GgmlType; 10] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// Each listed offset really is a scale: an infinity there makes the block dequantize
    /// to non-finite values, and the check finds that block.
    #[test]
    fn non_finite_scales_are_found_where_dequantization_would_spread_them() {
        for ty in QUANTIZED {
            let (_, bytes) = ty.block();
            // Three blocks of 0x11 bytes: small finite scales and non-zero quants.
            let mut data = vec![0x11u8; 3 * bytes];
            assert_eq!(first_non_finite_scale(ty, &data), None, "{}", ty.name());
            assert!(dequantize(ty, &data).unwrap().iter().all(|v| v.is_finite()));
            for &o in scale_offsets(ty) {
                let mut bad = data.clone();
                bad[bytes + o..bytes + o + 2].copy_from_slice(&f16::INFINITY.to_le_bytes());
                assert_eq!(
                    first_non_finite_scale(ty, &bad),
                    Some(1),
                    "{} +{o}",
                    ty.name()
                );
                let values = dequantize(ty, &bad).unwrap();
                assert!(
                    values.iter().any(|v| !v.is_finite()),
                    "{}: an infinity at byte {o} should reach the values",
                    ty.name()
                );
            }
            data[2 * bytes] = 0;
            assert_eq!(first_non_finite_scale(ty, &data), None);
        }
    }
}
