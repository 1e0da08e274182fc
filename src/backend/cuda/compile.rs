//! Kernel sources embedded in the binary, compiled by NVRTC for the GPU present, and cached
//! on disk (key: source hash, architecture, NVRTC version; a damaged entry is rebuilt).

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The header every kernel source starts with.
const PRELUDE: &str = include_str!("../../../kernels/prelude.cuh");

/// Every kernel module: (name, CUDA C source).
pub const SOURCES: &[(&str, &str)] = &[
    (
        "elementwise",
        include_str!("../../../kernels/elementwise.cu"),
    ),
    ("reduce", include_str!("../../../kernels/reduce.cu")),
    ("nn", include_str!("../../../kernels/nn.cu")),
    ("index", include_str!("../../../kernels/index.cu")),
    ("optim", include_str!("../../../kernels/optim.cu")),
    ("quant", include_str!("../../../kernels/quant.cu")),
    ("attention", include_str!("../../../kernels/attention.cu")),
    ("gemv", include_str!("../../../kernels/gemv.cu")),
    ("batch_norm", include_str!("../../../kernels/batch_norm.cu")),
    (
        "flash",
        concat!(
            include_str!("../../../kernels/mma.cuh"),
            include_str!("../../../kernels/flash.cu"),
            include_str!("../../../kernels/flash_wgmma.cu")
        ),
    ),
    (
        "conv",
        concat!(
            include_str!("../../../kernels/mma.cuh"),
            include_str!("../../../kernels/conv.cu")
        ),
    ),
];

/// The architecture module `name` is built for on a GPU of `arch`: the attention module
/// uses Hopper's warpgroup instructions, which exist in sm_90a code only.
pub fn module_arch(name: &str, arch: &str) -> String {
    if name == "flash" && arch == "sm_90" {
        "sm_90a".to_string()
    } else {
        arch.to_string()
    }
}

/// The complete source of a module as NVRTC sees it.
pub fn full_source(name: &str) -> Result<String> {
    let src = SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::invalid("cuda", format!("no kernel module named `{name}`")))?;
    let codes = crate::backend::op_kinds::cuda_op_defines();
    Ok(format!("{PRELUDE}\n{codes}\n{src}"))
}

/// True when the NVRTC library can be loaded.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the shared library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    if !nvrtc_available() {
        return Err(nvrtc_missing());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; the call writes two ints.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::invalid(
            "nvrtc",
            format!("nvrtcVersion failed: {status:?}"),
        ));
    }
    Ok((major, minor))
}

fn nvrtc_missing() -> Error {
    Error::invalid(
        "nvrtc",
        "the NVRTC library (libnvrtc.so) was not found: install the CUDA toolkit's runtime \
         libraries or `pip install nvidia-cuda-nvrtc`, and make sure LD_LIBRARY_PATH reaches it",
    )
}

/// Folders that hold `cuda_fp16.h`: `SMITH_CUDA_INCLUDE`, `CUDA_HOME`/`CUDA_PATH`, the usual
/// install places, and the NVIDIA PyPI wheels of any Python on the machine.
pub fn include_dirs() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("SMITH_CUDA_INCLUDE") {
        candidates.push(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Ok(p) = std::env::var(var) {
            candidates.push(Path::new(&p).join("include"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.push(PathBuf::from("/opt/cuda/include"));
    candidates.push(PathBuf::from("/usr/include"));
    // NVIDIA's PyPI wheels (nvidia-cuda-runtime) under any site-packages we can find.
    let mut roots: Vec<PathBuf> = vec!["/usr/local/lib".into(), "/usr/lib".into(), "/opt".into()];
    if let Ok(home) = std::env::var("HOME") {
        roots.push(Path::new(&home).join(".local/lib"));
        roots.push(Path::new(&home).join(".cache/smith-nvrtc"));
    }
    if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
        roots.push(Path::new(&venv).join("lib"));
    }
    for root in roots {
        find_wheel_headers(&root, 0, &mut candidates);
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for d in candidates {
        if d.join("cuda_fp16.h").is_file() && !found.contains(&d) {
            found.push(d);
        }
    }
    found
}

/// Looks a few levels down for `nvidia/{cu13,cuda_runtime}/include`.
fn find_wheel_headers(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    for sub in ["nvidia/cu13/include", "nvidia/cuda_runtime/include"] {
        let p = dir.join(sub);
        if p.is_dir() {
            out.push(p);
        }
    }
    if depth >= 4 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let interesting = name.starts_with("python")
            || name == "site-packages"
            || name == "dist-packages"
            || name == "lib"
            || name.starts_with('.') && name.contains("venv")
            || name == "torch";
        if interesting && e.path().is_dir() {
            find_wheel_headers(&e.path(), depth + 1, out);
        }
    }
}

/// FNV-1a, 64 bits: the cache key and the integrity check of cached PTX.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where compiled kernels are kept between runs.
pub fn cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("SMITH_KERNEL_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|_| std::env::temp_dir());
    base.join("smith").join("kernels")
}

const CHECK_PREFIX: &str = "// smith-ptx-checksum ";

/// Compiles module `name` to PTX for `arch` (e.g. `sm_90`) with NVRTC, without any cache.
pub fn compile_uncached(name: &str, arch: &str) -> Result<String> {
    if !nvrtc_available() {
        return Err(nvrtc_missing());
    }
    let source = full_source(name)?;
    let includes = include_dirs();
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    options.extend(
        includes
            .iter()
            .map(|d| format!("--include-path={}", d.display())),
    );
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, opts).map_err(|e| {
        let hint = if includes.is_empty() {
            " (no folder with cuda_fp16.h was found: set SMITH_CUDA_INCLUDE or CUDA_HOME, or `pip install nvidia-cuda-runtime`)"
        } else {
            ""
        };
        Error::invalid("nvrtc", format!("compiling kernels `{name}` for {arch} failed: {e:?}{hint}"))
    })?;
    Ok(ptx.to_src())
}

/// PTX for module `name` on `arch`, from the disk cache when a valid entry exists.
pub fn compile(name: &str, arch: &str) -> Result<String> {
    let (major, minor) = nvrtc_version()?;
    let source = full_source(name)?;
    let key = format!(
        "{name}-{arch}-nvrtc{major}.{minor}-{:016x}.ptx",
        fnv1a(source.as_bytes())
    );
    let path = cache_dir().join(key);
    if let Ok(cached) = std::fs::read_to_string(&path) {
        if let Some((head, body)) = cached.split_once('\n') {
            if head.strip_prefix(CHECK_PREFIX) == Some(&format!("{:016x}", fnv1a(body.as_bytes())))
            {
                return Ok(body.to_string());
            }
        }
        // Damaged or truncated: fall through and rebuild it.
    }
    let ptx = compile_uncached(name, arch)?;
    let entry = format!("{CHECK_PREFIX}{:016x}\n{ptx}", fnv1a(ptx.as_bytes()));
    if let Some(dir) = path.parent() {
        // A cache that cannot be written only costs a recompile next time.
        if std::fs::create_dir_all(dir).is_ok() {
            let _ = crate::atomic_file::write_atomic(&path, entry.as_bytes());
        }
    }
    Ok(ptx)
}
