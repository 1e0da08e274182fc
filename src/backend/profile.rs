//! The profiler: GPU time of every kernel, measured with CUDA events.
//!
//! Turned on by `SMITH_PROFILE=1` in the environment or, from code, for as long as a
//! [`scope`] guard lives. When off, a launch pays one relaxed atomic load.

use crate::backend::cuda;
use crate::{Device, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

static SCOPES: AtomicUsize = AtomicUsize::new(0);

fn env_enabled() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    *ENV.get_or_init(|| {
        matches!(
            std::env::var("SMITH_PROFILE").as_deref(),
            Ok("1") | Ok("true")
        )
    })
}

/// Whether kernels are being timed now.
pub fn enabled() -> bool {
    SCOPES.load(Ordering::Relaxed) > 0 || env_enabled()
}

/// Times kernels until dropped.
pub struct ProfileScope(());

impl Drop for ProfileScope {
    fn drop(&mut self) {
        SCOPES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts timing kernels; timing stops when the guard is dropped (unless `SMITH_PROFILE`).
pub fn scope() -> ProfileScope {
    SCOPES.fetch_add(1, Ordering::Relaxed);
    ProfileScope(())
}

/// One kernel's line in the report.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelStat {
    pub name: String,
    pub calls: u64,
    pub total_ms: f64,
}

/// Kernel times gathered so far, and each device's peak memory.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Slowest total first.
    pub kernels: Vec<KernelStat>,
    /// (device, peak bytes held by tensors)
    pub peak_memory: Vec<(Device, usize)>,
    trace: Vec<(Device, String, f64, f64)>,
}

/// Collects (and clears) everything timed on every device, waiting for the GPUs.
pub fn take_report() -> Result<Report> {
    let mut totals: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut report = Report::default();
    for dev in cuda::initialised() {
        let t = dev.take_timings()?;
        for (name, (calls, ms)) in t.totals {
            let e = totals.entry(name).or_insert((0, 0.0));
            e.0 += calls;
            e.1 += ms;
        }
        let device = Device::Cuda(dev.ordinal);
        report
            .trace
            .extend(t.trace.into_iter().map(|(n, at, ms)| (device, n, at, ms)));
        report.peak_memory.push((device, dev.memory_in_use().1));
    }
    report.kernels = totals
        .into_iter()
        .map(|(name, (calls, total_ms))| KernelStat {
            name,
            calls,
            total_ms,
        })
        .collect();
    report
        .kernels
        .sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    Ok(report)
}

impl Report {
    /// Sum of all kernel times, in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.kernels.iter().map(|k| k.total_ms).sum()
    }

    /// A table of the `top` slowest kernels: calls, total, mean, share; then peak memory.
    pub fn table(&self, top: usize) -> String {
        let total = self.total_ms().max(1e-12);
        let mut s = format!(
            "{:<40} {:>9} {:>12} {:>10} {:>7}\n",
            "kernel", "calls", "total ms", "mean us", "share"
        );
        for k in self.kernels.iter().take(top) {
            s += &format!(
                "{:<40} {:>9} {:>12.3} {:>10.2} {:>6.1}%\n",
                k.name,
                k.calls,
                k.total_ms,
                1e3 * k.total_ms / k.calls.max(1) as f64,
                100.0 * k.total_ms / total
            );
        }
        s += &format!(
            "{:<40} {:>9} {:>12.3}\n",
            "all kernels",
            self.kernels.iter().map(|k| k.calls).sum::<u64>(),
            total
        );
        for (d, bytes) in &self.peak_memory {
            s += &format!(
                "peak memory on {d}: {:.1} MiB\n",
                *bytes as f64 / (1 << 20) as f64
            );
        }
        s
    }

    /// Writes the timed kernels as a Chrome trace (JSON) that Perfetto and chrome://tracing open.
    pub fn write_chrome_trace(&self, path: &Path) -> Result<()> {
        let events: Vec<serde_json::Value> = self
            .trace
            .iter()
            .map(|(d, name, at, ms)| {
                serde_json::json!({
                    "name": name, "ph": "X", "ts": at * 1e3, "dur": ms * 1e3,
                    "pid": d.to_string(), "tid": "stream 0", "cat": "kernel"
                })
            })
            .collect();
        let doc = serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" });
        crate::atomic_file::write_atomic(path, &serde_json::to_vec(&doc)?)
    }
}
