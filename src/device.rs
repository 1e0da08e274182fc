//! Where a tensor's storage lives.

use std::fmt;

/// A compute device. The CPU backend is always present and is the reference for every op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory, multithreaded CPU kernels.
    Cpu,
    /// The n-th CUDA GPU.
    Cuda(usize),
}

impl Device {
    /// Resolves a user's device choice (`cpu`, `cuda`, `cuda:N` or `auto`) to a usable device.
    ///
    /// `auto` picks a GPU when one can be used and the CPU otherwise; asking for `cuda`
    /// explicitly on a build or machine without CUDA support is an error that says so.
    pub fn parse(spec: &str) -> crate::Result<Device> {
        match spec {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(if cuda_available() {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }),
            s if s == "cuda" || s.starts_with("cuda:") => {
                let n = match s.strip_prefix("cuda:") {
                    Some(i) => i.parse::<usize>().map_err(|_| {
                        crate::Error::invalid("device", format!("bad device ordinal in `{s}`"))
                    })?,
                    None => 0,
                };
                crate::backend::cuda::device(n)?;
                Ok(Device::Cuda(n))
            }
            other => Err(crate::Error::invalid(
                "device",
                format!("unknown device `{other}` (expected cpu, cuda, cuda:N or auto)"),
            )),
        }
    }
}

impl Device {
    /// Whether this device can be used here; the error says why not (no driver, no such
    /// GPU).
    pub fn check(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(n) => crate::backend::cuda::device(n).map(|_| ()),
        }
    }

    /// Bytes held by this process's tensors on a GPU now, and the most held at once
    /// (`None` for the CPU, whose memory is not tracked).
    pub fn memory_stats(self) -> crate::Result<Option<(usize, usize)>> {
        match self {
            Device::Cpu => Ok(None),
            Device::Cuda(n) => Ok(Some(crate::backend::cuda::device(n)?.memory_in_use())),
        }
    }
}

/// Whether a CUDA device can be used on this machine (driver, NVRTC and cuBLAS loadable,
/// at least one GPU).
pub fn cuda_available() -> bool {
    crate::backend::cuda::probe().is_ok() && crate::backend::cuda::device(0).is_ok()
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
