//! Buffer pool: freed storage buffers are kept by size class and handed out again.
//!
//! Creating a wgpu buffer costs a driver allocation and, on first bind, descriptor work; a
//! training step allocates the same sizes every iteration, so after the first step every
//! allocation is a hit. Size classes are `2^k · {1, 1.25, 1.5, 1.75}` (at least 256 bytes), which
//! bounds the waste at 25% while keeping the number of classes small.
//!
//! Which free buffer a request gets is a function of the set of free buffers alone: the one
//! created first (lowest creation number) in the size class. A last-in-first-out stack would hand
//! out the buffers in an order that depends on the order they came back, which permutes them from
//! one training step to the next; with the lowest-number rule a step that makes the same requests
//! from the same free set gets the same buffers every time, so the launches' bind groups recur
//! and are reused (src/gpu/bind_cache.rs).
//!
//! Reuse is safe without fences: every use of a buffer is recorded on the one queue in program
//! order, and wgpu inserts the barriers between passes, so a buffer dropped by one op and taken by
//! the next is written only after the earlier reads have executed.
//!
//! The pool also knows which of its lent buffers hold f16 data ([`BufferPool::take_half`]): the
//! launch code refuses to bind one to a kernel that reads f32 (src/gpu/recorder.rs), so a half
//! tensor handed to an f32-only op fails with a typed error instead of being misread. The tag lives
//! with the buffer, not the tensor, because kernels are bound with bare `wgpu::Buffer`s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Usage flags of every pooled buffer: bound as storage, copied in and out.
pub const POOL_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Counters of the pool, in bytes of size class (what the device really holds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in buffers currently held by tensors.
    pub live_bytes: u64,
    /// Maximum of `live_bytes` since creation or the last `reset_peak`.
    pub peak_bytes: u64,
    /// Bytes in buffers kept for reuse.
    pub cached_bytes: u64,
    /// Buffers created on the device.
    pub allocations: u64,
    /// Requests served from the cache.
    pub reuses: u64,
}

pub(crate) struct PoolShared {
    device: wgpu::Device,
    state: Mutex<PoolState>,
    /// How many lent buffers hold f16 data (`state.half.len()`), read without the lock so that
    /// launches in an all-f32 program never take it.
    half_count: AtomicUsize,
}

#[derive(Default)]
struct PoolState {
    /// Free buffers by size class, each class by creation number (see the module docs).
    free: HashMap<u64, BTreeMap<u64, wgpu::Buffer>>,
    /// Buffers created so far: the next creation number.
    created: u64,
    stats: PoolStats,
    /// Lent buffers that hold f16 data (tagged by `take_half`, untagged when they come back).
    half: HashSet<wgpu::Buffer>,
}

/// Round a request up to its size class.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = 63 - bytes.leading_zeros() as u64; // floor(log2)
    let base = 1u64 << pow;
    if bytes == base {
        return base;
    }
    let quarter = (base / 4).max(1);
    let steps = (bytes - base).div_ceil(quarter);
    base + steps * quarter
}

/// A buffer on loan from the pool; it goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    /// Creation number in the pool (its order among the free buffers of its class).
    number: u64,
    class: u64,
    pool: Arc<PoolShared>,
    /// Holds f16 data (see the module docs).
    half: bool,
    /// The f16 rounding of this buffer's first `.0` elements, while something holds it
    /// ([`PooledBuffer::half_rounding`]).
    rounding: Mutex<Option<(u64, Weak<PooledBuffer>)>>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("pooled buffer present until drop")
    }
    /// Bytes the buffer really has (its size class), at least what was requested.
    pub fn capacity(&self) -> u64 {
        self.class
    }

    /// The f16 rounding of this buffer's first `elements` f32 values recorded by
    /// [`PooledBuffer::set_half_rounding`], if it is still held somewhere. Lets the consumers
    /// of one activation that keep its f16 rounding for backward share one copy
    /// (src/tensor/saved.rs). The link is weak: it never keeps the copy alive, and it dies with
    /// this loan (a buffer taken again from the pool starts without one).
    pub fn half_rounding(&self, elements: u64) -> Option<Arc<PooledBuffer>> {
        let link = self.rounding.lock().unwrap_or_else(|e| e.into_inner());
        match &*link {
            Some((n, copy)) if *n == elements => copy.upgrade(),
            _ => None,
        }
    }

    /// Record `copy` as the f16 rounding of this buffer's first `elements` values.
    pub fn set_half_rounding(&self, elements: u64, copy: &Arc<PooledBuffer>) {
        *self.rounding.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((elements, Arc::downgrade(copy)));
    }

    /// Forget the recorded rounding (the contents are about to change).
    pub fn forget_half_rounding(&self) {
        *self.rounding.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let mut st = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
            if self.half && st.half.remove(&buffer) {
                self.pool.half_count.fetch_sub(1, Ordering::Relaxed);
            }
            st.stats.live_bytes -= self.class;
            st.stats.cached_bytes += self.class;
            st.free
                .entry(self.class)
                .or_default()
                .insert(self.number, buffer);
        }
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PooledBuffer({} bytes)", self.class)
    }
}

/// The pool handle kept by the GPU context.
#[derive(Clone)]
pub struct BufferPool {
    shared: Arc<PoolShared>,
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        BufferPool {
            shared: Arc::new(PoolShared {
                device,
                state: Mutex::new(PoolState::default()),
                half_count: AtomicUsize::new(0),
            }),
        }
    }

    /// A buffer of at least `bytes` bytes (contents undefined: callers overwrite or zero it).
    pub fn take(&self, bytes: u64) -> PooledBuffer {
        self.take_tagged(bytes, false)
    }

    /// [`BufferPool::take`] for f16 data: until it comes back, [`BufferPool::holds_half`] says so.
    pub fn take_half(&self, bytes: u64) -> PooledBuffer {
        self.take_tagged(bytes, true)
    }

    /// Whether `buffer` is lent out holding f16 data.
    pub fn holds_half(&self, buffer: &wgpu::Buffer) -> bool {
        self.shared.half_count.load(Ordering::Relaxed) > 0
            && self
                .shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .half
                .contains(buffer)
    }

    fn take_tagged(&self, bytes: u64, half: bool) -> PooledBuffer {
        let class = size_class(bytes);
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let reused = st.free.get_mut(&class).and_then(|v| v.pop_first());
        let (number, buffer) = match reused {
            Some(numbered) => {
                st.stats.reuses += 1;
                st.stats.cached_bytes -= class;
                numbered
            }
            None => {
                st.stats.allocations += 1;
                st.created += 1;
                let buffer = self.shared.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("cads pooled"),
                    size: class,
                    usage: POOL_USAGE,
                    mapped_at_creation: false,
                });
                (st.created, buffer)
            }
        };
        st.stats.live_bytes += class;
        st.stats.peak_bytes = st.stats.peak_bytes.max(st.stats.live_bytes);
        if half && st.half.insert(buffer.clone()) {
            self.shared.half_count.fetch_add(1, Ordering::Relaxed);
        }
        PooledBuffer {
            buffer: Some(buffer),
            number,
            class,
            pool: self.shared.clone(),
            half,
            rounding: Mutex::new(None),
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
    }

    /// Start a new peak measurement from the current live bytes.
    pub fn reset_peak(&self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.stats.peak_bytes = st.stats.live_bytes;
    }

    /// Release every cached (free) buffer back to the driver.
    pub fn trim(&self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.free.clear();
        st.stats.cached_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_bound_waste_to_a_quarter() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1024), 1024);
        assert_eq!(size_class(1025), 1280);
        assert_eq!(size_class(1792), 1792);
        assert_eq!(size_class(1793), 2048);
        for b in [300u64, 5000, 123_457, 10_000_000] {
            let c = size_class(b);
            assert!(c >= b && (c as f64) <= b as f64 * 1.25 + 1.0, "{b} -> {c}");
        }
    }
}
