//! Attention without the score matrix, on the CPU: the FlashAttention algorithm row by row.
//! Each query row keeps a running max and sum over its keys (the online softmax), so only
//! O(keys) scratch exists at a time; the forward saves the row's log-sum-exp, from which the
//! backward recomputes every probability exactly. Work is spread over rows with rayon;
//! values are f64 throughout (this is the reference the GPU kernels are checked against).

use crate::backend::interface::AttnShape;
use rayon::prelude::*;

/// The offset of row `t` of query head `(b, h)`.
fn q_row(s: &AttnShape, b: usize, h: usize, t: usize) -> usize {
    ((b * s.heads + h) * s.q_len + t) * s.head_dim
}

/// The offset of row `t` of the key/value head serving query head `(b, h)`.
fn kv_row(s: &AttnShape, b: usize, h: usize, t: usize) -> usize {
    ((b * s.kv_heads + h / s.group()) * s.k_len + t) * s.head_dim
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `softmax(q k^T * scale) v` under the mask; returns the output (like `q`) and each
/// row's log-sum-exp `[batch, heads, q_len]` (-inf for a row that sees no key, whose
/// output is 0).
pub fn flash_forward(q: &[f64], k: &[f64], v: &[f64], s: &AttnShape) -> (Vec<f64>, Vec<f64>) {
    let d = s.head_dim;
    let mut out = vec![0.0; q.len()];
    let mut lse = vec![f64::NEG_INFINITY; s.batch * s.heads * s.q_len];
    out.par_chunks_mut(d)
        .zip(lse.par_iter_mut())
        .enumerate()
        .for_each(|(row, (o, l))| {
            let (bh, i) = (row / s.q_len, row % s.q_len);
            let (b, h) = (bh / s.heads, bh % s.heads);
            let qr = &q[q_row(s, b, h, i)..][..d];
            let (lo, hi) = s.keys(i);
            // Online softmax: running max m and sum, the output rescaled when m grows.
            let (mut m, mut sum) = (f64::NEG_INFINITY, 0.0);
            for j in lo..hi {
                let at = kv_row(s, b, h, j);
                let score = s.scale * dot(qr, &k[at..at + d]);
                let m_new = m.max(score);
                let (corr, p) = ((m - m_new).exp(), (score - m_new).exp());
                sum = sum * corr + p;
                for (oe, ve) in o.iter_mut().zip(&v[at..at + d]) {
                    *oe = *oe * corr + p * ve;
                }
                m = m_new;
            }
            if hi > lo {
                o.iter_mut().for_each(|e| *e /= sum);
                *l = m + sum.ln();
            }
        });
    (out, lse)
}

/// Gradients `(dq, dk, dv)` of [`flash_forward`] given the output, its log-sum-exp and the
/// output's gradient: probabilities recomputed as `exp(score - lse)`, `dS = P (dP - D)` with
/// `D = rowsum(dO * O)`. dq is computed per query row, dk and dv per key row (summing the
/// query heads of a group), so no two tasks write one value.
pub fn flash_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    out: &[f64],
    lse: &[f64],
    dout: &[f64],
    s: &AttnShape,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = s.head_dim;
    let delta: Vec<f64> = out
        .par_chunks(d)
        .zip(dout.par_chunks(d))
        .map(|(o, g)| dot(o, g))
        .collect();
    let prob = |b: usize, h: usize, i: usize, j: usize| -> f64 {
        let row = (b * s.heads + h) * s.q_len + i;
        let score = s.scale * dot(&q[q_row(s, b, h, i)..][..d], &k[kv_row(s, b, h, j)..][..d]);
        (score - lse[row]).exp()
    };
    // dS_ij for query row (b, h, i) and key j.
    let ds = |b: usize, h: usize, i: usize, j: usize, p: f64| -> f64 {
        let row = (b * s.heads + h) * s.q_len + i;
        let dp = dot(
            &dout[q_row(s, b, h, i)..][..d],
            &v[kv_row(s, b, h, j)..][..d],
        );
        p * (dp - delta[row])
    };
    let mut dq = vec![0.0; q.len()];
    dq.par_chunks_mut(d).enumerate().for_each(|(row, dqr)| {
        let (bh, i) = (row / s.q_len, row % s.q_len);
        let (b, h) = (bh / s.heads, bh % s.heads);
        let (lo, hi) = s.keys(i);
        for j in lo..hi {
            let g = s.scale * ds(b, h, i, j, prob(b, h, i, j));
            let at = kv_row(s, b, h, j);
            for (x, ke) in dqr.iter_mut().zip(&k[at..at + d]) {
                *x += g * ke;
            }
        }
    });
    let mut dk = vec![0.0; k.len()];
    let mut dv = vec![0.0; v.len()];
    dk.par_chunks_mut(d)
        .zip(dv.par_chunks_mut(d))
        .enumerate()
        .for_each(|(row, (dkr, dvr))| {
            let (bg, j) = (row / s.k_len, row % s.k_len);
            let (b, g) = (bg / s.kv_heads, bg % s.kv_heads);
            for h in g * s.group()..(g + 1) * s.group() {
                for i in 0..s.q_len {
                    let (lo, hi) = s.keys(i);
                    if j < lo || j >= hi {
                        continue;
                    }
                    let p = prob(b, h, i, j);
                    let at = q_row(s, b, h, i);
                    for (x, ge) in dvr.iter_mut().zip(&dout[at..at + d]) {
                        *x += p * ge;
                    }
                    let g_ = s.scale * ds(b, h, i, j, p);
                    for (x, qe) in dkr.iter_mut().zip(&q[at..at + d]) {
                        *x += g_ * qe;
                    }
                }
            }
        });
    (dq, dk, dv)
}
