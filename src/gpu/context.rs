//! The GPU context: one device + queue (owned or borrowed), its limits and features, the buffer
//! pool, the kernel cache and the command recorder.
//!
//! There is no global state: every tensor holds a clone of the [`Gpu`] it lives on, so several
//! contexts (several devices, or cads next to a host application's own work) coexist.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use super::adapter::{select_adapter, AdapterChoice};
use super::cooperative::{f16_fragment, CooperativeMatrix};
use super::kernel::KernelCache;
use super::pool::{BufferPool, PoolStats};
use super::profile::Profiler;
use super::recorder::Recorder;
use super::tuning::Tuner;
use crate::error::{Error, Result};

/// The environment variable that withholds `SHADER_F16` from devices [`Gpu::with_choice`]
/// creates (`1`; unset or `0`: the adapter's features).
pub const NO_F16_ENV: &str = "CADS_NO_F16";

/// Optional device features cads can use, detected from the adapter and enabled on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceFeatures {
    /// `SHADER_F16`: f16 arithmetic in shaders (optional storage/compute path).
    pub f16: bool,
    /// `SUBGROUP`: subgroup operations.
    pub subgroups: bool,
    /// `TIMESTAMP_QUERY`: GPU timestamps at pass boundaries.
    pub timestamps: bool,
    /// `TIMESTAMP_QUERY_INSIDE_ENCODERS`: timestamps between passes of one encoder.
    pub timestamps_in_encoders: bool,
    /// `SHADER_FLOAT32_ATOMIC`: atomic f32 add in storage buffers.
    pub float_atomics: bool,
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` enabled with a square f16 × f16 + f32 configuration:
    /// its fragment size (8 or 16), used by the f16 matmul (src/gpu/cooperative.rs).
    pub cooperative_matrix: Option<u32>,
}

impl DeviceFeatures {
    /// The features of a device with wgpu features `f`; `fragment` is the cooperative-matrix
    /// fragment size found among the adapter's configurations (counted only when the device has
    /// the feature).
    fn from_wgpu(f: wgpu::Features, fragment: Option<u32>) -> Self {
        DeviceFeatures {
            cooperative_matrix: fragment.filter(|_| {
                f.contains(
                    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
                        | wgpu::Features::SHADER_F16
                        | wgpu::Features::SUBGROUP,
                )
            }),
            f16: f.contains(wgpu::Features::SHADER_F16),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamps_in_encoders: f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
            float_atomics: f.contains(wgpu::Features::SHADER_FLOAT32_ATOMIC),
        }
    }

    /// The subset of `wanted` features that cads asks for when it creates the device.
    fn optional_wgpu() -> wgpu::Features {
        wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SHADER_FLOAT32_ATOMIC
    }
}

/// What the adapter is, for `cads info` and benchmark reports.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    /// The largest subgroup the adapter runs (32 on NVIDIA; on lavapipe the lanes of one SIMD
    /// row: 8 at its default 256-bit vectors, 16 at `LP_NATIVE_VECTOR_WIDTH=512`).
    pub subgroup_max_size: u32,
    /// The smallest subgroup the adapter may run (never below 4; lavapipe 8, NVIDIA 32). A
    /// kernel that broadcasts from lane q needs more than q lanes in every subgroup
    /// (src/ops/subgroup_broadcast.rs).
    pub subgroup_min_size: u32,
}

pub(crate) struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: DeviceFeatures,
    pub pool: BufferPool,
    pub kernels: KernelCache,
    pub recorder: Mutex<Recorder>,
    /// Per-kernel timing, off unless `set_profiling(true)`.
    pub profiler: Profiler,
    /// Set by the device-lost callback (owned devices) or when a map/poll reports loss.
    pub lost: Arc<Mutex<Option<String>>>,
    /// First uncaptured wgpu error since the last check (owned devices).
    pub error: Arc<Mutex<Option<String>>>,
    /// `no_grad` nesting depth per thread; > 0 means ops on that thread do not record. Kept per
    /// context and per thread so one thread's evaluation never switches off another's tape.
    pub no_grad_depth: Mutex<HashMap<ThreadId, usize>>,
    /// Autocast policy per thread (src/gpu/autocast.rs); absent means `Precision::F32`.
    pub autocast: Mutex<HashMap<ThreadId, super::autocast::Precision>>,
    /// Source of tensor ids and tape sequence numbers.
    pub counter: AtomicU64,
    /// Per-adapter kernel variant choices (src/gpu/tuning.rs).
    pub tuner: Tuner,
}

/// A handle to one device. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpu({} on {:?})",
            self.inner.adapter.name, self.inner.adapter.backend
        )
    }
}

impl Gpu {
    /// Best adapter, honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`.
    pub fn new() -> Result<Gpu> {
        Self::with_choice(&AdapterChoice::from_env())
    }

    /// Adapter chosen by `choice`; the device gets the adapter's real limits and every optional
    /// feature cads can use that the adapter has, except `SHADER_F16` when the environment has
    /// `CADS_NO_F16=1` ([`NO_F16_ENV`]: the device then behaves as an adapter without f16, e.g.
    /// `--precision amp` trains in f32; for tests of that fallback and as a workaround for a
    /// driver whose f16 is broken). Cooperative matrices follow `CADS_COOPERATIVE_MATRIX`
    /// (src/gpu/cooperative.rs).
    pub fn with_choice(choice: &AdapterChoice) -> Result<Gpu> {
        let withheld = match std::env::var(NO_F16_ENV).ok().as_deref() {
            None | Some("") | Some("0") => wgpu::Features::empty(),
            Some("1") => wgpu::Features::SHADER_F16,
            Some(other) => {
                return Err(Error::invalid(
                    "Gpu::with_choice",
                    format!("{NO_F16_ENV} unset, 0 or 1"),
                    other,
                ))
            }
        };
        Self::with_choice_withholding(choice, withheld)
    }

    /// [`Gpu::with_choice`] with an explicit cooperative-matrix policy instead of the
    /// environment's (tests of the cooperative kernels on a CPU adapter ask for `On`).
    pub fn with_choice_cooperative(
        choice: &AdapterChoice,
        cooperative: CooperativeMatrix,
    ) -> Result<Gpu> {
        Self::create(choice, wgpu::Features::empty(), cooperative)
    }

    /// [`Gpu::with_choice`] on a device created without the optional features in `withheld`,
    /// even where the adapter has them, so the device behaves like an adapter that lacks them:
    /// tests of the fallback paths (e.g. `SHADER_F16` withheld: mixed precision runs f32), or a
    /// workaround for a driver whose implementation of one feature is broken.
    pub fn with_choice_withholding(
        choice: &AdapterChoice,
        withheld: wgpu::Features,
    ) -> Result<Gpu> {
        Self::create(choice, withheld, CooperativeMatrix::from_env()?)
    }

    fn create(
        choice: &AdapterChoice,
        withheld: wgpu::Features,
        cooperative: CooperativeMatrix,
    ) -> Result<Gpu> {
        pollster::block_on(async {
            let (_instance, adapter) = select_adapter(choice).await?;
            let info = adapter.get_info();
            let mut features = adapter.features() & DeviceFeatures::optional_wgpu() & !withheld;
            // Cooperative matrices only with a configuration our kernels use, with f16 and
            // subgroups (the kernels need both), and where the policy asks for them.
            let coop = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            let fragment = f16_fragment(&adapter.cooperative_matrix_properties());
            let needs = coop | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
            let with_coop = fragment.is_some()
                && cooperative.wanted(info.device_type)
                && (adapter.features() & !withheld).contains(needs);
            if with_coop {
                features |= coop;
            }
            let experimental_features = if with_coop {
                // SAFETY: wgpu marks its cooperative-matrix support experimental (its bugs may be
                // undefined behaviour). cads opts in only for the f16 matmul kernels, only on
                // adapters that report a configuration they use, and by default only on GPUs;
                // CADS_COOPERATIVE_MATRIX=off keeps every device free of it.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            };
            let limits = adapter.limits();
            let (device, queue) = adapter
                .request_device(&wgpu::DeviceDescriptor {
                    label: Some("cads"),
                    required_features: features,
                    required_limits: limits.clone(),
                    experimental_features,
                    memory_hints: wgpu::MemoryHints::Performance,
                    trace: wgpu::Trace::Off,
                })
                .await
                .map_err(|e| Error::DeviceRequest {
                    adapter: info.name.clone(),
                    reason: e.to_string(),
                })?;
            let gpu = Self::build(device, queue, summary(&info), fragment);
            // Only an owned device gets our handlers: a host's device keeps the host's own.
            let lost = gpu.inner.lost.clone();
            gpu.inner
                .device
                .set_device_lost_callback(move |reason, msg| {
                    *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("{reason:?}: {msg}"));
                });
            let err = gpu.inner.error.clone();
            gpu.inner
                .device
                .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                    let mut slot = err.lock().unwrap_or_else(|e| e.into_inner());
                    if slot.is_none() {
                        *slot = Some(e.to_string());
                    }
                }));
            Ok(gpu)
        })
    }

    /// Run on a device and queue that a host application already owns (embedding). cads uses the
    /// device's current limits and features and installs no callbacks on it. A device cannot
    /// tell which cooperative-matrix configurations its adapter has, so the f16 matmul uses none
    /// on a borrowed device.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Gpu {
        let info = device.adapter_info();
        Self::build(device, queue, summary(&info), None)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter: AdapterSummary,
        fragment: Option<u32>,
    ) -> Gpu {
        let limits = device.limits();
        let features = DeviceFeatures::from_wgpu(device.features(), fragment);
        Gpu {
            inner: Arc::new(GpuInner {
                pool: BufferPool::new(device.clone()),
                recorder: Mutex::new(Recorder::default()),
                profiler: Profiler::default(),
                device,
                queue,
                adapter,
                limits,
                features,
                kernels: KernelCache::default(),
                lost: Arc::new(Mutex::new(None)),
                error: Arc::new(Mutex::new(None)),
                no_grad_depth: Mutex::new(HashMap::new()),
                autocast: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(1),
                tuner: Tuner::from_env(),
            }),
        }
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    pub fn adapter(&self) -> &AdapterSummary {
        &self.inner.adapter
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    pub fn features(&self) -> DeviceFeatures {
        self.inner.features
    }
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }
    pub fn reset_peak_memory(&self) {
        self.inner.pool.reset_peak()
    }
    /// Give cached free buffers back to the driver.
    pub fn trim_pool(&self) {
        // Cached bind groups hold their buffers: drop them first so the freed buffers go.
        self.clear_bind_groups();
        self.inner.pool.trim()
    }
    pub(crate) fn pool(&self) -> &BufferPool {
        &self.inner.pool
    }

    /// The largest tensor, in bytes, that one storage binding can hold on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner
            .limits
            .max_storage_buffer_binding_size
            .min(self.inner.limits.max_buffer_size)
    }

    /// Check a tensor size against the device limits before any wgpu call can panic on it.
    pub fn check_bytes(&self, op: &'static str, bytes: u64) -> Result<()> {
        let binding = self.inner.limits.max_storage_buffer_binding_size;
        if bytes > binding {
            return Err(Error::TooLarge {
                op,
                bytes,
                limit: binding,
                which: "max_storage_buffer_binding_size",
            });
        }
        if bytes > self.inner.limits.max_buffer_size {
            return Err(Error::TooLarge {
                op,
                bytes,
                limit: self.inner.limits.max_buffer_size,
                which: "max_buffer_size",
            });
        }
        Ok(())
    }

    /// Fail fast if the device was lost or wgpu reported an error since the last check.
    pub(crate) fn check_health(&self, op: &'static str) -> Result<()> {
        if let Some(reason) = self
            .inner
            .lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(Error::DeviceLost { op, reason });
        }
        if let Some(message) = self
            .inner
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(Error::Gpu { op, message });
        }
        Ok(())
    }

    /// Mark the device lost (used when a map or poll reports it).
    pub(crate) fn mark_lost(&self, reason: String) {
        *self.inner.lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether ops on this thread record onto the autograd tape right now.
    pub fn grad_enabled(&self) -> bool {
        let depths = self
            .inner
            .no_grad_depth
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        depths
            .get(&std::thread::current().id())
            .copied()
            .unwrap_or(0)
            == 0
    }

    /// Run `f` with recording disabled on this thread (evaluation, EMA updates, optimizer steps).
    pub fn no_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Gpu);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let mut depths = self
                    .0
                    .inner
                    .no_grad_depth
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let id = std::thread::current().id();
                if let Some(d) = depths.get_mut(&id) {
                    *d -= 1;
                    if *d == 0 {
                        depths.remove(&id);
                    }
                }
            }
        }
        *self
            .inner
            .no_grad_depth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(std::thread::current().id())
            .or_insert(0) += 1;
        let _restore = Restore(self);
        f()
    }

    /// Run `f` with recording enabled on this thread even inside `no_grad` (e.g. a backward
    /// closure that recomputes a checkpointed block under the tape); the enclosing `no_grad`
    /// depth is restored afterwards, also when `f` panics.
    pub fn enable_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Gpu, usize);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let mut depths = self
                    .0
                    .inner
                    .no_grad_depth
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let id = std::thread::current().id();
                if self.1 == 0 {
                    depths.remove(&id);
                } else {
                    depths.insert(id, self.1);
                }
            }
        }
        let saved = self
            .inner
            .no_grad_depth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&std::thread::current().id())
            .unwrap_or(0);
        let _restore = Restore(self, saved);
        f()
    }

    /// True when both handles are the same context.
    pub fn same(&self, other: &Gpu) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

fn summary(info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: info.backend,
        device_type: info.device_type,
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        subgroup_max_size: info.subgroup_max_size,
        subgroup_min_size: info.subgroup_min_size,
    }
}
