//! A caching, stream-ordered pool of device buffers.
//!
//! Every buffer of a device is used on its one stream, so a buffer released by a dropped
//! tensor can be handed to the next allocation of the same size class at once: work queued
//! later on the stream runs after the work that used it. This saves a driver allocation and
//! free per op. Buffers are always fully written by the op that receives them (`zeros` runs
//! a fill kernel), so no stale data is ever visible.

use super::CudaDevice;
use cudarc::driver::{CudaSlice, DriverError};
use std::collections::HashMap;

/// Free buffers by size class, and how many bytes they hold.
#[derive(Default)]
pub(crate) struct Pool {
    free: HashMap<usize, Vec<CudaSlice<u8>>>,
    cached: usize,
}

/// The size class of a request: 512-byte steps up to 1 MiB, then 1 MiB steps.
pub(crate) fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes <= 1 << 20 {
        bytes.div_ceil(512) * 512
    } else {
        bytes.div_ceil(1 << 20) << 20
    }
}

impl CudaDevice {
    /// A buffer of exactly `class` bytes (a size class), reused from the pool when one is
    /// free; on an allocation failure the pool is emptied and the allocation tried again.
    pub(crate) fn take_buffer(&self, class: usize) -> Result<CudaSlice<u8>, DriverError> {
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(buf) = pool.free.get_mut(&class).and_then(|v| v.pop()) {
                pool.cached -= class;
                return Ok(buf);
            }
        }
        // SAFETY: the caller fully writes the buffer before anything reads it.
        match unsafe { self.stream.alloc::<u8>(class) } {
            Ok(buf) => Ok(buf),
            Err(_) => {
                self.release_cached();
                // SAFETY: as above.
                unsafe { self.stream.alloc::<u8>(class) }
            }
        }
    }

    /// Keeps a released buffer of size class `class` for reuse, unless the pool is full.
    pub(crate) fn return_buffer(&self, buf: CudaSlice<u8>, class: usize) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.cached + class <= self.pool_cap {
            pool.cached += class;
            pool.free.entry(class).or_default().push(buf);
            return;
        }
        drop(pool);
        self.free_to_driver(vec![buf]);
    }

    /// Returns every cached buffer to the driver.
    pub fn release_cached(&self) {
        let buffers: Vec<CudaSlice<u8>> = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.cached = 0;
            pool.free.drain().flat_map(|(_, v)| v).collect()
        };
        self.free_to_driver(buffers);
    }

    /// Frees buffers (stream-ordered). The driver needs this device's context current on
    /// the calling thread, which a thread that only reused pooled memory may not have yet.
    fn free_to_driver(&self, buffers: Vec<CudaSlice<u8>>) {
        if buffers.is_empty() {
            return;
        }
        // A failure here leaves the context unbound: the frees then report their own error
        // to the driver's error record, and nothing worse than a leak can follow.
        let _ = self.ctx.bind_to_thread();
        drop(buffers);
    }

    /// Bytes held in the pool for reuse (not counted as in use).
    pub fn cached_bytes(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).cached
    }
}
