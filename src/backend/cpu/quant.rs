//! Quantized ggml matrices on the CPU, read in place: each row of the weight is
//! dequantized once into a scratch row and multiplied with every activation row.

use crate::ggml_types::{dequantize_into, GgmlType};
use half::f16;
use rayon::prelude::*;

/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// `x [m, k] @ W^T` for `W` = `n` rows of `k` values of type `ty` in `w`: `[m, n]` in f32.
/// The caller has checked that `w` holds exactly `n` rows of whole blocks.
pub fn qmatmul(w: &[u8], ty: GgmlType, n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let row_bytes = w.len() / n.max(1);
    // Results land transposed ([n, m]) so each task owns a contiguous piece.
    let mut out_t = vec![0f32; n * m];
    let wide = simd::available();
    out_t
        .par_chunks_mut(ROWS_PER_TASK * m.max(1))
        .enumerate()
        .for_each(|(task, out)| {
            let rows = &w[task * ROWS_PER_TASK * row_bytes..];
            if wide {
                // SAFETY: `simd::available` found the CPU features this build enables.
                unsafe { simd::rows_task(rows, row_bytes, ty, k, x, m, out) }
            } else {
                rows_task(rows, row_bytes, ty, k, x, m, out)
            }
        });
    if m == 1 {
        return out_t;
    }
    let mut out = vec![0f32; m * n];
    for (r, ys) in out_t.chunks(m).enumerate() {
        for (i, &y) in ys.iter().enumerate() {
            out[i * n + r] = y;
        }
    }
    out
}

/// One task's rows: each weight row of `rows` (`row_bytes` apart) dequantized once, then
/// dotted with every activation row; `out` is `[rows, m]`.
#[inline(always)]
fn rows_task(
    rows: &[u8],
    row_bytes: usize,
    ty: GgmlType,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let mut row = Vec::with_capacity(k);
    for (j, y) in out.chunks_mut(m.max(1)).enumerate() {
        let w = &rows[j * row_bytes..(j + 1) * row_bytes];
        // A few activation rows (decoding): each block is decoded in registers and dotted
        // in place. More rows (prompts): the row is dequantized once for all of them.
        let fused = m <= FUSED_MAX_ROWS && matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0);
        if fused {
            for (i, yi) in y.iter_mut().enumerate() {
                let xs = &x[i * k..(i + 1) * k];
                *yi = match ty {
                    GgmlType::Q4_0 => dot_q4_0(w, xs),
                    _ => dot_q8_0(w, xs),
                };
            }
            continue;
        }
        dequantize_into(ty, w, &mut row);
        for (i, yi) in y.iter_mut().enumerate() {
            *yi = dot(&row, &x[i * k..(i + 1) * k]);
        }
    }
}

/// Activation rows up to which [`rows_task`] decodes Q4_0/Q8_0 blocks inside the dot.
const FUSED_MAX_ROWS: usize = 2;

/// A block's f16 scale (the first two bytes), converted without a library call.
#[inline(always)]
fn block_scale(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32_const()
}

/// The dot product of one Q4_0 row (18-byte blocks: f16 scale, 16 bytes of nibbles, low
/// nibbles the first 16 values) with `x`, in sixteen running sums.
#[inline(always)]
fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (b, xs) in row.chunks_exact(18).zip(x.chunks_exact(32)) {
        let d = block_scale(b);
        let qs = &b[2..18];
        for l in 0..16 {
            let lo = ((qs[l] & 0xF) as i32 - 8) as f32;
            let hi = ((qs[l] >> 4) as i32 - 8) as f32;
            acc[l] += d * (lo * xs[l] + hi * xs[l + 16]);
        }
    }
    acc.iter().sum()
}

/// The dot product of one Q8_0 row (34-byte blocks: f16 scale, 32 signed bytes) with `x`.
#[inline(always)]
fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (b, xs) in row.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = block_scale(b);
        let qs = &b[2..34];
        for l in 0..16 {
            let lo = qs[l] as i8 as f32;
            let hi = qs[l + 16] as i8 as f32;
            acc[l] += d * (lo * xs[l] + hi * xs[l + 16]);
        }
    }
    acc.iter().sum()
}

/// A dot product with 32 running sums in four groups of eight (lets the compiler keep four
/// vector accumulators in flight).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0f32; 8]; 4];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for (g, acc) in acc.iter_mut().enumerate() {
            for l in 0..8 {
                acc[l] += x[8 * g + l] * y[8 * g + l];
            }
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    let mut lanes = [0f32; 8];
    for acc in &acc {
        for l in 0..8 {
            lanes[l] += acc[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The same kernels compiled for AVX2 with F16C, chosen at run time where the CPU has them.
mod simd {
    use super::GgmlType;

    /// Whether this CPU runs [`rows_task`] (AVX2, F16C, FMA).
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("f16c")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// [`super::rows_task`] with 256-bit vectors.
    ///
    /// # Safety
    /// Only where [`available`] is true.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,f16c,fma"))]
    pub unsafe fn rows_task(
        rows: &[u8],
        row_bytes: usize,
        ty: GgmlType,
        k: usize,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) {
        super::rows_task(rows, row_bytes, ty, k, x, m, out)
    }
}

/// Rows `ids` of `W` (`n` rows of `k` values of type `ty`), dequantized: `[ids.len(), k]`.
/// Ids were checked against `n` by the caller.
pub fn qrows(w: &[u8], ty: GgmlType, n: usize, k: usize, ids: &[usize]) -> Vec<f32> {
    let row_bytes = w.len() / n.max(1);
    let mut out = vec![0f32; ids.len() * k];
    out.par_chunks_mut(k.max(1))
        .zip(ids.par_iter())
        .for_each(|(o, &r)| {
            let mut row = Vec::with_capacity(k);
            dequantize_into(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut row);
            o.copy_from_slice(&row);
        });
    out
}
