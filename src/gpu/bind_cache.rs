//! Bind groups kept for reuse between launches, each with its params in a slot of its own.
//!
//! Every launch binds its params (a uniform struct) and its tensors' buffers. A new bind group
//! per launch costs host work in wgpu and a descriptor set in the driver: on lavapipe each set
//! is a fresh page, mapped when made and unmapped when freed, and the unmap interrupts the other
//! core to flush its TLB (docs/kernel-tuning.md, "What a launch costs").
//!
//! Launches recur exactly: the pool hands a step the same buffers every time (src/gpu/pool.rs)
//! and a layer's params (shapes, strides, flags) are the same every step. So the key is the
//! kernel's layout, the params' bytes and the buffers, and each entry owns a slot of a uniform
//! heap holding its params, written once when the entry is made. A launch whose params change
//! every time (a random seed, a step count) misses and makes a new entry. Why not one shared
//! arena at a dynamic offset, so that one bind group serves every params value: lavapipe copies
//! a descriptor set whenever a dynamic offset is bound, which costs the page saved (measured
//! slower than no reuse).
//!
//! Slot safety: a slot is rewritten only when a new entry takes it, by a queued write, which
//! lands after every command submitted before it and before the next submit's commands. A freed
//! slot may still be read by commands recorded but not yet submitted, so the recorder submits
//! before anything is evicted or cleared ([`BindGroupCache::is_full`],
//! `Gpu::clear_bind_groups`).
//!
//! A cached bind group keeps its buffers alive. Pooled buffers stay alive in the pool anyway
//! until [`crate::Gpu::trim_pool`], which clears this cache first, so trimming still returns
//! every freed buffer to the driver. At most [`CAPACITY`] entries are kept; past that the least
//! recently used half is dropped.

use std::collections::HashMap;

/// Bind groups (and params slots) kept at most. A PVTv2-b1 training step makes about a thousand
/// distinct launches, so a few steps' worth stay; each entry costs one descriptor set and one
/// params slot (1 MiB of heap in all at 256-byte slots).
pub(crate) const CAPACITY: usize = 4096;

/// Bytes per params slot before rounding up to the device's uniform offset alignment: the most
/// a kernel's params struct may take. The largest is 176 bytes (DrrParams); tests/shaders.rs
/// checks every kernel's against this.
pub const PARAMS_SLOT_BYTES: u64 = 256;

/// What a bind group binds: the kernel's layout, the params' bytes (in the entry's slot) and the
/// storage buffers in binding order.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    layout: wgpu::BindGroupLayout,
    params: Vec<u8>,
    buffers: Vec<wgpu::Buffer>,
}

struct Entry {
    group: wgpu::BindGroup,
    slot: u32,
    /// The lookup counter when this entry was last used (for eviction).
    used: u64,
}

/// Counters of the bind group cache (diagnostics, [`crate::Gpu::bind_group_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindGroupStats {
    /// Launches that reused a cached bind group.
    pub hits: u64,
    /// Launches that made one (and wrote its params).
    pub misses: u64,
    /// Bind groups held now.
    pub cached: usize,
}

/// The uniform buffer of params slots, made at the first launch.
struct Heap {
    buffer: wgpu::Buffer,
    /// Slot stride: [`PARAMS_SLOT_BYTES`] rounded up to the uniform offset alignment.
    stride: u64,
    free: Vec<u32>,
}

#[derive(Default)]
pub(crate) struct BindGroupCache {
    map: HashMap<Key, Entry>,
    heap: Option<Heap>,
    /// Lookups so far: the clock of `Entry::used`.
    tick: u64,
    hits: u64,
    misses: u64,
}

impl BindGroupCache {
    /// Whether the next miss needs room: the caller then submits what it has recorded and calls
    /// [`BindGroupCache::evict_older_half`].
    pub(crate) fn is_full(&self) -> bool {
        self.map.len() >= CAPACITY
    }

    /// The bind group of `layout` with `params` at binding 0 and `buffers` whole at bindings
    /// 1, 2, …; made on first use, its params queued for writing into a free slot (the caller
    /// has made room when [`BindGroupCache::is_full`]). `params` is at most [`PARAMS_SLOT_BYTES`].
    pub(crate) fn get(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        align: u64,
        layout: &wgpu::BindGroupLayout,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        self.tick += 1;
        let key = Key {
            layout: layout.clone(),
            params: params.to_vec(),
            buffers: buffers.iter().map(|&b| b.clone()).collect(),
        };
        if let Some(entry) = self.map.get_mut(&key) {
            entry.used = self.tick;
            self.hits += 1;
            return entry.group.clone();
        }
        self.misses += 1;
        let heap = self.heap.get_or_insert_with(|| {
            let stride = PARAMS_SLOT_BYTES.next_multiple_of(align);
            Heap {
                buffer: device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("cads params slots"),
                    size: stride * CAPACITY as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                stride,
                free: (0..CAPACITY as u32).rev().collect(),
            }
        });
        let slot = heap
            .free
            .pop()
            .expect("a free slot: the recorder evicts when the cache is full");
        let offset = slot as u64 * heap.stride;
        queue.write_buffer(&heap.buffer, offset, params);
        let mut entries = Vec::with_capacity(1 + buffers.len());
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &heap.buffer,
                offset,
                size: wgpu::BufferSize::new(params.len() as u64),
            }),
        });
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 1 + i as u32,
                resource: b.as_entire_binding(),
            });
        }
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("cads launch"),
            layout,
            entries: &entries,
        });
        self.map.insert(
            key,
            Entry {
                group: group.clone(),
                slot,
                used: self.tick,
            },
        );
        group
    }

    /// Drop the entries used longest ago, keeping the most recent half, and free their slots.
    /// Only with nothing recorded and unsubmitted (see the module docs).
    pub(crate) fn evict_older_half(&mut self) {
        let keep = self.map.len() / 2;
        let mut used: Vec<u64> = self.map.values().map(|e| e.used).collect();
        let (_, &mut threshold, _) = used.select_nth_unstable(self.map.len() - keep);
        let mut freed = Vec::new();
        self.map.retain(|_, e| {
            let stays = e.used >= threshold;
            if !stays {
                freed.push(e.slot);
            }
            stays
        });
        if let Some(heap) = &mut self.heap {
            heap.free.extend(freed);
        }
    }

    /// Drop every cached bind group (and with them their hold on buffers). Only with nothing
    /// recorded and unsubmitted.
    pub(crate) fn clear(&mut self) {
        if let Some(heap) = &mut self.heap {
            heap.free.extend(self.map.values().map(|e| e.slot));
        }
        self.map.clear();
    }

    pub(crate) fn stats(&self) -> BindGroupStats {
        BindGroupStats {
            hits: self.hits,
            misses: self.misses,
            cached: self.map.len(),
        }
    }
}
