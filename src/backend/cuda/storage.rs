//! Device buffers: bytes on one GPU with a dtype, and host↔device copies.

use super::{cuda_err, CudaDevice};
use crate::backend::cpu::{self, CpuStorage};
use crate::{DType, Error, Layout, Result};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};
use std::sync::Arc;

/// A typed buffer in GPU memory. Allocation is stream-ordered (the driver's memory pool), so
/// freeing and reusing memory never waits for the GPU.
pub struct CudaStorage {
    /// Taken back into the device's pool when the storage drops.
    pub(crate) buf: std::mem::ManuallyDrop<CudaSlice<u8>>,
    /// Bytes of the buffer (its pool size class, at least the elements' bytes).
    pub(crate) capacity: usize,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) dev: Arc<CudaDevice>,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({} x {} on cuda:{})",
            self.len, self.dtype, self.dev.ordinal
        )
    }
}

/// A layout passed to kernels by value (matches `Strided` in kernels/prelude.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided {
    shape: [i64; 8],
    strides: [i64; 8],
    rank: i32,
    contiguous: i32,
}

// SAFETY: plain old data with the same layout as the C struct.
unsafe impl DeviceRepr for Strided {}

impl Strided {
    /// The kernel-side description of `layout` (its offset is applied to the pointer).
    pub(crate) fn of(layout: &Layout) -> Result<Strided> {
        if layout.rank() > 8 {
            return Err(Error::invalid(
                "cuda",
                format!(
                    "rank {} is above the 8 dimensions CUDA kernels support",
                    layout.rank()
                ),
            ));
        }
        let mut s = Strided {
            shape: [1; 8],
            strides: [0; 8],
            rank: layout.rank() as i32,
            contiguous: layout.is_contiguous() as i32,
        };
        for d in 0..layout.rank() {
            s.shape[d] = layout.shape()[d] as i64;
            s.strides[d] = layout.strides()[d] as i64;
        }
        Ok(s)
    }
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        self.dev.track_free(self.capacity);
        // SAFETY: `buf` is never used again after this point.
        let buf = unsafe { std::mem::ManuallyDrop::take(&mut self.buf) };
        self.dev.return_buffer(buf, self.capacity);
    }
}

/// Suffix of kernel names for a dtype.
pub(crate) fn suffix(dtype: DType) -> &'static str {
    dtype.as_str()
}

impl CudaStorage {
    /// Uninitialised room for `len` elements (callers overwrite every element).
    pub(crate) fn alloc(dev: &Arc<CudaDevice>, dtype: DType, len: usize) -> Result<CudaStorage> {
        let bytes = (len * dtype.size_in_bytes()).max(1);
        let capacity = super::pool::size_class(bytes);
        // The buffer is fully written by the kernel or copy that follows.
        let buf = dev.take_buffer(capacity).map_err(|e| {
            let free = dev.memory_info().map(|(free, _)| free).unwrap_or(0);
            Error::invalid(
                "cuda alloc",
                format!(
                    "out of memory? could not allocate {bytes} bytes on cuda:{}: {} bytes held by smith's tensors, {free} bytes free on the device ({e:?})",
                    dev.ordinal,
                    dev.memory_in_use().0
                ),
            )
        })?;
        dev.track_alloc(capacity);
        Ok(CudaStorage {
            buf: std::mem::ManuallyDrop::new(buf),
            capacity,
            dtype,
            len,
            dev: dev.clone(),
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device holding the buffer.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Device address of element `offset`.
    pub(crate) fn ptr(&self, offset: usize) -> u64 {
        let (base, _guard) = self.buf.device_ptr(&self.dev.stream);
        base + (offset * self.dtype.size_in_bytes()) as u64
    }

    /// Copies the elements under `layout` of a host buffer to the GPU (contiguous).
    pub fn from_cpu(dev: &Arc<CudaDevice>, s: &CpuStorage, layout: &Layout) -> Result<CudaStorage> {
        let data = cpu::copy_contiguous(s, layout);
        let bytes = data.to_le_bytes();
        let mut out = CudaStorage::alloc(dev, s.dtype(), layout.numel())?;
        if !bytes.is_empty() {
            dev.stream
                .memcpy_htod(&bytes, &mut out.buf.slice_mut(0..bytes.len()))
                .map_err(|e| cuda_err("to_device", e))?;
        }
        Ok(out)
    }

    /// Copies the elements under `layout` back to the host (waits for the GPU).
    pub fn to_cpu(&self, layout: &Layout) -> Result<CpuStorage> {
        let n = self.len * self.dtype.size_in_bytes();
        let mut bytes = vec![0u8; n];
        if n > 0 {
            self.dev
                .stream
                .memcpy_dtoh(&self.buf.slice(0..n), &mut bytes)
                .map_err(|e| cuda_err("to_host", e))?;
            self.dev.synchronize()?;
        }
        let whole = CpuStorage::from_le_bytes(self.dtype, &bytes);
        Ok(cpu::copy_contiguous(&whole, layout))
    }
}
