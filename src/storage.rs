//! Device storage behind a tensor: one variant per backend.

use crate::backend::cpu::CpuStorage;
use crate::backend::cuda::CudaStorage;
use crate::{DType, Device, Error, Result};

/// A buffer on some device. Views of one tensor share a single `Storage`.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory.
    Cuda(CudaStorage),
}

impl Storage {
    /// Element type of the buffer.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }

    /// Device that holds the buffer.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.device().ordinal),
        }
    }

    /// The host buffer, or an error for ops that do not run on the GPU yet.
    pub fn cpu(&self) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(s) => Err(Error::DeviceUnavailable {
                device: Device::Cuda(s.device().ordinal),
                reason: "this op is not implemented on CUDA yet; move its inputs to the CPU with `to_device(Device::Cpu)`".into(),
            }),
        }
    }

    /// The host buffer, mutably (same rule as [`Storage::cpu`]).
    pub fn cpu_mut(&mut self) -> Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            Storage::Cuda(s) => Err(Error::DeviceUnavailable {
                device: Device::Cuda(s.device().ordinal),
                reason: "in-place updates are not implemented on CUDA yet".into(),
            }),
        }
    }
}
