//! Optimizer kernels on CUDA: the fused AdamW update and sums of squares for clipping.

use super::storage::suffix;
use super::{launch, CudaStorage};
use crate::{DType, Error, Layout, Result};

pub use crate::backend::interface::AdamWStep;

/// One parameter of a multi-tensor AdamW launch on this backend.
pub type AdamWSlot<'a> = crate::backend::interface::AdamWSlot<'a, CudaStorage>;

/// Adds the sum of squares of the elements under `l` into the f64 slot `acc` (device).
pub fn sum_squares_into(s: &CudaStorage, l: &Layout, acc: &CudaStorage) -> Result<()> {
    let (_keep, p) = super::nn::contiguous_ptr(s, l)?;
    let n = l.numel();
    if n > 0 {
        let (ap, n64) = (acc.ptr(0), n as i64);
        launch!(
            s.dev,
            "optim",
            format!("sumsq_{}", suffix(s.dtype)),
            n,
            &p,
            &n64,
            &ap
        );
    }
    Ok(())
}

/// Parameters per multi-tensor AdamW launch (matches `ADAMW_GROUP_TENSORS` in optim.cu).
const GROUP_TENSORS: usize = 24;
/// Blocks per launch (matches `ADAMW_GROUP_BLOCKS`).
const GROUP_BLOCKS: usize = 320;
/// Elements per block (matches `ADAMW_CHUNK`).
const CHUNK: usize = 65536;

/// The kernel-parameter table of one multi-tensor AdamW launch (matches `AdamWGroup`).
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamWGroup {
    p: [u64; GROUP_TENSORS],
    g: [u64; GROUP_TENSORS],
    m: [u64; GROUP_TENSORS],
    v: [u64; GROUP_TENSORS],
    n: [i64; GROUP_TENSORS],
    decay: [f32; GROUP_TENSORS],
    block_tensor: [u8; GROUP_BLOCKS],
    block_chunk: [i32; GROUP_BLOCKS],
}

// SAFETY: plain old data with the same layout as the C struct.
unsafe impl cudarc::driver::DeviceRepr for AdamWGroup {}

impl AdamWGroup {
    fn empty() -> Self {
        AdamWGroup {
            p: [0; GROUP_TENSORS],
            g: [0; GROUP_TENSORS],
            m: [0; GROUP_TENSORS],
            v: [0; GROUP_TENSORS],
            n: [0; GROUP_TENSORS],
            decay: [1.0; GROUP_TENSORS],
            block_tensor: [0; GROUP_BLOCKS],
            block_chunk: [0; GROUP_BLOCKS],
        }
    }
}

/// AdamW over many parameters of one device in a few launches (up to 24 tensors and 320
/// chunks of 64Ki elements each), instead of one launch per tensor.
pub fn adamw_multi(slots: &[AdamWSlot], k: AdamWStep) -> Result<()> {
    let Some(first) = slots.first() else {
        return Ok(());
    };
    let dev = first.param.0.dev.clone();
    let mut grads = Vec::with_capacity(slots.len());
    for s in slots {
        let (p, m, v) = (s.param.0, s.m, s.v);
        if [p.dtype, m.dtype, v.dtype].iter().any(|d| *d != DType::F32) {
            return Err(Error::UnsupportedDType {
                op: "AdamW (f32 master weights)",
                dtype: p.dtype,
            });
        }
        if [p, m, v, s.grad.0]
            .iter()
            .any(|x| x.dev.ordinal != dev.ordinal)
        {
            return Err(Error::invalid("AdamW", "all parameters must share one GPU"));
        }
        if s.n > CHUNK * i32::MAX as usize {
            return Err(Error::invalid(
                "AdamW",
                "parameter too large for one tensor",
            ));
        }
        grads.push(if s.grad.0.dtype == DType::F32 {
            super::nn::contiguous_ptr(s.grad.0, s.grad.1)?
        } else {
            let g = super::cast(s.grad.0, s.grad.1, DType::F32)?;
            let p = g.ptr(0);
            (Some(g), p)
        });
    }
    let mut group = AdamWGroup::empty();
    let (mut tensors, mut blocks) = (0usize, 0usize);
    let flush = |group: &mut AdamWGroup, tensors: &mut usize, blocks: &mut usize| -> Result<()> {
        if *blocks > 0 {
            let cfg = cudarc::driver::LaunchConfig {
                grid_dim: (*blocks as u32, 1, 1),
                block_dim: (512, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(@cfg dev, "optim", "adamw_multi_f32", cfg, &*group, &k.beta1, &k.beta2, &k.eps, &k.step_size, &k.bc2_sqrt);
        }
        *group = AdamWGroup::empty();
        *tensors = 0;
        *blocks = 0;
        Ok(())
    };
    for (s, (_keep, g)) in slots.iter().zip(&grads) {
        if s.n == 0 {
            continue;
        }
        if tensors == GROUP_TENSORS {
            flush(&mut group, &mut tensors, &mut blocks)?;
        }
        group.p[tensors] = s.param.0.ptr(s.param.1);
        group.g[tensors] = *g;
        group.m[tensors] = s.m.ptr(0);
        group.v[tensors] = s.v.ptr(0);
        group.n[tensors] = s.n as i64;
        group.decay[tensors] = s.decay;
        for chunk in 0..s.n.div_ceil(CHUNK) {
            if blocks == GROUP_BLOCKS {
                // Start a new launch that carries this tensor on from this chunk.
                let slot = (
                    group.p[tensors],
                    group.g[tensors],
                    group.m[tensors],
                    group.v[tensors],
                );
                flush(&mut group, &mut tensors, &mut blocks)?;
                (group.p[0], group.g[0], group.m[0], group.v[0]) = slot;
                group.n[0] = s.n as i64;
                group.decay[0] = s.decay;
            }
            group.block_tensor[blocks] = tensors as u8;
            group.block_chunk[blocks] = chunk as i32;
            blocks += 1;
        }
        tensors += 1;
    }
    flush(&mut group, &mut tensors, &mut blocks)
}
