//! Quantized ggml matrices on the CPU, read in place: each row of the weight is
//! dequantized once into a scratch row and multiplied with every activation row.

use crate::ggml_types::{dequantize_into, GgmlType};
use rayon::prelude::*;

/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// `x [m, k] @ W^T` for `W` = `n` rows of `k` values of type `ty` in `w`: `[m, n]` in f32.
/// The caller has checked that `w` holds exactly `n` rows of whole blocks.
pub fn qmatmul(w: &[u8], ty: GgmlType, n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let row_bytes = w.len() / n.max(1);
    // Results land transposed ([n, m]) so each task owns a contiguous piece.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(ROWS_PER_TASK * m.max(1))
        .enumerate()
        .for_each(|(task, out)| {
            let mut row = Vec::with_capacity(k);
            let first = task * ROWS_PER_TASK;
            for (j, y) in out.chunks_mut(m.max(1)).enumerate() {
                let r = first + j;
                dequantize_into(ty, &w[r * row_bytes..(r + 1) * row_bytes], &mut row);
                for (i, yi) in y.iter_mut().enumerate() {
                    *yi = dot(&row, &x[i * k..(i + 1) * k]);
                }
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

/// A dot product with eight running sums (lets the compiler vectorize it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
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
