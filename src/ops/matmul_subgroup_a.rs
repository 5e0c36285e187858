//! A's rows by subgroup broadcasts: the `_sga` twins of the tall vec4 tiles' plain, `_bias`,
//! `_tb`, `pb_` and `pb_..._bias` entries (shaders/matmul_vec4_sga.wgsl) and of the f16 tall
//! tiles' plain, `_bias` and `_tb` entries (shaders/matmul_f16_vec4_sga.wgsl), and when a launch
//! runs the twin instead of the entry.
//!
//! The entries of shaders/matmul_vec4.wgsl read each of the tile's rows of A with a load whose
//! address is the same in every lane. On a CPU adapter (lavapipe) that is one scalar load per
//! component, each behind its own robust-access branches (`vec4_32x4_w16`'s k-step: 3,737
//! instructions with them, 2,203 in its twin). The twins load A one row per lane (a vec4 gather
//! per group of 8 rows) and broadcast each row from its lane, the same FMAs in the same order,
//! so every output is bit for bit the same (tests/matmul_subgroup_a.rs). Measured gain and the
//! policy's reasons: docs/kernel-tuning.md, "A's rows by subgroup broadcasts".
//!
//! When the twins run: src/ops/subgroup_broadcast.rs (`CADS_KERNEL_SUBGROUP_BROADCAST`).

use super::matmul::{MatmulKernel, MatmulParams};
use super::subgroup_broadcast::{enabled, GROUP_LANES};
use crate::error::Result;
use crate::gpu::{Gpu, KernelSpec};

const SOURCE: &str = include_str!("../../shaders/matmul_vec4_sga.wgsl");
const SOURCE_F16: &str = include_str!("../../shaders/matmul_f16_vec4_sga.wgsl");

/// Rows per broadcast group (`SGA_ROWS` of scripts/gen_matmul_wgsl.py): lane q loads row q of
/// each group, so a subgroup must hold at least this many lanes.
const GROUP_ROWS: u32 = 8;
const _: () = assert!(GROUP_ROWS <= GROUP_LANES);

const fn twin(entry: &'static str, inputs: u32) -> KernelSpec {
    KernelSpec {
        shader: "matmul_vec4_sga",
        source: SOURCE,
        entry,
        inputs,
        outputs: 1,
        params: MatmulParams::LAYOUT,
        constants: &[],
    }
}

/// Every `_sga` entry, in the order of [`BASE_ENTRIES`].
pub(crate) const KERNELS: &[KernelSpec] = &[
    twin("matmul_vec4_32x4_w8_sga", 2),
    twin("matmul_vec4_32x4_w8_bias_sga", 3),
    twin("matmul_vec4_tb_32x4_w8_sga", 2),
    twin("matmul_vec4_pb_32x4_w8_sga", 2),
    twin("matmul_vec4_pb_32x4_w8_bias_sga", 3),
    twin("matmul_vec4_32x4_w16_sga", 2),
    twin("matmul_vec4_32x4_w16_bias_sga", 3),
    twin("matmul_vec4_tb_32x4_w16_sga", 2),
    twin("matmul_vec4_pb_32x4_w16_sga", 2),
    twin("matmul_vec4_pb_32x4_w16_bias_sga", 3),
];

/// The entries of shaders/matmul_vec4.wgsl that have a twin, in the order of [`KERNELS`].
const BASE_ENTRIES: [&str; 10] = [
    "matmul_vec4_32x4_w8",
    "matmul_vec4_32x4_w8_bias",
    "matmul_vec4_tb_32x4_w8",
    "matmul_vec4_pb_32x4_w8",
    "matmul_vec4_pb_32x4_w8_bias",
    "matmul_vec4_32x4_w16",
    "matmul_vec4_32x4_w16_bias",
    "matmul_vec4_tb_32x4_w16",
    "matmul_vec4_pb_32x4_w16",
    "matmul_vec4_pb_32x4_w16_bias",
];

/// An f16 twin (shaders/matmul_f16_vec4_sga.wgsl): f16 A and B, f32 bias and C.
const fn twin_f16(entry: &'static str, inputs: u32) -> KernelSpec {
    KernelSpec {
        shader: "matmul_f16_vec4_sga",
        source: SOURCE_F16,
        ..twin(entry, inputs)
    }
}

/// Every f16 `_sga` entry, in the order of [`BASE_ENTRIES_F16`].
pub(crate) const KERNELS_F16: &[KernelSpec] = &[
    twin_f16("matmul_f16_vec4_32x4_w8_sga", 2),
    twin_f16("matmul_f16_vec4_32x4_w8_bias_sga", 3),
    twin_f16("matmul_f16_vec4_tb_32x4_w8_sga", 2),
    twin_f16("matmul_f16_vec4_32x4_w16_sga", 2),
    twin_f16("matmul_f16_vec4_32x4_w16_bias_sga", 3),
    twin_f16("matmul_f16_vec4_tb_32x4_w16_sga", 2),
];

/// The entries of shaders/matmul_f16_vec4.wgsl that have a twin, in the order of
/// [`KERNELS_F16`].
const BASE_ENTRIES_F16: [&str; 6] = [
    "matmul_f16_vec4_32x4_w8",
    "matmul_f16_vec4_32x4_w8_bias",
    "matmul_f16_vec4_tb_32x4_w8",
    "matmul_f16_vec4_32x4_w16",
    "matmul_f16_vec4_32x4_w16_bias",
    "matmul_f16_vec4_tb_32x4_w16",
];

/// `spec`'s twin, if it has one.
fn twin_of(spec: &KernelSpec) -> Option<&'static KernelSpec> {
    let (bases, twins): (&[&str], &'static [KernelSpec]) = match spec.shader {
        "matmul_vec4" => (&BASE_ENTRIES, KERNELS),
        "matmul_f16_vec4" => (&BASE_ENTRIES_F16, KERNELS_F16),
        _ => return None,
    };
    let i = bases.iter().position(|e| *e == spec.entry)?;
    Some(&twins[i])
}

/// The kernel a launch of `spec` runs on `gpu`: its twin where it has one and
/// [`enabled`] (src/ops/subgroup_broadcast.rs) says so, else `spec` itself.
pub(crate) fn runs(gpu: &Gpu, spec: &'static KernelSpec) -> Result<&'static KernelSpec> {
    match twin_of(spec) {
        Some(twin) if enabled(gpu)? => Ok(twin),
        _ => Ok(spec),
    }
}

/// Whether a product on `kernel` with these transposes (as the launcher reads them in place)
/// runs a twin on `gpu`: the benchmark's variant names say `+sga` then.
pub(crate) fn runs_for(gpu: &Gpu, kernel: MatmulKernel, (ta, tb): (bool, bool)) -> Result<bool> {
    let spec = match (ta, tb) {
        (true, false) => kernel.spec_ta(),
        (false, true) => kernel.spec_tb(),
        _ => kernel.spec().ok(),
    };
    Ok(spec.and_then(twin_of).is_some() && enabled(gpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_twin_is_its_base_entry_with_the_suffix_and_the_same_bindings() {
        assert_eq!(KERNELS.len(), BASE_ENTRIES.len());
        assert_eq!(KERNELS_F16.len(), BASE_ENTRIES_F16.len());
        let pairs = KERNELS.iter().zip(BASE_ENTRIES);
        for (twin, base) in pairs.chain(KERNELS_F16.iter().zip(BASE_ENTRIES_F16)) {
            assert_eq!(twin.entry, format!("{base}_sga"));
            let bias = base.ends_with("_bias");
            assert_eq!(twin.inputs, if bias { 3 } else { 2 }, "{base}");
            let shader = if base.starts_with("matmul_f16") {
                "matmul_f16_vec4"
            } else {
                "matmul_vec4"
            };
            assert_eq!(twin.shader, format!("{shader}_sga"), "{base}");
        }
    }
}
