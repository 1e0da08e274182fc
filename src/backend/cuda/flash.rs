//! Fused attention on CUDA (kernels in `kernels/flash.cu` and `kernels/flash_wgmma.cu`):
//! forward with the per-row log-sum-exp, and the backward that recomputes the probabilities
//! from it; both on tensor cores for f16 and bf16 from sm_80 (on Hopper's warpgroup
//! `wgmma` at head dims 64 and 128 on sm_90), on CUDA cores otherwise. Q, K, V,
//! the output and its gradient are read in place when their features are contiguous (the
//! heads of a fused QKV projection need no copy), and the output is written as
//! `[B, T, H, D]`, so joining the heads afterwards needs no copy either.

use super::elementwise::{cast, copy_contiguous};
use super::storage::suffix;
use super::{launch, CudaStorage};
use crate::backend::interface::{AttnShape, View};
use crate::{DType, Error, Layout, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig};
use std::sync::atomic::{AtomicU8, Ordering};

/// Head dims the fused attention kernels are compiled for.
pub const FLASH_HEAD_DIMS: [usize; 6] = [16, 32, 64, 80, 96, 128];

/// Head dims of the tensor-core kernels.
pub const FLASH_TC_HEAD_DIMS: [usize; 4] = [64, 80, 96, 128];

/// Head dims of the warpgroup (wgmma) kernels.
pub const FLASH_WG_HEAD_DIMS: [usize; 2] = [64, 128];

/// Keys per tile of the warpgroup forward kernels at `head_dim` (`WG_KEYS(D)`).
fn wg_keys(head_dim: usize) -> usize {
    if head_dim <= 64 {
        64
    } else {
        128
    }
}

/// Query rows per block of the warpgroup forward and dQ kernels, and key rows per block of
/// the warpgroup dK/dV kernels (`WG_ROWS`: two warpgroups of 64).
const WG_ROWS: usize = 128;

/// Queries per tile of the warpgroup dK/dV kernels (`WG_BWD_QUERIES`).
const WG_BWD_QUERIES: usize = 64;

/// Keys per tile of the warpgroup dQ kernels (`WG_BWD_KEYS`).
const WG_BWD_KEYS: usize = 64;

/// Buffers in the ring of the TMA kernels (`TMA_STAGES`).
const TMA_STAGES: usize = 3;

/// A kernel family that a process may turn off: 0 not yet decided, 1 on, 2 off; it starts
/// on unless its environment variable is set.
struct Switch {
    state: AtomicU8,
    off_by: &'static str,
}

impl Switch {
    const fn new(off_by: &'static str) -> Self {
        Switch {
            state: AtomicU8::new(0),
            off_by,
        }
    }

    fn set(&self, on: bool) {
        self.state.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    }

    fn on(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            0 => {
                let on = std::env::var_os(self.off_by).is_none();
                self.set(on);
                on
            }
            state => state == 1,
        }
    }
}

/// Whether the TMA kernels may run.
static TMA: Switch = Switch::new("SMITH_NO_TMA");

/// Turns the TMA kernels (forward and backward at head dims 64 and 128 on sm_90) on or off
/// for this process; off, the warpgroup kernels stage their K and V tiles with `cp.async`
/// instead. They start on unless `SMITH_NO_TMA` is set.
pub fn set_tma_kernels(on: bool) {
    TMA.set(on);
}

/// Whether the attention kernels run as TMA kernels: the warpgroup ones at head dims 64
/// and 128, unless turned off by [`set_tma_kernels`] (or the driver cannot map the operands).
pub fn tma_attention(arch: &str, dtype: DType, head_dim: usize) -> bool {
    warpgroup_attention(arch, dtype, head_dim) && TMA.on()
}

/// A `CUtensorMap` as the TMA kernels take it (`TmaMap`, by value).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct TensorMap([u64; 16]);

// SAFETY: plain old data with the layout of the kernel's `TmaMap`.
unsafe impl DeviceRepr for TensorMap {}

/// The tensor map of a `[B, heads, rows, D]` operand at `ptr` (16-bit elements, features
/// contiguous) for boxes of 64 features by `box_rows` rows, written 128-byte swizzled; rows
/// past the end read as zeros. None where the driver declines it (the caller falls back).
fn tile_map(
    ptr: u64,
    st: HeadStrides,
    dims: [usize; 4],
    box_rows: u32,
    dtype: DType,
) -> Option<TensorMap> {
    use cudarc::driver::sys::CUtensorMapDataType as Type;
    let data_type = match dtype {
        DType::BF16 => Type::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        DType::F16 => Type::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        _ => return None,
    };
    let bytes = |x: i64| u64::try_from(x * 2).ok();
    let strides = [bytes(st.r)?, bytes(st.h)?, bytes(st.b)?];
    encode_map(ptr, data_type, &dims, &strides, &[64, box_rows, 1, 1], true)
}

/// The tensor map of `len` f32 values at `ptr` (a per-row statistic over `[B, H, T]`) for
/// boxes of `box_len`; values past the end read as zeros. None where the driver declines it
/// or a coordinate would not fit the kernel's int.
fn row_map(ptr: u64, len: usize, box_len: u32) -> Option<TensorMap> {
    use cudarc::driver::sys::CUtensorMapDataType as Type;
    if len > i32::MAX as usize {
        return None;
    }
    let data_type = Type::CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    encode_map(ptr, data_type, &[len], &[], &[box_len], false)
}

/// cuTensorMapEncodeTiled for a tensor of `dims` (innermost first; `strides` in bytes for
/// every dimension but the first) read in boxes of `boxes`, 128-byte swizzled or not.
fn encode_map(
    ptr: u64,
    data_type: cudarc::driver::sys::CUtensorMapDataType,
    dims: &[usize],
    strides: &[u64],
    boxes: &[u32],
    swizzle: bool,
) -> Option<TensorMap> {
    use cudarc::driver::sys;
    let rank = dims.len();
    if !(1..=4).contains(&rank) || strides.len() + 1 != rank || boxes.len() != rank {
        return None;
    }
    // Fixed arrays: this runs on every launch of a TMA kernel.
    let mut global_dim = [0u64; 4];
    for (g, &d) in global_dim.iter_mut().zip(dims) {
        *g = d as u64;
    }
    let element_strides = [1u32; 4];
    let swizzle = if swizzle {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B
    } else {
        sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE
    };
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::uninit();
    // SAFETY: every pointer is to a live array at least as long as the rank (checked above;
    // the strides one shorter); the driver only writes the map.
    let status = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            data_type,
            rank as u32,
            ptr as *mut std::ffi::c_void,
            global_dim.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if status != sys::CUresult::CUDA_SUCCESS {
        return None;
    }
    // SAFETY: the driver filled the map.
    Some(TensorMap(unsafe { map.assume_init() }.opaque))
}

/// Whether the warpgroup kernels may run.
static WARPGROUP: Switch = Switch::new("SMITH_NO_WGMMA");

/// Turns the warpgroup (wgmma) kernels on or off for this process; off, the
/// `mma.sync` kernels run instead. They start on unless `SMITH_NO_WGMMA` is set.
pub fn set_warpgroup_kernels(on: bool) {
    WARPGROUP.set(on);
}

/// Whether attention (forward and both backward kernels) runs on Hopper's warpgroup tensor
/// cores (`wgmma`, built for sm_90a): a tensor-core case on compute capability 9.0 with head
/// dim 64 or 128, unless turned off by [`set_warpgroup_kernels`].
pub fn warpgroup_attention(arch: &str, dtype: DType, head_dim: usize) -> bool {
    arch == "sm_90"
        && tensor_cores(arch, dtype, head_dim)
        && FLASH_WG_HEAD_DIMS.contains(&head_dim)
        && WARPGROUP.on()
}

/// The kernel family that runs an attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// f32 or an unusual head dim: CUDA cores.
    Cores,
    /// `mma.sync` on sm_80 and later.
    TensorCores,
    /// `wgmma` on sm_90.
    Warpgroup,
    /// Head dims 64 and 128 on sm_90: `wgmma`, the streamed tiles copied by TMA.
    Tma,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Cores => "",
            Family::TensorCores => "tc_",
            Family::Warpgroup => "wg_",
            Family::Tma => "tma_",
        }
    }
}

/// Query (or key) rows per block of the CUDA-core kernels (`FLASH_ROWS`).
const ROWS: usize = 4;

/// Query (or key) rows per block of the tensor-core kernels (`TC_ROWS`).
const TC_ROWS: usize = 64;

/// Element strides of a `[B, heads, rows, D]` operand (matches `Heads` in the kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct HeadStrides {
    b: i64,
    h: i64,
    r: i64,
}

// SAFETY: plain old data with the same layout as the C struct.
unsafe impl DeviceRepr for HeadStrides {}

/// Whether the kernels run on tensor cores: f16 or bf16, a head dim they are compiled for,
/// and a GPU of compute capability 8.0 or later (`mma.sync` m16n8k16).
pub fn tensor_cores(arch: &str, dtype: DType, head_dim: usize) -> bool {
    let cc: u32 = arch.trim_start_matches("sm_").parse().unwrap_or(0);
    cc >= 80 && matches!(dtype, DType::F16 | DType::BF16) && FLASH_TC_HEAD_DIMS.contains(&head_dim)
}

/// The tensor-core family when `tc`, else CUDA cores.
fn family(tc: bool) -> Family {
    if tc {
        Family::TensorCores
    } else {
        Family::Cores
    }
}

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
    if big.iter().any(|&n| n > i32::MAX as usize) {
        return Err(Error::invalid(
            "flash_attention",
            format!("{s:?} is too large for one launch"),
        ));
    }
    Ok(())
}

/// A buffer the kernels read: an input in place, or a contiguous copy of it.
enum Buf<'a> {
    Borrowed(&'a CudaStorage),
    Owned(CudaStorage),
}

/// One operand: its buffer and the layout the kernels read it through.
struct Operand<'a> {
    buf: Buf<'a>,
    layout: Layout,
}

impl Operand<'_> {
    fn storage(&self) -> &CudaStorage {
        match &self.buf {
            Buf::Borrowed(s) => s,
            Buf::Owned(s) => s,
        }
    }

    /// Device address of the operand's first element.
    fn ptr(&self) -> u64 {
        self.storage().ptr(self.layout.offset())
    }

    fn strides(&self) -> HeadStrides {
        let s = self.layout.strides();
        HeadStrides {
            b: s[0] as i64,
            h: s[1] as i64,
            r: s[2] as i64,
        }
    }

    /// This operand with contiguous elements (itself when they already are).
    fn contiguous(self) -> Result<Self> {
        if self.layout.is_contiguous() {
            return Ok(self);
        }
        Ok(Operand {
            buf: Buf::Owned(copy_contiguous(self.storage(), &self.layout)?),
            layout: Layout::contiguous(self.layout.shape()),
        })
    }
}

/// An operand the kernels can read: the input itself when its features are contiguous,
/// else a contiguous copy.
fn operand<'a>((s, l): View<'a, CudaStorage>) -> Result<Operand<'a>> {
    let op = Operand {
        buf: Buf::Borrowed(s),
        layout: l.clone(),
    };
    if l.strides()[3] == 1 || l.shape()[3] == 1 {
        Ok(op)
    } else {
        op.contiguous()
    }
}

/// Operands read in place, their pointers and strides, and whether the tensor-core
/// kernels can take them (16-byte aligned rows; otherwise contiguous copies are tried).
struct Operands<'a> {
    operands: Vec<Operand<'a>>,
    ptrs: Vec<u64>,
    strides: Vec<HeadStrides>,
    tc: bool,
    dev: std::sync::Arc<super::CudaDevice>,
}

fn operands<'a>(inputs: &[View<'a, CudaStorage>], s: &AttnShape) -> Result<Operands<'a>> {
    let (first, _) = inputs
        .first()
        .ok_or_else(|| Error::invalid("flash_attention", "no inputs"))?;
    let (dtype, dev) = (first.dtype(), first.dev.clone());
    let aligned = |o: &Operand, p: u64| {
        let st = o.strides();
        p.is_multiple_of(16) && [st.b, st.h, st.r].iter().all(|x| x % 8 == 0)
    };
    let mut operands = inputs
        .iter()
        .map(|&v| operand(v))
        .collect::<Result<Vec<_>>>()?;
    let mut ptrs: Vec<u64> = operands.iter().map(Operand::ptr).collect();
    let mut tc = tensor_cores(&dev.arch, dtype, s.head_dim);
    if tc && !operands.iter().zip(&ptrs).all(|(o, &p)| aligned(o, p)) {
        operands = operands
            .into_iter()
            .map(Operand::contiguous)
            .collect::<Result<_>>()?;
        ptrs = operands.iter().map(Operand::ptr).collect();
        tc = operands.iter().zip(&ptrs).all(|(o, &p)| aligned(o, p));
    }
    let strides = operands.iter().map(Operand::strides).collect();
    Ok(Operands {
        operands,
        ptrs,
        strides,
        tc,
        dev,
    })
}

/// Launch shape of `family`'s `kernel` over `rows` rows of `heads` heads, with the
/// dynamic shared memory of the warpgroup kernels (16-bit tiles, plus 1024 bytes of slack
/// for the swizzle pattern's alignment): two stages of K and V tiles (of `wg_keys` rows in
/// the forward, `WG_BWD_KEYS` in dQ); the dK/dV kernel's block of K and V rows and two
/// stages of Q and dO tiles with their log-sum-exps and D.
fn config(
    family: Family,
    kernel: &str,
    head_dim: usize,
    rows: usize,
    heads: usize,
) -> Result<LaunchConfig> {
    let (per_block, threads) = match family {
        Family::Cores => (ROWS, 32 * ROWS),
        Family::TensorCores => (TC_ROWS, 128),
        Family::Warpgroup => (WG_ROWS, 2 * 128),
        // A producer warp for the forward at head dim 64 (`TMA_PRODUCERS`), else a
        // producer warpgroup.
        Family::Tma => (
            WG_ROWS,
            2 * 128
                + if kernel == "forward" && head_dim <= 64 {
                    32
                } else {
                    128
                },
        ),
    };
    let shared = match (family, kernel) {
        (Family::Warpgroup, "forward") => 2 * 2 * wg_keys(head_dim) * head_dim * 2 + 1024,
        (Family::Warpgroup, "backward_dq") => 2 * 2 * WG_BWD_KEYS * head_dim * 2 + 1024,
        // The ring, Q, alignment and the mbarriers.
        (Family::Tma, "forward") => {
            TMA_STAGES * 2 * wg_keys(head_dim) * head_dim * 2 + WG_ROWS * head_dim * 2 + 1024 + 64
        }
        (Family::Tma, "backward_dq") => TMA_STAGES * 2 * WG_BWD_KEYS * head_dim * 2 + 1024 + 64,
        // The block's K and V rows, the ring of Q and dO tiles with their log-sum-exp and D.
        (Family::Tma, _) => {
            2 * WG_ROWS * head_dim * 2
                + TMA_STAGES * 2 * WG_BWD_QUERIES * (head_dim * 2 + 4)
                + 1024
                + 64
        }
        (Family::Warpgroup, _) => {
            2 * WG_ROWS * head_dim * 2 + 2 * 2 * WG_BWD_QUERIES * (head_dim * 2 + 4) + 1024
        }
        _ => 0,
    };
    // One block per (head, row tile), in the order `block_place` in the kernels reads.
    let blocks = heads.saturating_mul(rows.div_ceil(per_block));
    if blocks > i32::MAX as usize {
        return Err(Error::invalid(
            "flash_attention",
            format!("{heads} heads of {rows} rows need {blocks} blocks, more than one launch has"),
        ));
    }
    Ok(LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: shared as u32,
    })
}

/// The kernel family for these operands: warpgroups where [`warpgroup_attention`] says so.
fn attention_family(ops: &Operands, dtype: DType, head_dim: usize) -> Family {
    if ops.tc && warpgroup_attention(&ops.dev.arch, dtype, head_dim) {
        Family::Warpgroup
    } else {
        family(ops.tc)
    }
}

/// Whether the dK/dV kernel runs as the TMA kernel: as [`tma_attention`], where each query
/// tile's log-sum-exp and D start 16-byte aligned (query lengths that are multiples of 4),
/// which the bulk copies need; elsewhere it stages them with `cp.async`.
pub fn tma_dkdv(arch: &str, dtype: DType, head_dim: usize, q_len: usize) -> bool {
    q_len.is_multiple_of(4) && tma_attention(arch, dtype, head_dim)
}

/// The operands a TMA kernel streams in tiles: K and V (the forward and dQ), or Q and dO
/// (dK/dV).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Streamed {
    KeysValues,
    QueriesGrads,
}

/// The family of a kernel, with the tensor maps of the two operands it streams (boxes of
/// `rows` rows) where it is TMA: warpgroup kernels take their tiles by TMA where the driver
/// can describe them.
fn tma_or_warpgroup(
    ops: &Operands,
    dtype: DType,
    s: &AttnShape,
    streamed: Streamed,
    rows: usize,
) -> (Family, Vec<TensorMap>) {
    let family = attention_family(ops, dtype, s.head_dim);
    if family != Family::Warpgroup || !tma_attention(&ops.dev.arch, dtype, s.head_dim) {
        return (family, Vec::new());
    }
    let (operands, dims) = match streamed {
        Streamed::KeysValues => ([1, 2], [s.head_dim, s.k_len, s.kv_heads, s.batch]),
        Streamed::QueriesGrads => ([0, 4], [s.head_dim, s.q_len, s.heads, s.batch]),
    };
    let map = |i: usize| tile_map(ops.ptrs[i], ops.strides[i], dims, rows as u32, dtype);
    match map(operands[0]).zip(map(operands[1])) {
        Some((a, b)) => (Family::Tma, vec![a, b]),
        None => (family, Vec::new()),
    }
}

/// Pointers and strides of the five operands and five outputs every kernel takes.
struct Args {
    ptrs: [u64; 10],
    strides: [HeadStrides; 5],
    /// The tensor maps of the TMA kernels (the two streamed operands, then for dK/dV the
    /// log-sum-exp and D); empty for the others.
    maps: Vec<TensorMap>,
}

/// Launches `flash_{kernel}_{prefix}d{D}_{dtype}` over `rows` rows of `heads` heads.
fn run(
    dev: &std::sync::Arc<super::CudaDevice>,
    kernel: &str,
    family: Family,
    dtype: DType,
    s: &AttnShape,
    (rows, heads): (usize, usize),
    a: &Args,
) -> Result<()> {
    let name = format!(
        "flash_{kernel}_{}d{}_{}",
        family.prefix(),
        s.head_dim,
        suffix(dtype)
    );
    let cfg = config(family, kernel, s.head_dim, rows, heads)?;
    if cfg.grid_dim.0 == 0 {
        return Ok(()); // no rows (or no heads): nothing to write
    }
    if cfg.shared_mem_bytes > 48 * 1024 {
        use cudarc::driver::sys::CUfunction_attribute_enum as Attr;
        dev.function("flash", &name)?
            .set_attribute(
                Attr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                cfg.shared_mem_bytes as i32,
            )
            .map_err(|e| super::cuda_err("flash attention shared memory", e))?;
    }
    let [q, k, v, o, g, lse, delta, dq, dk, dv] = a.ptrs;
    let [qs, ks, vs, os, gs] = a.strides;
    let ints = [
        s.heads as i32,
        s.kv_heads as i32,
        s.q_len as i32,
        s.k_len as i32,
        s.causal as i32,
        s.window as i32,
    ];
    let scale = s.scale as f32;
    match a.maps.as_slice() {
        [] => launch!(@cfg dev, "flash", name, cfg,
            &q, &qs, &k, &ks, &v, &vs, &o, &os, &g, &gs, &lse, &delta, &dq, &dk, &dv,
            &ints[0], &ints[1], &ints[2], &ints[3], &ints[4], &ints[5], &scale),
        [m0, m1] => launch!(@cfg dev, "flash", name, cfg,
            &q, &qs, &k, &ks, &v, &vs, &o, &os, &g, &gs, &lse, &delta, &dq, &dk, &dv,
            &ints[0], &ints[1], &ints[2], &ints[3], &ints[4], &ints[5], &scale, m0, m1),
        [m0, m1, m2, m3] => launch!(@cfg dev, "flash", name, cfg,
            &q, &qs, &k, &ks, &v, &vs, &o, &os, &g, &gs, &lse, &delta, &dq, &dk, &dv,
            &ints[0], &ints[1], &ints[2], &ints[3], &ints[4], &ints[5], &scale, m0, m1, m2, m3),
        maps => {
            return Err(Error::invalid(
                "flash_attention",
                format!("{name} given {} tensor maps", maps.len()),
            ))
        }
    }
    Ok(())
}

/// The heads of token-major `[B, T, heads, D]` storage as a `[B, heads, T, D]` layout.
fn heads_view(batch: usize, len: usize, heads: usize, d: usize) -> Result<Layout> {
    Layout::contiguous(&[batch, len, heads, d]).transpose(1, 2)
}

/// Output `[B, H, Tq, D]` (q's dtype; a view of `[B, Tq, H, D]` storage) and log-sum-exp
/// `[B, H, Tq]` (f32).
pub fn flash_attention_forward(
    q: View<'_, CudaStorage>,
    k: View<'_, CudaStorage>,
    v: View<'_, CudaStorage>,
    s: &AttnShape,
) -> Result<((CudaStorage, Layout), CudaStorage)> {
    check(s)?;
    let ops = operands(&[q, k, v], s)?;
    let dtype = q.0.dtype();
    let d = s.head_dim;
    let out = CudaStorage::alloc(&ops.dev, dtype, s.batch * s.q_len * s.heads * d)?;
    let lse = CudaStorage::alloc(&ops.dev, DType::F32, s.batch * s.heads * s.q_len)?;
    let out_strides = HeadStrides {
        b: (s.q_len * s.heads * d) as i64,
        h: d as i64,
        r: (s.heads * d) as i64,
    };
    let mut args = Args {
        ptrs: [
            ops.ptrs[0],
            ops.ptrs[1],
            ops.ptrs[2],
            out.ptr(0),
            0,
            lse.ptr(0),
            0,
            0,
            0,
            0,
        ],
        strides: [
            ops.strides[0],
            ops.strides[1],
            ops.strides[2],
            out_strides,
            HeadStrides::default(),
        ],
        maps: Vec::new(),
    };
    let (family, maps) = tma_or_warpgroup(&ops, dtype, s, Streamed::KeysValues, wg_keys(d));
    args.maps = maps;
    run(
        &ops.dev,
        "forward",
        family,
        dtype,
        s,
        (s.q_len, s.batch * s.heads),
        &args,
    )?;
    drop(ops.operands);
    Ok(((out, heads_view(s.batch, s.q_len, s.heads, d)?), lse))
}

/// (dq, dk, dv) from the inputs, the forward's output and log-sum-exp, and the output's
/// gradient `g`, in q's dtype: `[B, heads, T, D]` views of token-major storage.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward(
    q: View<'_, CudaStorage>,
    k: View<'_, CudaStorage>,
    v: View<'_, CudaStorage>,
    out: View<'_, CudaStorage>,
    (lse, lse_layout): View<'_, CudaStorage>,
    g: View<'_, CudaStorage>,
    s: &AttnShape,
) -> Result<[(CudaStorage, Layout); 3]> {
    check(s)?;
    let dtype = q.0.dtype();
    // The output's gradient in q's dtype.
    let g_cast;
    let g_layout;
    let g = if g.0.dtype() == dtype {
        g
    } else {
        g_cast = cast(g.0, g.1, dtype)?;
        g_layout = Layout::contiguous(g.1.shape());
        (&g_cast, &g_layout)
    };
    let ops = operands(&[q, k, v, out, g], s)?;
    let lse = Operand {
        buf: Buf::Borrowed(lse),
        layout: lse_layout.clone(),
    }
    .contiguous()?;
    let lse_ptr = lse.ptr();
    let rows = s.batch * s.heads;
    let d = s.head_dim;
    let delta = CudaStorage::alloc(&ops.dev, DType::F32, rows * s.q_len)?;
    let dq = CudaStorage::alloc(&ops.dev, dtype, rows * s.q_len * d)?;
    let kv_len = s.batch * s.kv_heads * s.k_len * d;
    let dk = CudaStorage::alloc(&ops.dev, dtype, kv_len)?;
    let dv = CudaStorage::alloc(&ops.dev, dtype, kv_len)?;
    let p = &ops.ptrs;
    let (dq_family, maps) = tma_or_warpgroup(&ops, dtype, s, Streamed::KeysValues, WG_BWD_KEYS);
    let (mut dkdv_family, mut dkdv_maps) =
        tma_or_warpgroup(&ops, dtype, s, Streamed::QueriesGrads, WG_BWD_QUERIES);
    if dkdv_family == Family::Tma && !tma_dkdv(&ops.dev.arch, dtype, d, s.q_len) {
        dkdv_family = Family::Warpgroup;
        dkdv_maps.clear();
    }
    if dkdv_family == Family::Tma {
        // The dK/dV kernel also takes each tile's log-sum-exp and D by TMA.
        let len = rows * s.q_len;
        let box_len = WG_BWD_QUERIES as u32;
        match row_map(lse_ptr, len, box_len).zip(row_map(delta.ptr(0), len, box_len)) {
            Some((l, d)) => dkdv_maps.extend([l, d]),
            None => {
                dkdv_family = Family::Warpgroup;
                dkdv_maps.clear();
            }
        }
    }
    let mut args = Args {
        ptrs: [
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            lse_ptr,
            delta.ptr(0),
            dq.ptr(0),
            dk.ptr(0),
            dv.ptr(0),
        ],
        strides: [
            ops.strides[0],
            ops.strides[1],
            ops.strides[2],
            ops.strides[3],
            ops.strides[4],
        ],
        maps,
    };
    // dQ first: it also stores D = rowsum(dO * O), which the dK/dV kernel reads.
    run(
        &ops.dev,
        "backward_dq",
        dq_family,
        dtype,
        s,
        (s.q_len, rows),
        &args,
    )?;
    args.maps = dkdv_maps;
    let kv_blocks = (s.k_len, s.batch * s.kv_heads);
    run(
        &ops.dev,
        "backward_dkdv",
        dkdv_family,
        dtype,
        s,
        kv_blocks,
        &args,
    )?;
    drop(ops.operands);
    drop(lse);
    // The kernels write token-major [B, T, heads, D], the layout of the projections the
    // gradients flow back into; the results are [B, heads, T, D] views of it.
    let kv_layout = heads_view(s.batch, s.k_len, s.kv_heads, d)?;
    Ok([
        (dq, heads_view(s.batch, s.q_len, s.heads, d)?),
        (dk, kv_layout.clone()),
        (dv, kv_layout),
    ])
}
