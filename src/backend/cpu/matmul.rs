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
