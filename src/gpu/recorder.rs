//! Command recording: launches are appended to one pending command encoder and submitted
//! together, so a training step costs a handful of submits instead of one per op.
//!
//! Consecutive launches share one compute pass: the pass stays open until other encoder work
//! (a copy, a timestamp) or the submit needs the encoder. wgpu treats each dispatch as its own
//! usage scope and puts the barriers between dispatches inside a pass as it does between passes,
//! so the order and visibility of writes are the same; what goes away is a pass's begin and end
//! per launch. On lavapipe a tiny dispatch cost 36–38 µs with a pass of its own and 20–21 µs
//! sharing one (docs/kernel-tuning.md, "What a launch costs").
//!
//! Bind groups come from a cache (src/gpu/bind_cache.rs): a launch that recurs (same kernel,
//! params and buffers) reuses its bind group, whose params already sit in a uniform slot of
//! their own. A chain of tiny adds through `ops::add` on lavapipe: 25–37 µs per launch with a
//! new bind group each, 10–16 µs reusing them.
//!
//! Eviction from that cache frees params slots that later misses rewrite with queued writes,
//! which land before the next submit's commands: the recorder submits before it evicts, so no
//! recorded command can read a rewritten slot. (The evicted half are also the least recently
//! used, older than the MAX_PENDING launches an encoder holds.)
//!
//! Uploads into pooled buffers flush first: a queued write would otherwise land before pending
//! commands that still read the buffer's previous contents.

use super::bind_cache::{BindGroupCache, BindGroupStats, PARAMS_SLOT_BYTES};
use super::context::Gpu;
use super::kernel::{Grid, KernelSpec};
use super::params::ShaderParams;
use crate::error::{Error, Result};

/// Launches recorded before a submit is forced (bounds encoder size and latency).
const MAX_PENDING: u32 = 512;

#[derive(Default)]
pub(crate) struct Recorder {
    /// The open compute pass of `encoder` (declared first: it must end before the encoder goes).
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    pending: u32,
    bind_groups: BindGroupCache,
}

impl Gpu {
    /// Record one dispatch of `spec` over `grid`.
    ///
    /// `inputs` and `outputs` must match the spec's counts; `params` must be the struct whose
    /// size the spec declares. Buffers are bound whole; kernels bound-check with sizes in params.
    ///
    /// This is where every op binds its tensors, so it is where f32 kernels refuse f16 data: a
    /// buffer the pool lent to an f16 tensor fails the launch with [`Error::DTypeMismatch`]
    /// naming the kernel. Kernels written for f16 launch through [`Gpu::dispatch_f16_aware`].
    pub(crate) fn dispatch<P: ShaderParams>(
        &self,
        spec: &KernelSpec,
        params: &P,
        inputs: &[&wgpu::Buffer],
        outputs: &[&wgpu::Buffer],
        grid: Grid,
    ) -> Result<()> {
        let pool = &self.inner.pool;
        if let Some(i) = inputs
            .iter()
            .chain(outputs)
            .position(|b| pool.holds_half(b))
        {
            return Err(Error::DTypeMismatch {
                op: spec.entry,
                expected: format!(
                    "f32 tensors (kernel {}::{} reads f32 only; cast with \
                     Tensor::to_dtype(DType::F32))",
                    spec.shader, spec.entry
                ),
                got: format!("an f16 tensor at binding {}", i + 1),
            });
        }
        self.dispatch_f16_aware(spec, params, inputs, outputs, grid)
    }

    /// [`Gpu::dispatch`] without the f16 check, for kernels that declare f16 (or f16 bit
    /// patterns in u32 words) at the bindings where their launcher passes f16 tensors; the
    /// launcher has checked each tensor's dtype.
    pub(crate) fn dispatch_f16_aware<P: ShaderParams>(
        &self,
        spec: &KernelSpec,
        params: &P,
        inputs: &[&wgpu::Buffer],
        outputs: &[&wgpu::Buffer],
        grid: Grid,
    ) -> Result<()> {
        if !self.inner.profiler.enabled() {
            return self.record_dispatch(spec, params, inputs, outputs, grid);
        }
        // Profiling (src/gpu/profile.rs): this launch alone between two idle points.
        self.synchronize()?;
        let t0 = std::time::Instant::now();
        self.record_dispatch(spec, params, inputs, outputs, grid)?;
        self.synchronize()?;
        let key = if self.inner.profiler.by_grid() {
            format!("{} {:?}", spec.label(), grid)
        } else {
            spec.label()
        };
        self.inner
            .profiler
            .add(key, t0.elapsed().as_secs_f64() * 1e3);
        Ok(())
    }

    fn record_dispatch<P: ShaderParams>(
        &self,
        spec: &KernelSpec,
        params: &P,
        inputs: &[&wgpu::Buffer],
        outputs: &[&wgpu::Buffer],
        grid: Grid,
    ) -> Result<()> {
        let op = spec.entry;
        self.check_health(op)?;
        if inputs.len() != spec.inputs as usize || outputs.len() != spec.outputs as usize {
            return Err(Error::invalid(
                "dispatch",
                format!(
                    "{}::{} with {} inputs and {} outputs",
                    spec.shader, spec.entry, spec.inputs, spec.outputs
                ),
                format!("{} inputs and {} outputs", inputs.len(), outputs.len()),
            ));
        }
        // The spec names the struct its shader mirrors (checked field by field against the WGSL
        // in tests/shaders.rs); passing another struct would bind bytes the shader misreads.
        if P::LAYOUT.name != spec.params.name || P::LAYOUT.size != spec.params.size {
            return Err(Error::invalid(
                "dispatch",
                format!(
                    "{} ({} bytes) for {}::{}",
                    spec.params.name, spec.params.size, spec.shader, spec.entry
                ),
                format!("{} ({} bytes)", P::LAYOUT.name, P::LAYOUT.size),
            ));
        }
        let bytes = bytemuck::bytes_of(params);
        let max = self.inner.limits.max_compute_workgroups_per_dimension;
        let [x, y, z] = grid.resolve(max).ok_or(Error::LaunchTooLarge {
            op,
            workgroups: match grid {
                Grid::Linear(n) => n,
                Grid::Xyz(a, b, c) => a as u64 * b as u64 * c as u64,
            },
            limit: max as u64,
        })?;
        let kernel = self.inner.kernels.get(&self.inner.device, spec);

        if bytes.len() as u64 > PARAMS_SLOT_BYTES {
            return Err(Error::invalid(
                "dispatch",
                format!("params of at most {PARAMS_SLOT_BYTES} bytes (one uniform slot)"),
                format!("{} ({} bytes)", P::LAYOUT.name, bytes.len()),
            ));
        }
        let align = self
            .inner
            .limits
            .min_uniform_buffer_offset_alignment
            .max(16) as u64;
        let mut rec = self.recorder();
        if rec.pending >= MAX_PENDING {
            self.submit_locked(&mut rec);
        }
        if rec.bind_groups.is_full() {
            // Evicted entries' slots are rewritten by later misses: nothing recorded may still
            // read them, so submit first.
            self.submit_locked(&mut rec);
            rec.bind_groups.evict_older_half();
        }
        let buffers: Vec<&wgpu::Buffer> = inputs.iter().chain(outputs.iter()).copied().collect();
        let bind_group = rec.bind_groups.get(
            &self.inner.device,
            &self.inner.queue,
            align,
            &kernel.layout,
            bytes,
            &buffers,
        );
        if rec.pass.is_none() {
            let device = &self.inner.device;
            let pass = rec
                .encoder
                .get_or_insert_with(|| {
                    device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("cads ops"),
                    })
                })
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("cads launches"),
                    timestamp_writes: None,
                })
                .forget_lifetime();
            rec.pass = Some(pass);
        }
        let pass = rec.pass.as_mut().expect("pass just opened");
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
        rec.pending += 1;
        Ok(())
    }

    /// Record arbitrary encoder work (copies, clears, timestamps) in stream order with launches.
    pub(crate) fn encode(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) -> Result<()> {
        self.check_health("encode")?;
        let mut rec = self.recorder();
        // The encoder is locked while a pass is open: end the launches' pass first.
        rec.pass = None;
        let device = &self.inner.device;
        let encoder = rec.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("cads ops"),
            })
        });
        f(encoder);
        rec.pending += 1;
        Ok(())
    }

    /// Record `f` after everything recorded so far and submit it all at once, returning the
    /// submission that holds `f`'s work (another thread's flush cannot slip in between, so the
    /// index is exact; reads from another thread wait for just that submission).
    pub(crate) fn encode_and_submit(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<wgpu::SubmissionIndex> {
        self.check_health(op)?;
        let mut rec = self.recorder();
        // The encoder is locked while a pass is open: end the launches' pass first.
        rec.pass = None;
        let device = &self.inner.device;
        let encoder = rec.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("cads ops"),
            })
        });
        f(encoder);
        rec.pending += 1;
        let index = self.submit_locked(&mut rec).ok_or_else(|| Error::Gpu {
            op,
            message: "nothing to submit after recording a copy".into(),
        })?;
        drop(rec);
        self.check_health(op)?;
        Ok(index)
    }

    /// The recorder, locked; a poisoned lock is taken over, as for every lock of the context.
    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.inner
            .recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn submit_locked(&self, rec: &mut Recorder) -> Option<wgpu::SubmissionIndex> {
        rec.pass = None;
        let encoder = rec.encoder.take()?;
        rec.pending = 0;
        Some(self.inner.queue.submit([encoder.finish()]))
    }

    /// How often launches reused a bind group, and how many are kept (diagnostics: a training
    /// loop reaches a state where almost every launch is a hit).
    pub fn bind_group_stats(&self) -> BindGroupStats {
        self.recorder().bind_groups.stats()
    }

    /// Drop the cached bind groups, and with them their hold on buffers (before the pool trims).
    /// Submits first: recorded commands may still read the freed params slots.
    pub(crate) fn clear_bind_groups(&self) {
        let mut rec = self.recorder();
        self.submit_locked(&mut rec);
        rec.bind_groups.clear();
    }

    /// Submit everything recorded so far (does not wait).
    pub fn flush(&self) -> Result<()> {
        let mut rec = self.recorder();
        self.submit_locked(&mut rec);
        drop(rec);
        self.check_health("flush")
    }

    /// Submit and block until the device is idle.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                op: "synchronize",
                message: e.to_string(),
            })?;
        self.check_health("synchronize")
    }

    /// Copy `bytes` bytes from the start of `buffer` to the host (flushes and waits).
    pub(crate) fn read_bytes(
        &self,
        op: &'static str,
        buffer: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let padded = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("cads readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.encode(|enc| enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, padded))?;
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                op,
                message: e.to_string(),
            })?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.mark_lost(e.to_string());
                return Err(Error::DeviceLost {
                    op,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(Error::DeviceLost {
                    op,
                    reason: "map callback never ran".into(),
                })
            }
        }
        self.check_health(op)?;
        let view = staging.get_mapped_range(..).map_err(|e| Error::Gpu {
            op,
            message: e.to_string(),
        })?;
        let out = view[..bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Write host bytes to the start of `buffer`, after all previously recorded work.
    pub(crate) fn write_bytes(
        &self,
        op: &'static str,
        buffer: &wgpu::Buffer,
        data: &[u8],
    ) -> Result<()> {
        self.flush()?;
        let len = data.len() as u64;
        let aligned = len - len % wgpu::COPY_BUFFER_ALIGNMENT;
        if aligned > 0 {
            self.inner
                .queue
                .write_buffer(buffer, 0, &data[..aligned as usize]);
        }
        if aligned < len {
            let mut tail = [0u8; 4];
            tail[..(len - aligned) as usize].copy_from_slice(&data[aligned as usize..]);
            self.inner.queue.write_buffer(buffer, aligned, &tail);
        }
        self.check_health(op)
    }
}
