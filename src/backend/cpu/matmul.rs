//! Batched matrix multiply on strided operands (transposed views need no copy).

use super::real::Real;
use super::{map_float2, CpuStorage};
use crate::{Layout, Result};
use rayon::prelude::*;

/// Rows per parallel task when a single matrix is split across threads.
const ROWS_PER_TASK: usize = 32;

struct Matrices<'a, T> {
    a: &'a [T],
    la: &'a Layout,
    b: &'a [T],
    lb: &'a Layout,
}

fn matmul_typed<T: Real>(m: Matrices<'_, T>) -> Vec<T> {
    let (la, lb) = (m.la, m.lb);
    let r = la.rank();
    let (rows, k, cols) = (la.shape()[r - 2], la.shape()[r - 1], lb.shape()[r - 1]);
    let batch_shape = &la.shape()[..r - 2];
    let batches: usize = batch_shape.iter().product();
    let mut out = vec![T::ZERO; batches * rows * cols];
    if out.is_empty() {
        return out;
    }
    let (sa, sb) = (la.strides(), lb.strides());
    let (rsa, csa) = (sa[r - 2] as isize, sa[r - 1] as isize);
    let (rsb, csb) = (sb[r - 2] as isize, sb[r - 1] as isize);
    // Storage offset of the a and b matrices of batch `bi`.
    let batch_offsets = |mut bi: usize| {
        let (mut oa, mut ob) = (la.offset(), lb.offset());
        for d in (0..r - 2).rev() {
            let i = bi % batch_shape[d];
            bi /= batch_shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        (oa, ob)
    };
    let run = |oa: usize, ob: usize, row0: usize, nrows: usize, c: &mut [T]| {
        if k == 0 {
            return;
        }
        // SAFETY: offsets come from layouts validated against these storages, and `c` is
        // an exclusive contiguous block of `nrows * cols` elements.
        unsafe {
            T::gemm(
                nrows,
                k,
                cols,
                m.a.as_ptr().add(oa + row0 * sa[r - 2]),
                rsa,
                csa,
                m.b.as_ptr().add(ob),
                rsb,
                csb,
                c.as_mut_ptr(),
                cols as isize,
                1,
            )
        }
    };
    let threads = rayon::current_num_threads();
    if rows <= GEMV_MAX_ROWS && csa == 1 && rsb == 1 && batches < threads {
        // A few rows against a matrix whose columns are contiguous (a linear layer's `W^T`
        // while decoding): dot products split over the columns on every thread, with no
        // packing of the matrix.
        for (bi, c) in out.chunks_mut(rows * cols).enumerate() {
            let (oa, ob) = batch_offsets(bi);
            gemv_columns(
                &m.a[oa..],
                rsa as usize,
                &m.b[ob..],
                csb as usize,
                rows,
                k,
                c,
            );
        }
        return out;
    }
    if batches >= threads || rows <= ROWS_PER_TASK {
        out.par_chunks_mut(rows * cols)
            .enumerate()
            .for_each(|(bi, c)| {
                let (oa, ob) = batch_offsets(bi);
                run(oa, ob, 0, rows, c);
            });
    } else {
        let per = rows.div_ceil(threads).max(ROWS_PER_TASK);
        out.par_chunks_mut(rows * cols)
            .enumerate()
            .for_each(|(bi, c)| {
                let (oa, ob) = batch_offsets(bi);
                c.par_chunks_mut(per * cols)
                    .enumerate()
                    .for_each(|(ti, cc)| {
                        run(oa, ob, ti * per, cc.len() / cols, cc);
                    });
            });
    }
    out
}

/// Rows of `a` up to which a product runs as dot products ([`gemv_columns`]).
const GEMV_MAX_ROWS: usize = 4;
/// Output columns per parallel task of [`gemv_columns`].
const GEMV_COLS_PER_TASK: usize = 64;

/// `c [rows, cols] = a [rows, k] @ b [k, cols]` where row `i` of `a` starts at `i * rsa` and
/// column `j` of `b` at `j * csb`, both contiguous over `k`.
fn gemv_columns<T: Real>(
    a: &[T],
    rsa: usize,
    b: &[T],
    csb: usize,
    rows: usize,
    k: usize,
    c: &mut [T],
) {
    let cols = c.len() / rows.max(1);
    let mut by_col = vec![T::ZERO; rows * cols];
    by_col
        .par_chunks_mut(GEMV_COLS_PER_TASK * rows)
        .enumerate()
        .for_each(|(task, out)| {
            for (jj, o) in out.chunks_mut(rows).enumerate() {
                let j = task * GEMV_COLS_PER_TASK + jj;
                let col = &b[j * csb..j * csb + k];
                for (i, oi) in o.iter_mut().enumerate() {
                    *oi = dot(&a[i * rsa..i * rsa + k], col);
                }
            }
        });
    for (j, o) in by_col.chunks(rows).enumerate() {
        for (i, &v) in o.iter().enumerate() {
            c[i * cols + j] = v;
        }
    }
}

/// A dot product in 16 running sums (vectorizable).
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut total = T::ZERO;
    for (x, y) in ra.iter().zip(rb) {
        total += *x * *y;
    }
    for v in acc {
        total += v;
    }
    total
}

/// `a @ b` for layouts `[batch.., m, k]` and `[batch.., k, n]` with identical batch dims
/// (broadcasting happens before); the result is contiguous `[batch.., m, n]`.
pub fn matmul(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
    Ok(map_float2!("matmul", a, b, |x, y| matmul_typed(Matrices {
        a: x,
        la,
        b: y,
        lb
    })))
}
