//! Reads that do not stall the stream: [`PendingRead`] (a buffer's bytes, collected later) and
//! [`Fence`] (a point in the submission stream to wait for).
//!
//! `Gpu::read_bytes` copies into a staging buffer, maps it and blocks until the whole queue is
//! idle, so the host cannot record step k+1 while the device runs step k. A training loop that
//! logs its loss instead:
//!
//! 1. records step k and [`Gpu::read_bytes_async`] of its loss (the copy is recorded in stream
//!    order after the step, then the mapping is requested);
//! 2. records step k+1, and only then asks [`PendingRead::ready`] (one non-blocking device poll)
//!    whether step k's bytes have landed.
//!
//! The device always has the next step queued while the host reads the previous one. A host that
//! never waits can run arbitrarily far ahead (every step's uploads are staged in host memory
//! until the device gets to them); [`Fence`] bounds that: waiting for the fence of step k − 1
//! after recording step k keeps the host at most one step ahead without idling the device.

use std::sync::{Arc, Mutex};

use super::context::Gpu;
use crate::error::{Error, Result};

/// How long [`PendingRead::wait`] waits, once the device is idle, for a map callback that
/// another thread's poll has taken and is about to run.
const CALLBACK_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the map callback reported (set from inside `device.poll`).
type MapOutcome = Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>;

/// The bytes of a buffer on their way to the host. Dropping it abandons the read.
pub struct PendingRead {
    gpu: Gpu,
    op: &'static str,
    /// `None` for a zero-byte read (nothing to map).
    staging: Option<wgpu::Buffer>,
    /// The submission holding the copy: waiting for it, not for the whole queue, lets another
    /// thread collect the bytes while this one keeps submitting work.
    submission: Option<wgpu::SubmissionIndex>,
    bytes: u64,
    outcome: MapOutcome,
}

impl std::fmt::Debug for PendingRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingRead({}, {} bytes)", self.op, self.bytes)
    }
}

impl Gpu {
    /// Start copying the first `bytes` bytes of `buffer` to the host, after all work recorded so
    /// far; returns at once. Collect with [`PendingRead::wait`] (blocks only if the bytes have
    /// not landed yet) after [`PendingRead::ready`] says they have.
    pub(crate) fn read_bytes_async(
        &self,
        op: &'static str,
        buffer: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<PendingRead> {
        self.read_many_async(op, &[(buffer, bytes)])
    }

    /// [`read_bytes_async`](Self::read_bytes_async) of several buffers at once: the first
    /// `bytes` of each, back to back in ONE staging buffer (one submit, one mapping, one read),
    /// in the order given. Every length must be a multiple of 4 (f32 data).
    pub(crate) fn read_many_async(
        &self,
        op: &'static str,
        parts: &[(&wgpu::Buffer, u64)],
    ) -> Result<PendingRead> {
        let outcome: MapOutcome = Arc::new(Mutex::new(None));
        if let Some((_, odd)) = parts
            .iter()
            .find(|(_, b)| b % wgpu::COPY_BUFFER_ALIGNMENT != 0)
        {
            return Err(Error::invalid(
                op,
                "reads of a multiple of 4 bytes each when several are joined",
                odd,
            ));
        }
        let bytes: u64 = parts.iter().map(|(_, b)| b).sum();
        if bytes == 0 {
            *outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(Ok(()));
            return Ok(PendingRead {
                gpu: self.clone(),
                op,
                staging: None,
                submission: None,
                bytes,
                outcome,
            });
        }
        // A lone read may be any length (padded, as the copy must be); joined ones are aligned.
        let padded = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("cads async readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // The copies must be submitted before the map request, or the map would resolve first.
        let submission = self.encode_and_submit(op, |enc| {
            let mut offset = 0;
            for &(buffer, b) in parts {
                let size = if parts.len() == 1 { padded } else { b };
                if size > 0 {
                    enc.copy_buffer_to_buffer(buffer, 0, &staging, offset, size);
                }
                offset += b;
            }
        })?;
        let slot = outcome.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        Ok(PendingRead {
            gpu: self.clone(),
            op,
            staging: Some(staging),
            submission: Some(submission),
            bytes,
            outcome,
        })
    }

    /// Submit everything recorded so far and return a fence at that point of the stream.
    pub fn fence(&self) -> Result<Fence> {
        self.flush()?;
        // An empty submit still gets an index, ordered after every earlier submit.
        let index = self.inner.queue.submit(std::iter::empty());
        Ok(Fence {
            gpu: self.clone(),
            index,
        })
    }
}

impl PendingRead {
    /// Whether the bytes are on the host: one non-blocking poll of the device (which runs the
    /// map callbacks of finished work). Errors if the device reports a failure.
    pub fn ready(&self) -> Result<bool> {
        if self.landed().is_none() {
            self.gpu
                .inner
                .device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| Error::Gpu {
                    op: self.op,
                    message: e.to_string(),
                })?;
        }
        Ok(self.landed().is_some())
    }

    fn landed(&self) -> Option<std::result::Result<(), wgpu::BufferAsyncError>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The bytes: at once when [`ready`](Self::ready) said so, else after waiting for the device.
    pub fn wait(self) -> Result<Vec<u8>> {
        let op = self.op;
        let Some(staging) = &self.staging else {
            return Ok(Vec::new());
        };
        // Wait for the copy's submission (later work may go on running), then, should the
        // mapping still be pending, for the whole queue.
        let waits = [
            wgpu::PollType::Wait {
                submission_index: self.submission.clone(),
                timeout: None,
            },
            wgpu::PollType::wait_indefinitely(),
        ];
        for wait in waits {
            if self.landed().is_some() {
                break;
            }
            self.gpu.inner.device.poll(wait).map_err(|e| Error::Gpu {
                op,
                message: e.to_string(),
            })?;
        }
        // Another thread's poll may have taken this mapping's callback off the device and not
        // run it yet: the queue is idle, yet the callback is still on its way (seen with threads
        // sharing one device, tests/readback.rs). Give it time, polling, before calling it lost.
        let deadline = std::time::Instant::now() + CALLBACK_GRACE;
        while self.landed().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(50));
            self.gpu
                .inner
                .device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| Error::Gpu {
                    op,
                    message: e.to_string(),
                })?;
        }
        match self.landed() {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.gpu.mark_lost(e.to_string());
                return Err(Error::DeviceLost {
                    op,
                    reason: e.to_string(),
                });
            }
            None => {
                return Err(Error::DeviceLost {
                    op,
                    reason: format!(
                        "map callback never ran, {} s after the device went idle",
                        CALLBACK_GRACE.as_secs()
                    ),
                })
            }
        }
        self.gpu.check_health(op)?;
        let view = staging.get_mapped_range(..).map_err(|e| Error::Gpu {
            op,
            message: e.to_string(),
        })?;
        let out = view[..self.bytes as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// A point in the submission stream (see the module docs).
pub struct Fence {
    gpu: Gpu,
    index: wgpu::SubmissionIndex,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fence({:?})", self.index)
    }
}

impl Fence {
    /// Block until the device has finished every submit up to this fence (later ones may still
    /// run), and run the callbacks of the reads that finished with them.
    pub fn wait(&self) -> Result<()> {
        self.gpu
            .inner
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(self.index.clone()),
                timeout: None,
            })
            .map_err(|e| Error::Gpu {
                op: "Fence::wait",
                message: e.to_string(),
            })?;
        self.gpu.check_health("Fence::wait")
    }
}
