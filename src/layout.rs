//! Shape, strides and offset: how a tensor's logical elements map onto its storage.
//!
//! Views (transpose, permute, narrow, broadcast, reshape where possible) only build a new
//! [`Layout`] over the same storage. Kernels read through [`Layout::for_each_offset`], which
//! honours any strides and has a contiguous fast path.

use crate::{Error, Result};

/// Logical shape plus the strides (in elements) and offset that locate each element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        acc = acc.saturating_mul(shape[d]);
    }
    strides
}

/// The NumPy broadcast of two shapes, or an error naming the op and both shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::ShapeMismatch {
                op,
                lhs: a.to_vec(),
                rhs: b.to_vec(),
            });
        };
    }
    Ok(out)
}

/// The shape of a reduction's output with the reduced dims kept as size 1.
pub fn keepdim_shape(shape: &[usize], dims: &[usize]) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if dims.contains(&d) { 1 } else { n })
        .collect()
}

impl Layout {
    /// A contiguous layout starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A layout from explicit parts (the caller guarantees they fit the storage).
    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides in elements, one per dimension.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element in the storage.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are laid out row-major without gaps (size-1 dims ignored).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for d in (0..self.shape.len()).rev() {
            if self.shape[d] != 1 && self.strides[d] != expected {
                return false;
            }
            expected *= self.shape[d];
        }
        true
    }

    /// True when the elements fill `offset .. offset + numel` exactly, in some order of the
    /// dimensions (a permutation of a contiguous layout, such as channels-last): an
    /// elementwise op can then run over the flat span and keep these strides.
    pub fn is_dense(&self) -> bool {
        let mut dims: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&n, _)| n != 1)
            .map(|(&n, &s)| (s, n))
            .collect();
        dims.sort_unstable();
        let mut expected = 1usize;
        for (stride, n) in dims {
            if stride != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// The flat `[numel]` layout over the span of a dense layout ([`Layout::is_dense`]).
    pub fn dense_span(&self) -> Layout {
        Layout::new(vec![self.numel()], vec![1], self.offset)
    }

    /// These strides from offset 0: where an elementwise op over [`Layout::dense_span`]
    /// puts its result.
    pub fn dense_result(&self) -> Layout {
        Layout::new(self.shape.clone(), self.strides.clone(), 0)
    }

    /// One past the largest storage index this layout can touch (0 when empty).
    pub fn storage_span(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&n, &s)| (n - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Checks a dimension index against the rank.
    pub fn check_dim(&self, op: &'static str, dim: usize) -> Result<()> {
        if dim < self.rank() {
            Ok(())
        } else {
            Err(Error::DimOutOfRange {
                op,
                dim,
                shape: self.shape.clone(),
            })
        }
    }

    /// Swaps two dimensions (a view).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Layout> {
        self.check_dim("transpose", d0)?;
        self.check_dim("transpose", d1)?;
        let mut l = self.clone();
        l.shape.swap(d0, d1);
        l.strides.swap(d0, d1);
        Ok(l)
    }

    /// Reorders dimensions: output dim i is input dim `perm[i]` (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let mut seen = vec![false; self.rank()];
        if perm.len() != self.rank() {
            return Err(Error::invalid(
                "permute",
                format!("permutation {perm:?} does not fit shape {:?}", self.shape),
            ));
        }
        for &p in perm {
            if p >= self.rank() || seen[p] {
                return Err(Error::invalid(
                    "permute",
                    format!(
                        "{perm:?} is not a permutation of the dims of {:?}",
                        self.shape
                    ),
                ));
            }
            seen[p] = true;
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// Elements `start..start+len` along `dim` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        self.check_dim("narrow", dim)?;
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.shape[dim])
        {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} is outside dim {dim} of shape {:?}",
                    start.saturating_add(len),
                    self.shape
                ),
            ));
        }
        let mut l = self.clone();
        l.shape[dim] = len;
        if len > 0 {
            l.offset += start * self.strides[dim];
        }
        Ok(l)
    }

    /// Expands to `shape` by NumPy rules: new leading dims and size-1 dims get stride 0.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Layout> {
        let err = || Error::ShapeMismatch {
            op: "broadcast_as",
            lhs: self.shape.clone(),
            rhs: shape.to_vec(),
        };
        if shape.len() < self.rank() {
            return Err(err());
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for (i, &target) in shape.iter().enumerate().skip(lead) {
            let src = self.shape[i - lead];
            if src == target {
                strides[i] = self.strides[i - lead];
            } else if src == 1 {
                strides[i] = 0;
            } else {
                return Err(err());
            }
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// The same elements under a new shape without copying, when the strides allow it.
    ///
    /// Returns `None` when a copy is needed (for instance a transposed view flattened):
    /// assigning contiguous strides to such a view would silently scramble the data.
    pub fn reshape_view(&self, new_shape: &[usize]) -> Option<Layout> {
        if new_shape.iter().product::<usize>() != self.numel() {
            return None;
        }
        if self.is_contiguous() || self.numel() == 0 {
            return Some(Layout {
                shape: new_shape.to_vec(),
                strides: contiguous_strides(new_shape),
                offset: self.offset,
            });
        }
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&n, _)| n != 1)
            .map(|(&n, &s)| (n, s))
            .collect();
        let mut new_strides = vec![1usize; new_shape.len()];
        let (mut oi, mut oj, mut ni, mut nj) = (0, 1, 0, 1);
        while ni < new_shape.len() && oi < old.len() {
            let mut np = new_shape[ni];
            let mut op = old[oi].0;
            while np != op {
                if np < op {
                    np *= *new_shape.get(nj)?;
                    nj += 1;
                } else {
                    op *= old.get(oj)?.0;
                    oj += 1;
                }
            }
            for ok in oi..oj - 1 {
                if old[ok].1 != old[ok + 1].1 * old[ok + 1].0 {
                    return None;
                }
            }
            new_strides[nj - 1] = old[oj - 1].1;
            for nk in (ni + 1..nj).rev() {
                new_strides[nk - 1] = new_strides[nk] * new_shape[nk];
            }
            ni = nj;
            nj += 1;
            oi = oj;
            oj += 1;
        }
        Some(Layout {
            shape: new_shape.to_vec(),
            strides: new_strides,
            offset: self.offset,
        })
    }

    /// Calls `f` with the storage offset of every logical element, in row-major order.
    pub fn for_each_offset(&self, f: impl FnMut(usize)) {
        self.for_each_offset_in(0, self.numel(), f)
    }

    /// Calls `f` with the storage offsets of logical elements `start..start+len`, in order.
    pub fn for_each_offset_in(&self, start: usize, len: usize, mut f: impl FnMut(usize)) {
        self.for_each_run_in(start, len, |off, n, stride| {
            for j in 0..n {
                f(off + j * stride);
            }
        });
    }

    /// Visits logical elements `start..start+len` as runs `f(first_offset, count, stride)`;
    /// a contiguous layout is one run.
    pub fn for_each_run_in(
        &self,
        start: usize,
        len: usize,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        if self.is_contiguous() {
            if len > 0 {
                f(self.offset + start, len, 1);
            }
            return;
        }
        self.for_each_inner_run_in(start, len, f)
    }

    /// Like [`Layout::for_each_run_in`], but every run ends at an innermost-dimension
    /// boundary, so two layouts of the same shape produce runs with the same boundaries
    /// (binary kernels walk both in lockstep).
    pub fn for_each_inner_run_in(
        &self,
        start: usize,
        len: usize,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        if len == 0 {
            return;
        }
        debug_assert!(start + len <= self.numel());
        let nd = self.rank();
        if nd == 0 {
            f(self.offset, 1, 1);
            return;
        }
        let mut idx_store = [0usize; 16];
        let mut idx_heap = Vec::new();
        let idx: &mut [usize] = if nd <= 16 {
            &mut idx_store[..nd]
        } else {
            idx_heap.resize(nd, 0);
            &mut idx_heap
        };
        let mut rem = start;
        let mut off = self.offset;
        for d in (0..nd).rev() {
            idx[d] = rem % self.shape[d];
            rem /= self.shape[d];
            off += idx[d] * self.strides[d];
        }
        let inner = self.shape[nd - 1];
        let inner_stride = self.strides[nd - 1];
        let mut remaining = len;
        loop {
            let run = (inner - idx[nd - 1]).min(remaining);
            f(off, run, inner_stride);
            remaining -= run;
            if remaining == 0 {
                return;
            }
            // Rewind the innermost dimension and carry into the outer ones.
            off -= idx[nd - 1] * inner_stride;
            idx[nd - 1] = 0;
            let mut d = nd - 1;
            loop {
                d -= 1;
                idx[d] += 1;
                off += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                off -= self.shape[d] * self.strides[d];
                idx[d] = 0;
            }
        }
    }

    /// A view for reducing over `dims`: kept dims first, reduced dims last, so that each
    /// output owns a run of consecutive logical elements. Returns (view, outputs, elements
    /// per output).
    pub fn reduced_view(&self, dims: &[usize]) -> Result<(Layout, usize, usize)> {
        let kept: Vec<usize> = (0..self.rank()).filter(|d| !dims.contains(d)).collect();
        let mut perm = kept.clone();
        perm.extend_from_slice(dims);
        let view = self.permute(&perm)?;
        let r = dims.iter().map(|&d| self.shape[d]).product();
        let outs = kept.iter().map(|&d| self.shape[d]).product();
        Ok((view, outs, r))
    }

    /// All storage offsets in logical order (convenient for small tensors and tests).
    pub fn offsets(&self) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.numel());
        self.for_each_offset(|o| v.push(o));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_offsets_follow_strides() {
        let l = Layout::contiguous(&[2, 3]).transpose(0, 1).unwrap();
        assert_eq!(l.offsets(), vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
    }

    #[test]
    fn reshape_of_transpose_needs_a_copy() {
        let l = Layout::contiguous(&[2, 3]).transpose(0, 1).unwrap();
        assert!(l.reshape_view(&[6]).is_none());
        // Splitting a dim of a transposed view is still a view.
        let l = Layout::contiguous(&[4, 6]).transpose(0, 1).unwrap();
        let r = l.reshape_view(&[2, 3, 4]).unwrap();
        assert_eq!(r.offsets(), l.offsets());
    }

    #[test]
    fn narrow_and_broadcast() {
        let l = Layout::contiguous(&[3, 4]).narrow(1, 1, 2).unwrap();
        assert_eq!(l.offsets(), vec![1, 2, 5, 6, 9, 10]);
        let b = Layout::contiguous(&[1, 3]).broadcast_as(&[2, 3]).unwrap();
        assert_eq!(b.offsets(), vec![0, 1, 2, 0, 1, 2]);
        assert!(Layout::contiguous(&[2, 3]).broadcast_as(&[3, 3]).is_err());
        assert!(Layout::contiguous(&[2]).narrow(0, 1, 5).is_err());
    }

    #[test]
    fn partial_ranges_match_full_iteration() {
        let l = Layout::contiguous(&[3, 4, 5]).permute(&[2, 0, 1]).unwrap();
        let all = l.offsets();
        for start in 0..all.len() {
            let mut part = vec![];
            l.for_each_offset_in(start, all.len() - start, |o| part.push(o));
            assert_eq!(part, all[start..]);
        }
    }

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(broadcast_shapes("t", &[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
    }
}
