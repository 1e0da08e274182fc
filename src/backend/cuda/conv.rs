//! Implicit-GEMM convolution on tensor cores (kernels in `kernels/conv.cu`): f16 and bf16
//! NHWC images, f32 accumulation, no column buffer. One gather kernel computes the forward
//! and the input gradient; a second computes the weight gradient as f32 partial sums over
//! slices of the pixels, so that small weight matrices still fill the GPU.

use super::storage::suffix;
use super::{launch, CudaDevice, CudaStorage};
use crate::backend::interface::{ConvPass, GatherAxis};
use crate::{DType, Error, Layout, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig};

// SAFETY: seven i32 with the layout of the kernel's `GatherAxis`.
unsafe impl DeviceRepr for GatherAxis {}

/// Output pixels (rows) and output channels (columns) of one block's tile (`CONV_BM`, `CONV_BN`).
const TILE: usize = 128;
/// Reduction depth of one pipeline stage (`CONV_BK`).
const DEPTH: usize = 32;
/// Buffers in the cp.async ring (`CONV_STAGES`).
const STAGES: usize = 4;
/// Threads per block (`CONV_THREADS`).
const THREADS: u32 = 256;
/// Blocks the weight-gradient kernel aims for: four per SM of a 132-SM GPU.
const WGRAD_TARGET_BLOCKS: usize = 528;

/// Dynamic shared memory of the gather kernel: A and B tiles of 128 x (32 + 8) halves.
const GATHER_SHARED: usize = STAGES * 2 * TILE * (DEPTH + 8) * 2;
/// The wide gather kernel's tile: 256 pixels by 64 output channels, for layers with at
/// most 64 outputs (a 128-wide tile would leave half its products unused).
const WIDE_PIXELS: usize = 256;
const WIDE_OUTPUTS: usize = 64;
const WIDE_SHARED: usize = STAGES * (WIDE_PIXELS + WIDE_OUTPUTS) * (DEPTH + 8) * 2;
/// Dynamic shared memory of the weight-gradient kernel: tiles of 32 x (128 + 8) halves.
const WGRAD_SHARED: usize = STAGES * 2 * DEPTH * (TILE + 8) * 2;

/// The `[N, H, W, C]` view of an image the kernels can read: channels contiguous, in whole
/// 16-byte chunks, every pixel 16-byte aligned. Returns (N, H, W, C) and the strides of
/// N, H and W in elements.
fn image_view(s: &CudaStorage, l: &Layout) -> Option<([usize; 4], [i64; 3])> {
    let (shape, st) = (l.shape(), l.strides());
    if shape.len() != 4 || (shape[3] > 1 && st[3] != 1) || !shape[3].is_multiple_of(8) {
        return None;
    }
    let aligned =
        s.ptr(l.offset()).is_multiple_of(16) && st[..3].iter().all(|x| x.is_multiple_of(8));
    aligned.then(|| {
        (
            [shape[0], shape[1], shape[2], shape[3]],
            [st[0] as i64, st[1] as i64, st[2] as i64],
        )
    })
}

fn fits_i32(values: &[usize]) -> bool {
    values.iter().all(|&v| v <= i32::MAX as usize)
}

/// Whether the tensor-core kernels run on this GPU for `dtype` (mma.sync from sm_80).
fn supported(dev: &CudaDevice, dtype: DType) -> bool {
    let cc: u32 = dev.arch.trim_start_matches("sm_").parse().unwrap_or(0);
    cc >= 80 && matches!(dtype, DType::F16 | DType::BF16)
}

fn axis_check(a: &GatherAxis) -> Result<()> {
    if a.len <= 0 || a.out <= 0 || a.taps <= 0 || a.divisor <= 0 {
        return Err(Error::invalid(
            "conv2d",
            format!("implicit GEMM pass with an empty axis {a:?}"),
        ));
    }
    Ok(())
}

fn allow_shared(dev: &CudaDevice, name: &str, bytes: usize) -> Result<()> {
    use cudarc::driver::sys::CUfunction_attribute_enum as Attr;
    dev.function("conv", name)?
        .set_attribute(
            Attr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(|e| super::cuda_err("conv2d shared memory", e))
}

/// Runs one [`ConvPass`], or returns `None` where the kernels do not apply (dtype, GPU,
/// layouts, alignment, channel counts).
pub fn conv_pass(
    src: &CudaStorage,
    ls: &Layout,
    other: &CudaStorage,
    lo: &Layout,
    pass: ConvPass,
) -> Result<Option<(CudaStorage, Layout)>> {
    let dtype = src.dtype;
    if other.dtype != dtype || !supported(&src.dev, dtype) {
        return Ok(None);
    }
    match pass {
        ConvPass::Gather { rows, cols } => gather(src, ls, other, lo, rows, cols),
        ConvPass::WeightGrad { rows, cols } => weight_grad(src, ls, other, lo, rows, cols),
    }
}

fn gather(
    src: &CudaStorage,
    ls: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    rows: GatherAxis,
    cols: GatherAxis,
) -> Result<Option<(CudaStorage, Layout)>> {
    let Some(([n, h, wd, c], [sn, sh, sw])) = image_view(src, ls) else {
        return Ok(None);
    };
    let ws = lw.shape();
    let weights_ok = lw.is_contiguous()
        && ws.len() == 4
        && ws[1] == rows.taps as usize
        && ws[2] == cols.taps as usize
        && ws[3] == c
        && ws[0].is_multiple_of(2)
        && w.ptr(lw.offset()).is_multiple_of(16);
    if !weights_ok || rows.len as usize != h || cols.len as usize != wd {
        return Ok(None);
    }
    axis_check(&rows)?;
    axis_check(&cols)?;
    let j = ws[0];
    let (p, q) = (rows.out as usize, cols.out as usize);
    let pixels = n * p * q;
    if !fits_i32(&[n, c, j, ws[1] * ws[2] * c]) || pixels.div_ceil(TILE) > i32::MAX as usize {
        return Err(Error::invalid(
            "conv2d",
            format!("implicit GEMM pass too large: {n} images of {h}x{wd}x{c}, {j} outputs"),
        ));
    }
    let out = CudaStorage::alloc(&src.dev, src.dtype, pixels * j)?;
    let out_layout = Layout::contiguous(&[n, p, q, j]);
    if pixels == 0 || j == 0 {
        return Ok(Some((out, out_layout)));
    }
    let (kind, tile_m, tile_n, shared) = if j <= WIDE_OUTPUTS {
        ("conv_gather_wide", WIDE_PIXELS, WIDE_OUTPUTS, WIDE_SHARED)
    } else {
        ("conv_gather", TILE, TILE, GATHER_SHARED)
    };
    let name = format!("{kind}_{}", suffix(src.dtype));
    allow_shared(&src.dev, &name, shared)?;
    let cfg = LaunchConfig {
        grid_dim: (pixels.div_ceil(tile_m) as u32, j.div_ceil(tile_n) as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: shared as u32,
    };
    let (sp, wp, op) = (src.ptr(ls.offset()), w.ptr(lw.offset()), out.ptr(0));
    let (c32, n32, j32) = (c as i32, n as i32, j as i32);
    launch!(@cfg src.dev, "conv", name, cfg,
        &sp, &sn, &sh, &sw, &c32, &rows, &cols, &n32, &wp, &j32, &op);
    Ok(Some((out, out_layout)))
}

fn weight_grad(
    dy: &CudaStorage,
    ld: &Layout,
    x: &CudaStorage,
    lx: &Layout,
    rows: GatherAxis,
    cols: GatherAxis,
) -> Result<Option<(CudaStorage, Layout)>> {
    let Some(([n, h, wd, c], [sn, sh, sw])) = image_view(x, lx) else {
        return Ok(None);
    };
    let ds = ld.shape();
    let grad_ok = ld.is_contiguous()
        && ds.len() == 4
        && ds[0] == n
        && ds[1] == rows.out as usize
        && ds[2] == cols.out as usize
        && ds[3].is_multiple_of(8)
        && dy.ptr(ld.offset()).is_multiple_of(16);
    if !grad_ok || rows.len as usize != h || cols.len as usize != wd {
        return Ok(None);
    }
    axis_check(&rows)?;
    axis_check(&cols)?;
    let o = ds[3];
    let kdim = rows.taps as usize * cols.taps as usize * c;
    let pixels = n * ds[1] * ds[2];
    let tiles = pixels.div_ceil(DEPTH);
    if !fits_i32(&[n, c, o, kdim, tiles]) {
        return Err(Error::invalid(
            "conv2d",
            format!("weight gradient too large: {n} images of {h}x{wd}x{c}, {o} outputs"),
        ));
    }
    let blocks = o.div_ceil(TILE) * kdim.div_ceil(TILE);
    let wanted = (WGRAD_TARGET_BLOCKS / blocks.max(1)).clamp(1, tiles.clamp(1, 65535));
    let per_split = tiles.div_ceil(wanted).max(1);
    let splits = tiles.div_ceil(per_split).max(1);
    let out = CudaStorage::alloc(&dy.dev, DType::F32, splits * o * kdim)?;
    let out_layout = Layout::contiguous(&[splits, o, kdim]);
    if o == 0 || kdim == 0 {
        return Ok(Some((out, out_layout)));
    }
    let name = format!("conv_wgrad_{}", suffix(dy.dtype));
    allow_shared(&dy.dev, &name, WGRAD_SHARED)?;
    let cfg = LaunchConfig {
        grid_dim: (
            o.div_ceil(TILE) as u32,
            kdim.div_ceil(TILE) as u32,
            splits as u32,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: WGRAD_SHARED as u32,
    };
    let (dp, xp, pp) = (dy.ptr(ld.offset()), x.ptr(lx.offset()), out.ptr(0));
    let (o32, c32, n32, per32) = (o as i32, c as i32, n as i32, per_split as i32);
    launch!(@cfg dy.dev, "conv", name, cfg,
        &dp, &o32, &xp, &sn, &sh, &sw, &c32, &rows, &cols, &n32, &pp, &per32);
    Ok(Some((out, out_layout)))
}
