//! What tests/data_parallel.rs and tests/data_parallel_buckets.rs share about `LocalGroup`
//! runs. Included with `#[path = "common/local_group.rs"] mod local_group;` (not through
//! `common/mod.rs`, so other test binaries do not build it).

use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(300);
