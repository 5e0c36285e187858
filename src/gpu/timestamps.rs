//! GPU timestamps written into the pending command stream (used by `bench`).
//!
//! With `TIMESTAMP_QUERY_INSIDE_ENCODERS` a timestamp goes straight into the encoder; with only
//! `TIMESTAMP_QUERY` an empty compute pass carries it as its beginning-of-pass write, which lands
//! at the same point of the stream (passes execute in recording order).

use super::context::Gpu;
use crate::error::Result;

impl Gpu {
    /// Record "write timestamp `index` of `set`" after every launch recorded so far.
    /// Needs `features().timestamps`; the caller checks.
    pub(crate) fn write_timestamp(&self, set: &wgpu::QuerySet, index: u32) -> Result<()> {
        let inside = self.inner.features.timestamps_in_encoders;
        self.encode(|enc| {
            if inside {
                enc.write_timestamp(set, index);
            } else {
                let _pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("cads timestamp"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(index),
                        end_of_pass_write_index: None,
                    }),
                });
            }
        })
    }

    /// Record the resolve of queries `0..count` of `set` into `dst` (usage QUERY_RESOLVE).
    pub(crate) fn resolve_timestamps(
        &self,
        set: &wgpu::QuerySet,
        count: u32,
        dst: &wgpu::Buffer,
    ) -> Result<()> {
        self.encode(|enc| enc.resolve_query_set(set, 0..count, dst, 0))
    }
}
