//! `l2_normalize` over an axis whose lines are many adjacent columns (inner ≥ [`WIDE_MIN_INNER`],
//! a multiple of 4): a weight-normalised head's `[in, out]` weight normalised over `in`. Kernels:
//! the wide entries of shaders/l2_normalize.wgsl.
//!
//! Why: the line-per-invocation kernels walk the normalised axis one row at a time, each load
//! 4·inner bytes after the last (240 KB for the DINO head's [256, 60000]), so on a CPU adapter
//! every load misses the caches and the walk waits on memory latency; the forward walked the
//! lines twice (sum, then scale) and the backward twice (dot, then apply). Here each walk keeps
//! only the reduction, four vec4 columns per lane so a workgroup reads 4 KB runs per row, and the
//! elementwise half runs row by row over contiguous memory. Same sums in the same order and the
//! same per-element expressions: the results are the line kernels' bit for bit (tested).
//! Measured on lavapipe (docs/kernel-tuning.md); on a GPU the column reductions run a quarter of
//! the line kernel's lanes (the row passes many more), unmeasured there so far.

use super::loss::{L2Params, L2_LAYOUT};
use crate::error::Result;
use crate::gpu::{Gpu, Grid, KernelSpec};
use crate::tensor::Tensor;

const SOURCE: &str = include_str!("../../shaders/l2_normalize.wgsl");

/// The fewest columns that take the wide kernels: one workgroup's block (64 lanes × 4 vec4).
pub(crate) const WIDE_MIN_INNER: usize = 1024;

const fn spec(entry: &'static str, inputs: u32) -> KernelSpec {
    KernelSpec {
        shader: "l2_normalize",
        source: SOURCE,
        entry,
        inputs,
        outputs: 1,
        params: L2_LAYOUT,
        constants: &[],
    }
}

const COLUMN_NORMS: KernelSpec = spec("l2_column_norms4", 1);
const SCALE_ROWS: KernelSpec = spec("l2_scale_rows4", 2);
const COLUMN_DOTS: KernelSpec = spec("l2_column_dots4", 3);
const BACKWARD_APPLY: KernelSpec = spec("l2_backward_apply4", 4);
const BACKWARD_APPLY_IN_PLACE: KernelSpec = spec("l2_backward_apply_in_place4", 3);

pub(crate) const KERNELS: &[KernelSpec] = &[
    COLUMN_NORMS,
    SCALE_ROWS,
    COLUMN_DOTS,
    BACKWARD_APPLY,
    BACKWARD_APPLY_IN_PLACE,
];

/// The most outer blocks: the column reductions put the outer index on the grid's y axis.
const MAX_OUTER: usize = 65_535;

/// Whether a normalisation of `outer` blocks of `inner` adjacent lines takes the wide kernels.
pub(crate) fn fits(outer: usize, inner: usize) -> bool {
    inner >= WIDE_MIN_INNER && inner.is_multiple_of(4) && outer <= MAX_OUTER
}

/// Workgroups along x: blocks of 256 vec4 columns.
fn column_blocks(p: &L2Params) -> u32 {
    (p.inner / 4).div_ceil(256)
}

/// The per-column reductions: one workgroup per (column block, o).
fn columns_grid(p: &L2Params) -> Grid {
    Grid::Xyz(column_blocks(p), p.outer, 1)
}

/// The row passes: (column block, row) with the rows o·A + a folded over (y, z).
fn rows_grid(p: &L2Params) -> Grid {
    let rows = p.outer * p.axis_len;
    let z = rows.div_ceil(65_535);
    Grid::Xyz(column_blocks(p), rows.div_ceil(z), z)
}

/// The column norms `n[o, i] = ‖x[o, :, i]‖` into `norms` (`[outer·inner]`).
pub(crate) fn column_norms(gpu: &Gpu, p: &L2Params, x: &Tensor, norms: &Tensor) -> Result<()> {
    gpu.dispatch(
        &COLUMN_NORMS,
        p,
        &[x.buffer()],
        &[norms.buffer()],
        columns_grid(p),
    )
}

/// `y[o, a, i] = x[o, a, i] / max(n[o, i], eps)`, row by row.
pub(crate) fn scale_rows(
    gpu: &Gpu,
    p: &L2Params,
    x: &Tensor,
    norms: &Tensor,
    y: &Tensor,
) -> Result<()> {
    gpu.dispatch(
        &SCALE_ROWS,
        p,
        &[x.buffer(), norms.buffer()],
        &[y.buffer()],
        rows_grid(p),
    )
}

/// `k[o, i] = (Σ_a x·g)/n³` where `n[o, i] > eps`, else 0, into `k` (`[outer·inner]`).
pub(crate) fn column_dots(
    gpu: &Gpu,
    p: &L2Params,
    x: &Tensor,
    norms: &Tensor,
    g: &Tensor,
    k: &Tensor,
) -> Result<()> {
    gpu.dispatch(
        &COLUMN_DOTS,
        p,
        &[x.buffer(), norms.buffer(), g.buffer()],
        &[k.buffer()],
        columns_grid(p),
    )
}

/// `gx = g·inv − x·k` with `inv = 1/n` where `n > eps`, else `1/eps`, row by row.
pub(crate) fn backward_apply(
    gpu: &Gpu,
    p: &L2Params,
    x: &Tensor,
    norms: &Tensor,
    g: &Tensor,
    k: &Tensor,
    gx: &Tensor,
) -> Result<()> {
    gpu.dispatch(
        &BACKWARD_APPLY,
        p,
        &[x.buffer(), norms.buffer(), g.buffer(), k.buffer()],
        &[gx.buffer()],
        rows_grid(p),
    )
}

/// [`backward_apply`] on a `g` that is not needed after: `g` becomes gx in place.
pub(crate) fn backward_apply_in_place(
    gpu: &Gpu,
    p: &L2Params,
    x: &Tensor,
    norms: &Tensor,
    k: &Tensor,
    g_to_gx: &Tensor,
) -> Result<()> {
    gpu.dispatch(
        &BACKWARD_APPLY_IN_PLACE,
        p,
        &[x.buffer(), norms.buffer(), k.buffer()],
        &[g_to_gx.buffer()],
        rows_grid(p),
    )
}

/// Forward: the norms `[outer·inner]` into `norms`, then `y = x / max(n, eps)`.
pub(crate) fn forward(
    gpu: &Gpu,
    p: &L2Params,
    x: &Tensor,
    y: &Tensor,
    norms: &Tensor,
) -> Result<()> {
    column_norms(gpu, p, x, norms)?;
    scale_rows(gpu, p, x, norms, y)
}

/// Backward: k = (Σ_a x·g)/n³ per line (0 where n ≤ eps), then gx = g·inv − x·k.
pub(crate) fn backward(
    gpu: &Gpu,
    p: &L2Params,
    x: &Tensor,
    norms: &Tensor,
    g: &Tensor,
    gx: &Tensor,
) -> Result<()> {
    let k = Tensor::uninit(gpu, "l2_normalize_backward", norms.shape())?;
    column_dots(gpu, p, x, norms, g, &k)?;
    backward_apply(gpu, p, x, norms, g, &k, gx)
}
