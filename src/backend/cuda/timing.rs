//! Per-kernel GPU times (CUDA events around each launch, only while profiling) and the
//! memory this process holds on each device.

use super::{cuda_err, CudaDevice};
use crate::Result;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Kernel launches whose events are resolved into totals in one go.
const FOLD_EVERY: usize = 4096;
/// Kernel executions kept for the Chrome trace (totals keep counting beyond).
const TRACE_LIMIT: usize = 200_000;

/// What the profiler gathered on one device.
#[derive(Default)]
pub(crate) struct Timings {
    pending: Vec<(String, CudaEvent, CudaEvent)>,
    origin: Option<CudaEvent>,
    /// name -> (calls, total milliseconds)
    pub(crate) totals: BTreeMap<String, (u64, f64)>,
    /// (name, start ms since the first timed kernel, duration ms)
    pub(crate) trace: Vec<(String, f64, f64)>,
}

impl CudaDevice {
    fn timed_event(&self) -> Result<CudaEvent> {
        let e = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| cuda_err("profile", e))?;
        e.record(&self.stream).map_err(|e| cuda_err("profile", e))?;
        Ok(e)
    }

    /// Marks the start of a timed kernel.
    pub(crate) fn timing_start(&self) -> Result<CudaEvent> {
        let mut t = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        if t.origin.is_none() {
            t.origin = Some(self.timed_event()?);
        }
        drop(t);
        self.timed_event()
    }

    /// Marks the end of the kernel started at `start`.
    pub(crate) fn timing_end(&self, name: &str, start: CudaEvent) -> Result<()> {
        let end = self.timed_event()?;
        let mut t = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        t.pending.push((name.to_string(), start, end));
        if t.pending.len() >= FOLD_EVERY {
            fold(&mut t)?;
        }
        Ok(())
    }

    /// Everything timed so far (waits for the GPU), leaving the profiler empty.
    pub(crate) fn take_timings(&self) -> Result<Timings> {
        let mut t = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        fold(&mut t)?;
        Ok(std::mem::take(&mut *t))
    }

    /// Bytes of device memory held by live tensors now, and the most ever held at once.
    pub fn memory_in_use(&self) -> (usize, usize) {
        (
            self.in_use.load(Ordering::Relaxed),
            self.peak.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn track_alloc(&self, bytes: usize) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn track_free(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Resolves pending events into totals and trace entries.
fn fold(t: &mut Timings) -> Result<()> {
    let pending = std::mem::take(&mut t.pending);
    for (name, start, end) in pending {
        let ms = start.elapsed_ms(&end).map_err(|e| cuda_err("profile", e))? as f64;
        let at = match &t.origin {
            Some(o) => o.elapsed_ms(&start).map_err(|e| cuda_err("profile", e))? as f64,
            None => 0.0,
        };
        let entry = t.totals.entry(name.clone()).or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 += ms;
        if t.trace.len() < TRACE_LIMIT {
            t.trace.push((name, at, ms));
        }
    }
    Ok(())
}
