//! Per-kernel time profile: which kernels a workload spends its time in.
//!
//! While profiling is on, every launch is bracketed by a wait for the device to go idle, so each
//! kernel's wall time is measured on its own (submit + execute + wait). That serialises the
//! stream and adds a fixed cost per launch (tens of µs), so absolute times are pessimistic on a
//! fast GPU; the shares between kernels are what the profile is for. Off by default; a workload
//! is profiled with [`Gpu::set_profiling`] and read with [`Gpu::take_profile`] (`cads bench`
//! does both per case when `CADS_PROFILE` is set; `CADS_PROFILE=grid` keys the rows by grid
//! too, see [`Gpu::set_profiling_by_grid`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::context::Gpu;

/// Accumulated launches and time of one kernel entry point.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `shader::entry`.
    pub kernel: String,
    pub launches: u64,
    /// Total wall milliseconds over all launches.
    pub ms: f64,
}

#[derive(Default)]
pub(crate) struct Profiler {
    enabled: AtomicBool,
    /// Key each launch by its grid too, so one entry point's shapes show apart.
    by_grid: AtomicBool,
    table: Mutex<HashMap<String, (u64, f64)>>,
}

impl Profiler {
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn by_grid(&self) -> bool {
        self.by_grid.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, kernel: String, ms: f64) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let e = t.entry(kernel).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += ms;
    }
}

impl Gpu {
    /// Turn per-kernel timing on or off (see the module docs for its cost).
    pub fn set_profiling(&self, on: bool) {
        self.inner.profiler.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether per-kernel timing is on.
    pub fn is_profiling(&self) -> bool {
        self.inner.profiler.enabled()
    }

    /// While profiling, key each row by kernel *and* grid (`shader::entry Xyz(..)`), so the
    /// launches of one entry point over different shapes are timed apart.
    pub fn set_profiling_by_grid(&self, on: bool) {
        self.inner.profiler.by_grid.store(on, Ordering::Relaxed);
    }

    /// The kernels timed since the last call, most time first; clears the table.
    pub fn take_profile(&self) -> Vec<KernelTime> {
        let mut t = self
            .inner
            .profiler
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<KernelTime> = t
            .drain()
            .map(|(kernel, (launches, ms))| KernelTime {
                kernel,
                launches,
                ms,
            })
            .collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        rows
    }
}
