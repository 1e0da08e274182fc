//! Running a test body on every device present: the GPU lock, the tolerances, and
//! [`check`], which compares the CPU with the same op in f64 and a GPU with the CPU.

use smith::backend::cuda;
use smith::{DType, Device, Rng, Tensor};

/// GPU work in a test binary runs one test at a time: the profiler and the memory counters
/// are per device, so concurrent tests would see each other's kernels and buffers.
static GPU_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Held by tests that switch TF32 (a process-wide setting) off and on.
static TF32_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The TF32 switch, for a test that turns it off.
pub fn tf32_lock() -> std::sync::MutexGuard<'static, ()> {
    TF32_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exact f32 products on the GPU while it lives (TF32 off, back on when dropped), held
/// under the lock of every test that switches TF32.
pub struct ExactF32(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

/// Turns TF32 off until the returned guard drops: parity tests compare f32 GPU results
/// with the CPU's at f32 precision, which TF32's 10-bit mantissa cannot meet.
#[allow(dead_code)]
pub fn exact_f32() -> ExactF32 {
    let lock = tf32_lock();
    smith::backend::cuda::set_tf32(false);
    ExactF32(lock)
}

impl Drop for ExactF32 {
    fn drop(&mut self) {
        smith::backend::cuda::set_tf32(true);
    }
}

/// Why a GPU test cannot run here (`None`: a GPU is usable). With `SMITH_REQUIRE_CUDA`
/// set, a missing GPU is a failure instead.
pub fn needs_gpu() -> Option<String> {
    if smith::device::cuda_available() {
        return None;
    }
    assert!(
        std::env::var_os("SMITH_REQUIRE_CUDA").is_none(),
        "SMITH_REQUIRE_CUDA is set but no usable GPU: {:?}",
        cuda::probe()
    );
    Some(format!(
        "needs a CUDA GPU ({:?}); on a GPU machine these run, and SMITH_REQUIRE_CUDA=1 makes a missing GPU a failure",
        cuda::probe()
    ))
}

/// The first GPU, held for this test, if one is usable.
pub fn gpu() -> Option<(Device, std::sync::MutexGuard<'static, ()>)> {
    if needs_gpu().is_some() {
        return None;
    }
    Some((
        Device::Cuda(0),
        GPU_LOCK.lock().unwrap_or_else(|e| e.into_inner()),
    ))
}

/// The first GPU, held for this test: for tests the suite runs only where
/// [`needs_gpu`] finds one.
pub fn require_gpu() -> (Device, std::sync::MutexGuard<'static, ()>) {
    match gpu() {
        Some(g) => g,
        None => panic!("{}", needs_gpu().unwrap_or_default()),
    }
}

/// Relative error of a result, which must not hold a NaN the reference lacks.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(
        got.iter().all(|v| !v.is_nan()) || want.iter().any(|v| v.is_nan()),
        "NaN in the result, none in the reference"
    );
    super::rel_err(got, want)
}

/// The tolerance of a result in `dtype` against a reference.
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-12,
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

/// The float dtypes every op runs in.
pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Standard normal f32 values on the CPU.
pub fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, rng).unwrap()
}

/// The float inputs converted to `dtype` (others as they are), on `device`.
fn inputs_as(inputs: &[Tensor], dtype: DType, device: Device) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|t| {
            let t = if t.dtype().is_float() {
                t.to_dtype(dtype).unwrap()
            } else {
                t.clone()
            };
            t.to_device(device).unwrap()
        })
        .collect()
}

/// Compares `got` with `want` (same shape, `got` on `device`) within `tolerance`.
fn compare(name: &str, what: &str, got: &Tensor, want: &Tensor, device: Device, tolerance: f64) {
    assert_eq!(got.device(), device, "{name}: result left {device}");
    assert_eq!(got.shape(), want.shape(), "{name}");
    let err = rel_err(&got.to_vec_f64().unwrap(), &want.to_vec_f64().unwrap());
    assert!(
        err <= tolerance,
        "{name} {what}: relative error {err:e} (tolerance {tolerance:e})"
    );
    eprintln!("{name} {what}: relative error {err:.1e}");
}

/// Runs `f` on `inputs` (float inputs in `dtype`) on every device present: on the CPU
/// against the same `f` on the inputs in f64 (the reference), and on a GPU against the
/// CPU in the same dtype, both within `tolerance`.
pub fn check(
    name: &str,
    inputs: &[Tensor],
    dtype: DType,
    tolerance: f64,
    f: impl Fn(&[Tensor]) -> smith::Result<Tensor>,
) {
    let cpu_in = inputs_as(inputs, dtype, Device::Cpu);
    let want = f(&cpu_in).unwrap_or_else(|e| panic!("{name} {dtype} on cpu: {e}"));
    // The reference sees exactly the CPU's inputs (every f32, f16 and bf16 value is an
    // f64), so the difference is the op's own rounding.
    let reference = f(&inputs_as(&cpu_in, DType::F64, Device::Cpu))
        .unwrap_or_else(|e| panic!("{name} in f64 on cpu: {e}"));
    compare(
        name,
        &format!("{dtype} cpu vs f64"),
        &want,
        &reference,
        Device::Cpu,
        tolerance,
    );
    let Some((dev, _gpu)) = gpu() else { return };
    let got = f(&inputs_as(&cpu_in, dtype, dev))
        .unwrap_or_else(|e| panic!("{name} {dtype} on cuda: {e}"));
    assert_eq!(got.dtype(), want.dtype(), "{name}");
    compare(
        name,
        &format!("{dtype} cuda vs cpu"),
        &got,
        &want,
        dev,
        tolerance,
    );
}

/// Names of the kernels `f` launches on the GPU (through the profiler).
pub fn kernels_run(f: impl FnOnce()) -> Vec<String> {
    let _scope = smith::profile::scope();
    smith::profile::take_report().unwrap();
    f();
    let report = smith::profile::take_report().unwrap();
    report.kernels.into_iter().map(|k| k.name).collect()
}

/// Every tensor of a Llama moved to `dev` (through its parameter list).
pub fn move_llama(m: smith::models::Llama, dev: Device) -> smith::models::Llama {
    let mut w = std::collections::HashMap::new();
    for p in m.params() {
        w.insert(p.name.clone(), p.tensor.clone());
    }
    let on_gpu = smith::models::Llama::with_init_std(m.cfg, 0.0, &mut Rng::new(0), dev)
        .unwrap()
        .to_dtype(m.embed.weight.dtype())
        .unwrap();
    smith::nn::assign_params(&on_gpu.params(), &w).unwrap();
    on_gpu
}
