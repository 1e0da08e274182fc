//! The CUDA backend: the driver, NVRTC and cuBLAS loaded at run time (nothing CUDA is needed
//! to build), one stream per device, kernels compiled on first use and cached on disk.

mod batch_norm;
pub mod compile;
mod conv;
mod decode_attention;
mod elementwise;
mod flash;
mod gemv;
mod index;
mod interface;
mod linear;
mod matmul;
mod nn;
mod optim;
mod pool;
mod quant;
mod reduce;
mod storage;
mod timing;

pub use batch_norm::{channel_affine, channel_sums};
pub use conv::conv_pass;
pub use decode_attention::{decode_attention, DecodeShape, DECODE_HEAD_DIMS};
pub use elementwise::*;
pub use flash::{
    flash_attention_backward, flash_attention_forward, set_tma_kernels, set_warpgroup_kernels,
    tensor_cores, tma_attention, tma_dkdv, warpgroup_attention, FLASH_HEAD_DIMS,
    FLASH_TC_HEAD_DIMS, FLASH_WG_HEAD_DIMS,
};
pub use gemv::{gemv, GemvNorm, GEMV_MAX_ROWS};
pub use index::*;
pub use linear::{linear_bias, linear_epilogue, Epilogue};
pub use matmul::{matmul, set_tf32, tf32_enabled};
pub use nn::*;
pub use optim::*;
pub use quant::{qgemv, qrows_into, quant_kernel_name, QShape, QGEMV_MAX_ROWS};
pub use reduce::*;
pub use storage::CudaStorage;

use crate::{Device, Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One GPU: its context, the stream all work is queued on, the cuBLAS handle and the
/// kernels loaded so far.
pub struct CudaDevice {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub(crate) blas: cudarc::cublas::CudaBlas,
    /// `sm_XY` of this GPU.
    pub arch: String,
    /// The major compute capability.
    major: i32,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    timings: Mutex<timing::Timings>,
    pool: Mutex<pool::Pool>,
    /// Most bytes the pool keeps for reuse.
    pool_cap: usize,
    in_use: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    /// cuBLASLt, started on first use (`None` inside when unavailable).
    lt: OnceLock<Option<linear::LtState>>,
    /// Zeroed per-row tickets of split decoding attention (each launch leaves them zero).
    decode_tickets: Mutex<Option<cudarc::driver::CudaSlice<u32>>>,
}

/// Wraps a CUDA error with the op it happened in.
pub(crate) fn cuda_err(op: &'static str, e: impl std::fmt::Debug) -> Error {
    Error::invalid(op, format!("CUDA error: {e:?}"))
}

/// Every device initialised so far.
pub(crate) fn initialised() -> Vec<Arc<CudaDevice>> {
    let reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<_> = reg.values().cloned().collect();
    v.sort_by_key(|d| d.ordinal);
    v
}

/// Why CUDA cannot be used here, or the number of devices.
pub fn probe() -> std::result::Result<usize, String> {
    // SAFETY: only tries to open the shared library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(
            "the NVIDIA driver library (libcuda.so) was not found: install the NVIDIA driver"
                .into(),
        );
    }
    match std::panic::catch_unwind(CudaContext::device_count) {
        Ok(Ok(n)) if n > 0 => Ok(n as usize),
        Ok(Ok(_)) => Err("the NVIDIA driver reports no CUDA device".into()),
        Ok(Err(e)) => Err(format!("the NVIDIA driver failed to start: {e:?}")),
        Err(_) => Err("the NVIDIA driver library could not be used".into()),
    }
}

fn registry() -> &'static Mutex<HashMap<usize, Arc<CudaDevice>>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The device `ordinal`, initialised on first use; a clear error when CUDA is unusable.
pub fn device(ordinal: usize) -> Result<Arc<CudaDevice>> {
    let unavailable = |reason: String| Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        reason,
    };
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = reg.get(&ordinal) {
        return Ok(d.clone());
    }
    let count = probe().map_err(unavailable)?;
    if ordinal >= count {
        return Err(unavailable(format!("only {count} CUDA device(s) present")));
    }
    // SAFETY: only tries to open the shared libraries.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(unavailable("the cuBLAS library (libcublas.so) was not found: install the CUDA runtime libraries or `pip install nvidia-cublas`".into()));
    }
    if !compile::nvrtc_available() {
        return Err(unavailable("the NVRTC library (libnvrtc.so) was not found: install the CUDA runtime libraries or `pip install nvidia-cuda-nvrtc`".into()));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(format!("{e:?}")))?;
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| unavailable(format!("{e:?}")))?;
    if major < 7 {
        return Err(unavailable(format!(
            "compute capability {major}.{minor} is too old (smith needs 7.0 or newer)"
        )));
    }
    // One stream per device: no cross-stream events needed.
    // SAFETY: every buffer of this context is used on this single stream only.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.default_stream();
    // The pool keeps at most a quarter of the card (or SMITH_POOL_BYTES) for reuse.
    let pool_cap = std::env::var("SMITH_POOL_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| ctx.total_mem().map(|t| t / 4).unwrap_or(1 << 30));
    let blas = cudarc::cublas::CudaBlas::new(stream.clone())
        .map_err(|e| unavailable(format!("cuBLAS: {e:?}")))?;
    let dev = Arc::new(CudaDevice {
        ordinal,
        ctx,
        stream,
        blas,
        arch: format!("sm_{major}{minor}"),
        major,
        modules: Mutex::new(HashMap::new()),
        functions: Mutex::new(HashMap::new()),
        timings: Mutex::new(timing::Timings::default()),
        pool: Mutex::new(pool::Pool::default()),
        pool_cap,
        in_use: std::sync::atomic::AtomicUsize::new(0),
        peak: std::sync::atomic::AtomicUsize::new(0),
        lt: OnceLock::new(),
        decode_tickets: Mutex::new(None),
    });
    reg.insert(ordinal, dev.clone());
    Ok(dev)
}

impl CudaDevice {
    /// Whether `launch!(@dependent ...)` may overlap a launch with the kernel before it: inside
    /// [`early_launches`] on a GPU of compute capability 9.0 or later.
    pub(crate) fn early_launch_allowed(&self) -> bool {
        self.major >= 9 && EARLY_LAUNCHES.with(|c| c.get())
    }

    /// The kernel `function` of module `module`, compiling and loading the module on first use.
    pub fn function(&self, module: &'static str, function: &str) -> Result<CudaFunction> {
        let key = format!("{module}/{function}");
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        let module_handle = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(module) {
                Some(m) => m.clone(),
                None => {
                    let ptx = compile::compile(module, &compile::module_arch(module, &self.arch))?;
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                        .map_err(|e| cuda_err("load kernels", e))?;
                    modules.insert(module, m.clone());
                    m
                }
            }
        };
        let f = module_handle.load_function(function).map_err(|e| {
            Error::invalid(
                "cuda",
                format!("kernel `{function}` missing from `{module}`: {e:?}"),
            )
        })?;
        self.functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, f.clone());
        Ok(f)
    }

    /// The decoding tickets, at least `n` of them, locked while the caller launches.
    pub(crate) fn decode_tickets(
        &self,
        n: usize,
    ) -> Result<std::sync::MutexGuard<'_, Option<cudarc::driver::CudaSlice<u32>>>> {
        let mut guard = self
            .decode_tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(|t| t.len() < n) {
            let fresh = self
                .stream
                .alloc_zeros::<u32>(n.next_power_of_two().max(256))
                .map_err(|e| cuda_err("decode tickets", e))?;
            *guard = Some(fresh);
        }
        Ok(guard)
    }

    /// Waits for all queued work (only needed before reading results on the host).
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronize", e))
    }

    /// (free, total) device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(|e| cuda_err("memory_info", e))
    }
}

/// Launches kernel `$name` of module `$module` over `$n` elements (grid-stride) with the
/// given arguments, in order.
macro_rules! launch {
    ($dev:expr, $module:expr, $name:expr, $n:expr, $($arg:expr),* $(,)?) => {{
        launch!(@cfg $dev, $module, $name, $crate::backend::cuda::launch_config($n), $($arg),*)
    }};
    // A kernel of the decoding chain (one that calls `pdl_wait` before it reads what the
    // kernel before it wrote, and writes nothing before that), launched with programmatic
    // dependent launch where it is on (see `early_launches`): its blocks may then start,
    // and issue their weight loads, while the kernel before it is still running. Elsewhere
    // a plain launch.
    (@dependent $dev:expr, $module:expr, $name:expr, $cfg:expr, $($arg:expr),* $(,)?) => {{
        if $dev.early_launch_allowed() && !$crate::backend::profile::enabled() {
            let name: &str = &$name;
            let f = $dev.function($module, name)?;
            let mut args: Vec<*mut std::ffi::c_void> =
                vec![$( ($arg) as *const _ as *mut std::ffi::c_void ),*];
            // SAFETY: as for a plain launch; every argument outlives the call, which copies
            // them.
            unsafe { $crate::backend::cuda::launch_programmatic(&$dev, &f, $cfg, &mut args) }?;
        } else {
            launch!(@cfg $dev, $module, $name, $cfg, $($arg),*);
        }
    }};
    (@cfg $dev:expr, $module:expr, $name:expr, $cfg:expr, $($arg:expr),* $(,)?) => {{
        use cudarc::driver::PushKernelArg;
        let name: &str = &$name;
        let f = $dev.function($module, name)?;
        let mut builder = $dev.stream.launch_builder(&f);
        $( builder.arg($arg); )*
        let timing = if $crate::backend::profile::enabled() { Some($dev.timing_start()?) } else { None };
        // SAFETY: argument types and order match the kernel's signature in kernels/, and
        // every pointer covers the elements its layout reaches.
        unsafe { builder.launch($cfg) }.map_err(|e| $crate::backend::cuda::cuda_err("kernel launch", e))?;
        if let Some(start) = timing {
            $dev.timing_end(name, start)?;
        }
    }};
}
pub(crate) use launch;

/// Queues `f` with the programmatic-stream-serialization attribute (sm_90 and later).
///
/// # Safety
/// `args` point at values whose types and order match the kernel's parameters.
pub(crate) unsafe fn launch_programmatic(
    dev: &CudaDevice,
    f: &CudaFunction,
    cfg: LaunchConfig,
    args: &mut [*mut std::ffi::c_void],
) -> Result<()> {
    use cudarc::driver::sys;
    dev.ctx
        .bind_to_thread()
        .map_err(|e| cuda_err("kernel launch", e))?;
    let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: dev.stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    sys::cuLaunchKernelEx(
        &config,
        f.cu_function(),
        args.as_mut_ptr(),
        std::ptr::null_mut(),
    )
    .result()
    .map_err(|e| cuda_err("kernel launch", e))
}

thread_local! {
    static EARLY_LAUNCHES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Restores the previous setting of [`early_launches`] when dropped.
pub struct EarlyLaunchGuard {
    previous: bool,
}

impl Drop for EarlyLaunchGuard {
    fn drop(&mut self) {
        EARLY_LAUNCHES.with(|c| c.set(self.previous));
    }
}

/// Lets the decoding kernels of this thread (dense matrix-vector products and decoding
/// attention) start while the kernel before them finishes, until the guard is dropped:
/// each fetches its weights first and waits for its inputs on the device. Only for work
/// whose weights no kernel writes meanwhile (generation), since a product reads its
/// weights before that wait. Needs sm_90; `SMITH_NO_EARLY_LAUNCH=1` turns it off.
pub fn early_launches() -> EarlyLaunchGuard {
    let on = std::env::var_os("SMITH_NO_EARLY_LAUNCH").is_none_or(|v| v.is_empty() || v == "0");
    EarlyLaunchGuard {
        previous: EARLY_LAUNCHES.with(|c| c.replace(on)),
    }
}

/// One block of 256 threads per row, for the row kernels of `nn.cu`.
pub(crate) fn row_config(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, 65535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A 1-D grid-stride launch over `n` elements.
pub(crate) fn launch_config(n: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 132 * 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}
