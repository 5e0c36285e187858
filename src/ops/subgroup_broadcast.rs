//! When a kernel whose workgroup shares an operand row runs its subgroup-broadcast twin.
//!
//! The CPU-adapter tiles (the tall matmul tiles, f32 and f16; the conv3d row kernels, forward
//! and weight gradient) run lanes over output columns, so one operand (A's rows; the input
//! voxels of a conv) is the same in every lane. They load it with an address equal in every
//! lane, which lavapipe compiles to one scalar load per component, each behind its own
//! robust-access branches. Their twins load it one row per lane instead and `subgroupBroadcast`
//! each row from its lane: the same FMAs in the same order, so the outputs are bit for bit the
//! same (src/ops/matmul_subgroup_a.rs, src/ops/conv3d_rows.rs; measured in
//! docs/kernel-tuning.md, "A's rows by subgroup broadcasts").
//!
//! `CADS_KERNEL_SUBGROUP_BROADCAST` (or the context's tune settings, op `subgroup_broadcast`):
//! `auto` (the default: CPU adapters), `always` (any adapter) or `never`. Either way a device
//! without subgroups, or whose subgroups may hold fewer lanes than a twin broadcasts from, runs
//! the entries themselves.

use crate::error::Result;
use crate::gpu::{Gpu, TuneRequest};

const OP: &str = "subgroup_broadcast";
const NAMES: [&str; 3] = ["auto", "always", "never"];

/// Lanes the twins broadcast from (rows 0..8 of each group): every subgroup must hold at least
/// this many.
pub(crate) const GROUP_LANES: u32 = 8;

/// Whether this context's launches run the twins: its policy (`auto` unless
/// `CADS_KERNEL_SUBGROUP_BROADCAST` or its tune settings name another; nothing is measured) and
/// what the device can run.
pub(crate) fn enabled(gpu: &Gpu) -> Result<bool> {
    let choice = gpu.tuned_variant(
        &TuneRequest {
            op: OP,
            variants: &NAMES,
            candidates: &["auto"],
            default: "auto",
            kernels: &[],
        },
        |_| Ok(0.0),
    )?;
    let adapter = gpu.adapter();
    let lanes_suffice = gpu.features().subgroups && adapter.subgroup_min_size >= GROUP_LANES;
    Ok(lanes_suffice
        && match choice.variant.as_str() {
            "never" => false,
            "always" => true,
            _ => adapter.device_type == wgpu::DeviceType::Cpu,
        })
}
