//! `x @ w^T + b` in one cuBLASLt call: the bias is added in the GEMM's epilogue, so the
//! output is written once instead of written, read and written again by a separate add.
//! For inference the epilogue can also apply GELU (tanh) and add a residual.

use super::{cuda_err, CudaDevice, CudaStorage};
use crate::{DType, Layout, Result};
use cudarc::cublaslt::{result as lt, sys};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Bytes of cuBLASLt workspace per device (NVIDIA's recommendation for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

/// The cuBLASLt handle of one device, its workspace, and a ready plan per shape.
pub(crate) struct LtState {
    handle: sys::cublasLtHandle_t,
    workspace: cudarc::driver::CudaSlice<u8>,
    /// Descriptors and chosen algorithm per shape, built once: creating them costs more
    /// host time than a small GEMM takes on the GPU. The lock is held from setting the
    /// bias pointer to queuing the GEMM.
    plans: Mutex<HashMap<AlgoKey, Plan>>,
}

/// Everything one shape's GEMM needs except its pointers.
struct Plan {
    desc: Desc,
    a: MatrixLayout,
    b: MatrixLayout,
    c: MatrixLayout,
    algo: sys::cublasLtMatmulAlgo_t,
}

// SAFETY: the handle is used only on the device's single stream, under the caller's
// ordering; cuBLASLt handles may be shared between threads.
unsafe impl Send for LtState {}
unsafe impl Sync for LtState {}

/// (rows, out features, in features, dtype, TF32, epilogue, residual added).
type AlgoKey = (usize, usize, usize, DType, bool, Epilogue, bool);

pub use crate::backend::interface::Epilogue;

/// A descriptor destroyed when dropped.
struct Desc(sys::cublasLtMatmulDesc_t);
impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by create_matmul_desc and destroyed once.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}
struct MatrixLayout(sys::cublasLtMatrixLayout_t);
impl Drop for MatrixLayout {
    fn drop(&mut self) {
        // SAFETY: created by create_matrix_layout and destroyed once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}
struct Pref(sys::cublasLtMatmulPreference_t);
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by create_matmul_pref and destroyed once.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

impl CudaDevice {
    /// This device's cuBLASLt state, created on first use; `None` when the library is
    /// missing or fails to start (callers then use the unfused path).
    pub(crate) fn lt(&self) -> Option<&LtState> {
        static DISABLED: OnceLock<bool> = OnceLock::new();
        if *DISABLED.get_or_init(|| std::env::var_os("SMITH_NO_CUBLASLT").is_some()) {
            return None;
        }
        self.lt
            .get_or_init(|| {
                // SAFETY: only tries to open the shared library.
                if !unsafe { sys::is_culib_present() } {
                    return None;
                }
                self.ctx.bind_to_thread().ok()?;
                let handle = lt::create_handle().ok()?;
                // SAFETY: the workspace is scratch memory cuBLASLt writes before reading.
                let workspace = unsafe { self.stream.alloc::<u8>(WORKSPACE_BYTES) }.ok()?;
                Some(LtState {
                    handle,
                    workspace,
                    plans: Mutex::new(HashMap::new()),
                })
            })
            .as_ref()
    }
}

/// `x [rows, k] @ w[n, k]^T + b[n]` into a new contiguous `[rows, n]`, when cuBLASLt is
/// there and the operands suit it (contiguous, 256-byte aligned, f32/f16/bf16); `None`
/// otherwise, so the caller falls back to a GEMM and an add.
pub fn linear_bias(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    b: &CudaStorage,
    lb: &Layout,
) -> Result<Option<CudaStorage>> {
    linear_epilogue(x, lx, w, lw, b, lb, Epilogue::Bias, None)
}

/// `epilogue(x @ w^T + b) (+ residual)` in one cuBLASLt call (same conditions as
/// [`linear_bias`]; the residual must be a contiguous `[rows, n]` too).
#[allow(clippy::too_many_arguments)]
pub fn linear_epilogue(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    epilogue: Epilogue,
    residual: Option<(&CudaStorage, &Layout)>,
) -> Result<Option<CudaStorage>> {
    let dev: &Arc<CudaDevice> = &x.dev;
    let Some(state) = dev.lt() else {
        return Ok(None);
    };
    let dtype = x.dtype;
    let dt = match dtype {
        DType::F32 => sys::cudaDataType::CUDA_R_32F,
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        _ => return Ok(None),
    };
    if w.dtype != dtype || b.dtype != dtype || lx.rank() != 2 || lw.rank() != 2 {
        return Ok(None);
    }
    let (rows, k, n) = (lx.shape()[0], lx.shape()[1], lw.shape()[0]);
    let contiguous = lx.is_contiguous() && lw.is_contiguous() && lb.is_contiguous();
    if !contiguous || lw.shape()[1] != k || lb.shape() != [n] || rows == 0 || n == 0 || k == 0 {
        return Ok(None);
    }
    if [rows, n, k].iter().any(|&v| v > i32::MAX as usize) {
        return Ok(None);
    }
    let rp = match residual {
        Some((r, lr)) => {
            if r.dtype != dtype || !lr.is_contiguous() || lr.shape() != [rows, n] {
                return Ok(None);
            }
            Some(r.ptr(lr.offset()))
        }
        None => None,
    };
    let (xp, wp, bp) = (x.ptr(lx.offset()), w.ptr(lw.offset()), b.ptr(lb.offset()));
    let out = CudaStorage::alloc(dev, dtype, rows * n)?;
    let yp = out.ptr(0);
    if [xp, wp, bp, yp, rp.unwrap_or(0)]
        .iter()
        .any(|p| p % 256 != 0)
    {
        return Ok(None);
    }
    let tf32 = dtype == DType::F32 && super::tf32_enabled();
    let compute = match (dtype, tf32) {
        (DType::F32, false) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        (DType::F32, true) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        _ => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
    };
    let err = |e| cuda_err("linear (cuBLASLt)", e);
    let key: AlgoKey = (rows, n, k, dtype, tf32, epilogue, rp.is_some());
    let mut plans = state.plans.lock().unwrap_or_else(|e| e.into_inner());
    let plan = match plans.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => match plan(state, key, dt, compute)? {
            Some(p) => e.insert(p),
            None => return Ok(None),
        },
    };
    // SAFETY: the attribute is a device pointer (u64).
    unsafe {
        lt::set_matmul_desc_attribute(
            plan.desc.0,
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
            (&bp as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )
    }
    .map_err(err)?;
    let one = 1f32;
    // With a residual, C is the residual and beta 1: D = epilogue(A B + bias) + C.
    let (beta, cp) = match rp {
        Some(r) => (1f32, r),
        None => (0f32, yp),
    };
    let timing = if crate::backend::profile::enabled() {
        Some(dev.timing_start()?)
    } else {
        None
    };
    let ws_ptr = {
        use cudarc::driver::DevicePtr;
        let (p, _sync) = state.workspace.device_ptr(&dev.stream);
        p
    };
    // SAFETY: pointers cover rows x k, n x k, n and rows x n elements of `dt`, aligned to
    // 256 bytes; the workspace holds WORKSPACE_BYTES; everything runs on the device stream.
    unsafe {
        lt::matmul(
            state.handle,
            plan.desc.0,
            (&one as *const f32).cast(),
            (&beta as *const f32).cast(),
            wp as *const c_void,
            plan.a.0,
            xp as *const c_void,
            plan.b.0,
            cp as *const c_void,
            plan.c.0,
            yp as *mut c_void,
            plan.c.0,
            &plan.algo,
            ws_ptr as *mut c_void,
            WORKSPACE_BYTES,
            dev.stream.cu_stream() as *mut _,
        )
    }
    .map_err(err)?;
    drop(plans);
    if let Some(start) = timing {
        let kind = match (epilogue, rp.is_some()) {
            (Epilogue::Bias, false) => "bias",
            (Epilogue::Bias, true) => "bias_residual",
            (Epilogue::GeluBias, false) => "gelu_bias",
            (Epilogue::GeluBias, true) => "gelu_bias_residual",
        };
        dev.timing_end(&format!("cublaslt_gemm_{kind}_{dtype}"), start)?;
    }
    Ok(Some(out))
}

/// Builds the descriptors of `x [rows, k] @ w[n, k]^T + bias` and asks cuBLASLt for an
/// algorithm; `None` when it has none for this shape.
fn plan(
    state: &LtState,
    (rows, n, k, _, _, epilogue, _): AlgoKey,
    dt: sys::cudaDataType,
    compute: sys::cublasComputeType_t,
) -> Result<Option<Plan>> {
    let err = |e| cuda_err("linear (cuBLASLt)", e);
    // Column-major view: Y^T [n, rows] = W [n, k] (stored k x n, transposed) X^T (stored
    // k x rows); the bias is a length-n column vector added to every column.
    let desc = Desc(lt::create_matmul_desc(compute, sys::cudaDataType::CUDA_R_32F).map_err(err)?);
    let trans_a = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T;
    let trans_b = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N;
    let epilogue = match epilogue {
        Epilogue::Bias => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
        Epilogue::GeluBias => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS,
    };
    use sys::cublasLtMatmulDescAttributes_t as A;
    // SAFETY: each attribute gets a pointer to a value of the type and size it expects.
    unsafe {
        let set =
            |attr, p: *const c_void, size| lt::set_matmul_desc_attribute(desc.0, attr, p, size);
        set(
            A::CUBLASLT_MATMUL_DESC_TRANSA,
            (&trans_a as *const cudarc::cublas::sys::cublasOperation_t).cast(),
            std::mem::size_of_val(&trans_a),
        )
        .map_err(err)?;
        set(
            A::CUBLASLT_MATMUL_DESC_TRANSB,
            (&trans_b as *const cudarc::cublas::sys::cublasOperation_t).cast(),
            std::mem::size_of_val(&trans_b),
        )
        .map_err(err)?;
        set(
            A::CUBLASLT_MATMUL_DESC_EPILOGUE,
            (&epilogue as *const sys::cublasLtEpilogue_t).cast(),
            std::mem::size_of_val(&epilogue),
        )
        .map_err(err)?;
    }
    let layout = |r: usize, c: usize, ld: usize| -> Result<MatrixLayout> {
        Ok(MatrixLayout(
            lt::create_matrix_layout(dt, r as u64, c as u64, ld as i64).map_err(err)?,
        ))
    };
    let (a, b, c) = (layout(k, n, k)?, layout(k, rows, k)?, layout(n, rows, n)?);
    let pref = Pref(lt::create_matmul_pref().map_err(err)?);
    let ws = WORKSPACE_BYTES;
    // SAFETY: the attribute is a usize byte count.
    unsafe {
        lt::set_matmul_pref_attribute(
            pref.0,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            (&ws as *const usize).cast(),
            std::mem::size_of::<usize>(),
        )
        .map_err(err)?;
    }
    // SAFETY: all descriptors are alive.
    let found =
        unsafe { lt::get_matmul_algo_heuristic(state.handle, desc.0, a.0, b.0, c.0, c.0, pref.0) };
    Ok(found.ok().map(|f| Plan {
        desc,
        a,
        b,
        c,
        algo: f.algo,
    }))
}
