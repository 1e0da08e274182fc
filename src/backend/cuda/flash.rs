//! Fused attention on CUDA (kernels in `kernels/flash.cu`): forward with the per-row
//! log-sum-exp, and the backward that recomputes the probabilities from it; both on tensor
//! cores for f16 and bf16 from sm_80, on CUDA cores otherwise.

use super::storage::suffix;
use super::{launch, CudaStorage};
use crate::backend::cpu::AttnShape;
use crate::storage::Storage;
use crate::{DType, Error, Result, Tensor};
use cudarc::driver::LaunchConfig;

/// Head dims the fused attention kernels are compiled for.
pub const FLASH_HEAD_DIMS: [usize; 6] = [16, 32, 64, 80, 96, 128];

/// Query (or key) rows per block (`FLASH_ROWS` in the kernel).
const ROWS: usize = 4;

fn check(s: &AttnShape) -> Result<()> {
    if !FLASH_HEAD_DIMS.contains(&s.head_dim) {
        return Err(Error::invalid(
            "flash_attention",
            format!(
                "head dim {} is not supported on CUDA (supported: {FLASH_HEAD_DIMS:?})",
                s.head_dim
            ),
        ));
    }
    let big = [s.q_len, s.k_len, s.batch * s.heads, s.window];
    if big.iter().any(|&n| n > i32::MAX as usize) || s.batch * s.heads > 65535 {
        return Err(Error::invalid(
            "flash_attention",
            format!("{s:?} is too large for one launch"),
        ));
    }
    Ok(())
}

/// The contiguous GPU buffer of `t` (copied to contiguous first when it is a view).
fn buffer(t: &Tensor) -> Result<Tensor> {
    t.contiguous()
}

fn cuda_of(s: &Storage) -> Result<&CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        Storage::Cpu(_) => Err(Error::invalid(
            "flash_attention",
            "every input must be on the same GPU",
        )),
    }
}

fn config(rows: usize, blocks_y: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS) as u32, blocks_y as u32, 1),
        block_dim: (32 * ROWS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Output `[B, H, Tq, D]` (q's dtype) and log-sum-exp `[B, H, Tq]` (f32).
pub fn flash_attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    s: &AttnShape,
) -> Result<(Tensor, Tensor)> {
    check(s)?;
    let (q, k, v) = (buffer(q)?, buffer(k)?, buffer(v)?);
    let dtype = q.dtype();
    let (qs, ks, vs) = (q.read_storage(), k.read_storage(), v.read_storage());
    let (qc, kc, vc) = (cuda_of(&qs)?, cuda_of(&ks)?, cuda_of(&vs)?);
    let rows = s.batch * s.heads;
    let out = CudaStorage::alloc(&qc.dev, dtype, rows * s.q_len * s.head_dim)?;
    let lse = CudaStorage::alloc(&qc.dev, DType::F32, rows * s.q_len)?;
    let (qp, kp, vp) = (
        qc.ptr(q.layout().offset()),
        kc.ptr(k.layout().offset()),
        vc.ptr(v.layout().offset()),
    );
    let (op, lp) = (out.ptr(0), lse.ptr(0));
    let ints = ints(s);
    let scale = s.scale as f32;
    let aligned = [qp, kp, vp].iter().all(|p| p % 16 == 0);
    let (name, cfg) = if tensor_cores(&qc.dev.arch, dtype, s.head_dim) && aligned {
        let name = format!("flash_forward_tc_d{}_{}", s.head_dim, suffix(dtype));
        let cfg = LaunchConfig {
            grid_dim: (s.q_len.div_ceil(TC_ROWS) as u32, rows as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        (name, cfg)
    } else {
        let name = format!("flash_forward_d{}_{}", s.head_dim, suffix(dtype));
        (name, config(s.q_len, rows))
    };
    launch!(@cfg qc.dev, "flash", name, cfg,
        &qp, &kp, &vp, &op, &lp, &ints[0], &ints[1], &ints[2], &ints[3], &ints[4], &ints[5],
        &scale);
    Ok((
        Tensor::from_storage(Storage::Cuda(out), q.shape(), None),
        Tensor::from_storage(Storage::Cuda(lse), &[s.batch, s.heads, s.q_len], None),
    ))
}

/// Query rows per block of the tensor-core forward (`TC_ROWS` in the kernel).
const TC_ROWS: usize = 64;

/// Head dims of the tensor-core forward.
pub const FLASH_TC_HEAD_DIMS: [usize; 4] = [64, 80, 96, 128];

/// Whether the forward runs on tensor cores: f16 or bf16, a head dim it is compiled for,
/// and a GPU of compute capability 8.0 or later (`mma.sync` m16n8k16).
pub fn tensor_cores(arch: &str, dtype: DType, head_dim: usize) -> bool {
    let cc: u32 = arch.trim_start_matches("sm_").parse().unwrap_or(0);
    cc >= 80 && matches!(dtype, DType::F16 | DType::BF16) && FLASH_TC_HEAD_DIMS.contains(&head_dim)
}

/// heads, kv_heads, q_len, k_len, causal, window as the kernels take them.
fn ints(s: &AttnShape) -> [i32; 6] {
    [
        s.heads as i32,
        s.kv_heads as i32,
        s.q_len as i32,
        s.k_len as i32,
        s.causal as i32,
        s.window as i32,
    ]
}

/// (dq, dk, dv) from the inputs, the forward's output and log-sum-exp, and the output's
/// gradient `g`.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    g: &Tensor,
    s: &AttnShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    check(s)?;
    let dtype = q.dtype();
    let g = g.to_dtype(dtype)?;
    let [q, k, v, out, lse, g] = [q, k, v, out, lse, &g].map(buffer);
    let (q, k, v, out, lse, g) = (q?, k?, v?, out?, lse?, g?);
    let guards = [&q, &k, &v, &out, &lse, &g].map(|t| t.read_storage());
    let mut ptrs = [0u64; 6];
    let mut dev = None;
    for (i, (guard, t)) in guards.iter().zip([&q, &k, &v, &out, &lse, &g]).enumerate() {
        let c = cuda_of(guard)?;
        ptrs[i] = c.ptr(t.layout().offset());
        dev = Some(c.dev.clone());
    }
    let dev = dev.ok_or_else(|| Error::invalid("flash_attention", "no inputs"))?;
    let rows = s.batch * s.heads;
    let delta = CudaStorage::alloc(&dev, DType::F32, rows * s.q_len)?;
    let dq = CudaStorage::alloc(&dev, dtype, rows * s.q_len * s.head_dim)?;
    let kv_len = s.batch * s.kv_heads * s.k_len * s.head_dim;
    let dk = CudaStorage::alloc(&dev, dtype, kv_len)?;
    let dv = CudaStorage::alloc(&dev, dtype, kv_len)?;
    let (deltap, dqp, dkp, dvp) = (delta.ptr(0), dq.ptr(0), dk.ptr(0), dv.ptr(0));
    let [qp, kp, vp, op, lp, gp] = ptrs;
    let ints = ints(s);
    let scale = s.scale as f32;
    let sfx = suffix(dtype);
    let aligned = ptrs.iter().all(|p| p % 16 == 0);
    let (tc, dq_cfg, dkdv_cfg) = if tensor_cores(&dev.arch, dtype, s.head_dim) && aligned {
        let cfg = |n: usize, y: usize| LaunchConfig {
            grid_dim: (n.div_ceil(TC_ROWS) as u32, y as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        (
            "tc_",
            cfg(s.q_len, rows),
            cfg(s.k_len, s.batch * s.kv_heads),
        )
    } else {
        (
            "",
            config(s.q_len, rows),
            config(s.k_len, s.batch * s.kv_heads),
        )
    };
    let name = format!("flash_backward_dq_{tc}d{}_{sfx}", s.head_dim);
    launch!(@cfg dev, "flash", name, dq_cfg,
        &qp, &kp, &vp, &op, &gp, &lp, &deltap, &dqp, &ints[0], &ints[1], &ints[2], &ints[3],
        &ints[4], &ints[5], &scale);
    let name = format!("flash_backward_dkdv_{tc}d{}_{sfx}", s.head_dim);
    launch!(@cfg dev, "flash", name, dkdv_cfg,
        &qp, &kp, &vp, &gp, &lp, &deltap, &dkp, &dvp, &ints[0], &ints[1], &ints[2], &ints[3],
        &ints[4], &ints[5], &scale);
    drop(guards);
    let kv_shape = k.shape().to_vec();
    Ok((
        Tensor::from_storage(Storage::Cuda(dq), q.shape(), None),
        Tensor::from_storage(Storage::Cuda(dk), &kv_shape, None),
        Tensor::from_storage(Storage::Cuda(dv), &kv_shape, None),
    ))
}
