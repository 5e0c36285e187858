//! B of a matmul packed into column panels for the tall vec4 tiles' `pb_` forms
//! (shaders/matmul_pack_b.wgsl, the `pb_` entries of shaders/matmul_vec4.wgsl), and when to do it.
//!
//! Why: a `vec4_32x4_w8` workgroup owns 32 columns of C and walks all K rows of B for them, one
//! 128-byte segment per row, N·4 bytes apart. When that distance is a multiple of the CPU
//! cache's set stride (4 KiB for a 48 KiB 12-way L1 of 64 sets; 128 KiB for a 2 MiB 16-way L2)
//! every row's segment falls into the same few sets, so the column block, reused by the next
//! row block of A on the same core, is evicted before it is reused. Packed, the block is K·32
//! contiguous values (128 KiB for K = 1024) and stays cached; the cost is one pass over B
//! (O(K·N) next to the product's O(M·K·N)). Measured on lavapipe (docs/kernel-tuning.md, "Packing
//! B in column panels"): 1024³ on `vec4_32x4_w8` 43.6–44.6 ms unpacked, 39.0–40.3 packed, the
//! pass included (GPU timer, 256 bits).
//!
//! A transposed B (stored [N, K], the `_tb` forms) is never packed: those read each column's
//! row of K values, and packing measured 0.93–0.99× there.
//!
//! `CADS_KERNEL_MATMUL_PACK_B` = `auto` (the default: [`worth_packing`]), `always` or `never`
//! (per context through [`crate::gpu::TuneSettings`] overrides, op `matmul_pack_b`).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Grid, KernelSpec, TuneRequest};
use crate::tensor::Tensor;

crate::gpu::shader_params! {
    /// Mirrors `PackParams` in shaders/matmul_pack_b.wgsl.
    struct PackParams {
        k: u32,
        n: u32,
        panels: u32,
        /// log2 of the panel's vec4 column groups.
        shift: u32,
    }
}

const SOURCE: &str = include_str!("../../shaders/matmul_pack_b.wgsl");

const fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "matmul_pack_b",
        source: SOURCE,
        entry,
        inputs: 1,
        outputs: 1,
        params: PackParams::LAYOUT,
        constants: &[],
    }
}

/// Packs B stored [mat, K, N].
pub(crate) const KERNELS: &[KernelSpec] = &[spec("pack_b_panels")];

/// Whether B is packed before a product whose tile has a `pb_` form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PackB {
    /// Where [`worth_packing`] says so.
    Auto,
    Always,
    Never,
}

const OP: &str = "matmul_pack_b";
const NAMES: [&str; 3] = ["auto", "always", "never"];

impl PackB {
    /// This context's policy: `auto` unless `CADS_KERNEL_MATMUL_PACK_B` (or the context's tune
    /// settings) names another. Nothing is measured: `auto` is the only candidate.
    pub(crate) fn on(gpu: &Gpu) -> Result<PackB> {
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
        match choice.variant.as_str() {
            "always" => Ok(PackB::Always),
            "never" => Ok(PackB::Never),
            _ => Ok(PackB::Auto),
        }
    }

    /// Whether this policy packs B for an M × K × N product.
    pub(crate) fn packs(self, m: usize, k: usize, n: usize) -> bool {
        match self {
            PackB::Always => true,
            PackB::Never => false,
            PackB::Auto => worth_packing(m, k, n),
        }
    }
}

/// Bytes after which a 64-byte line maps to the same L2 set again: 2048 sets, the geometry of a
/// 2 MiB 16-way, 1.25 MiB 10-way or 1 MiB 8-way L2 (Intel and AMD cores of the last years).
const SET_PERIOD_BYTES: usize = 128 * 1024;
const LINE_BYTES: usize = 64;
/// Pack when this many of a column block's rows share one L2 set: at the ways of those caches,
/// where the block stops fitting.
const ROWS_PER_SET: usize = 16;
/// Below this many rows of A the pass over B costs more than the product saves.
const MIN_ROWS: usize = 256;

/// The measured rule: pack B when at least [`ROWS_PER_SET`] of its K rows, N·4 bytes apart, fall
/// into each L2 set they reach, and A has at least [`MIN_ROWS`] rows. `vec4_32x4_w8` at 256
/// bits, AVX-512 Xeon (2 MiB 16-way L2), packed / unpacked speed-up, wall clock: packed where the
/// rule says so, M × K × N 1024³ 1.14,
/// 1024 × 2048 × 1024 1.12, 1024² × 2048 1.36, 1024² × 3072 1.37, 1024 × 2048 × 512 1.12,
/// 1024² × 1536 1.07, 1024 × 512 × 1024 1.03, 256 × 1024² 1.03; not where it does not, 0.93–1.05
/// (128 × 1024², 1024 × 512 × 512, 1024² × 768, 1024² × 1000, PVT-shaped products).
pub(crate) fn worth_packing(m: usize, k: usize, n: usize) -> bool {
    let row_bytes = 4 * n;
    if m < MIN_ROWS || row_bytes == 0 {
        return false;
    }
    // Rows `row_bytes` apart start at SET_PERIOD_BYTES / gcd(row_bytes, SET_PERIOD_BYTES)
    // distinct offsets within the period, so reach that many sets (at most all of them: a gcd
    // under one line spreads them over every set).
    let gcd = 1usize
        << row_bytes
            .trailing_zeros()
            .min(SET_PERIOD_BYTES.trailing_zeros());
    k * gcd.max(LINE_BYTES) / SET_PERIOD_BYTES >= ROWS_PER_SET
}

/// B (`matrices` matrices, each stored K × N) copied into panels of `panel4` vec4 column groups
/// (a power of two): a flat tensor of matrices · ⌈N / (4·panel4)⌉ · K · 4·panel4 values,
/// unrecorded (the product's inputs are detached), with the values per packed matrix; `None`
/// when the pass's grid (one workgroup row per k) is over the device's limit, and the product
/// reads B as it is.
pub(crate) fn pack_b(
    b: &Tensor,
    matrices: usize,
    k: usize,
    n: usize,
    panel4: usize,
) -> Result<Option<(Tensor, usize)>> {
    let op = "matmul (pack B)";
    if !n.is_multiple_of(4) || !panel4.is_power_of_two() || b.numel() != matrices * k * n {
        return Err(Error::invalid(
            op,
            "N % 4 == 0, panels of a power of two vec4 and B of matrices · K · N values",
            format!(
                "N {n}, panel {panel4} vec4, B {:?} for {matrices} matrices of {k} × {n}",
                b.shape()
            ),
        ));
    }
    let gpu = b.gpu();
    let panels = n.div_ceil(4 * panel4);
    let per_matrix = panels * k * 4 * panel4;
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let columns = (panels * panel4).div_ceil(64);
    if k > max || matrices > max || columns > max {
        return Ok(None);
    }
    let packed = Tensor::uninit(gpu, op, &[matrices * per_matrix])?;
    if per_matrix * matrices == 0 {
        return Ok(Some((packed, per_matrix)));
    }
    let u = |v: usize| u32::try_from(v).map_err(|_| Error::invalid(op, "sizes below 2^32", v));
    u(matrices * per_matrix)?;
    let params = PackParams {
        k: u(k)?,
        n: u(n)?,
        panels: u(panels)?,
        shift: panel4.trailing_zeros(),
    };
    gpu.dispatch(
        &KERNELS[0],
        &params,
        &[b.buffer()],
        &[packed.buffer()],
        Grid::Xyz(u(columns)?, u(k)?, u(matrices)?),
    )?;
    Ok(Some((packed, per_matrix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_packs_rows_that_crowd_the_cache_sets_of_tall_products() {
        // 4 KiB rows: 32 of 1024 rows per set; 512 rows: 16.
        assert!(worth_packing(1024, 1024, 1024));
        assert!(worth_packing(1024, 512, 1024));
        assert!(!worth_packing(1024, 256, 1024));
        // 12 KiB rows reach as few sets as 4 KiB ones; 3 KiB rows four times as many.
        assert!(worth_packing(1024, 1024, 3072));
        assert!(!worth_packing(1024, 1024, 768));
        // 2 KiB rows need twice the depth; 4000-byte rows spread over every set, so only a
        // block of 16 · 2048 rows crowds them.
        assert!(worth_packing(1024, 2048, 512));
        assert!(!worth_packing(1024, 512, 512));
        assert!(!worth_packing(1024, 1024, 1000));
        assert!(worth_packing(1024, 16 * 2048, 1000));
        assert!(!worth_packing(1024, 16 * 2048 - 1, 1000));
        // Rows 256 KiB apart count as 128 KiB apart (every row in one set already).
        assert!(worth_packing(1024, 16, 65536));
        assert!(!worth_packing(1024, 15, 65536));
        // Too few rows of A to pay for the pass.
        assert!(!worth_packing(255, 1024, 1024));
        assert!(!worth_packing(4096, 1024, 0));
    }

    #[test]
    fn policies_follow_their_names() {
        assert!(PackB::Always.packs(4, 4, 4));
        assert!(!PackB::Never.packs(1024, 1024, 1024));
        assert_eq!(
            PackB::Auto.packs(1024, 1024, 1024),
            worth_packing(1024, 1024, 1024)
        );
    }
}
