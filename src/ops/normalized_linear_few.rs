//! `normalized_linear` for at most [`FEW_ROWS`] rows (a DINO head's crops): the forward computes
//! v's column norms and the product x·v in one pass over v, and the weight gradient writes ∂v
//! from x, G and v in one pass without forming xᵀG. Kernels: shaders/normalized_linear.wgsl.
//!
//! Why: with few rows both [B, K] products are bound by memory, not arithmetic: the forward
//! read v twice (norms, product) and the backward wrote xᵀG (61 MB for the DINO head) only to
//! read it back for the norm's correction. Measured on lavapipe in docs/kernel-tuning.md.

use crate::error::Result;
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

const SOURCE: &str = include_str!("../../shaders/normalized_linear.wgsl");

/// The most rows the fused kernels take (the forward keeps 8 rows of accumulators per lane).
pub(crate) const FEW_ROWS: usize = 8;

/// Vec4 columns per workgroup (64 lanes × 2).
const BLOCK4: usize = 128;

/// Rows of v per workgroup of the weight gradient (`V_ROWS` in the shader): one row each made
/// 30,208 workgroups of a few µs of work for the DINO head, and took 42 ms.
const V_ROWS: u32 = 32;

crate::gpu::shader_params! {
    /// Mirrors `NlParams` in shaders/normalized_linear.wgsl.
    pub(crate) struct NlParams {
        pub(crate) rows: u32,
        pub(crate) depth: u32,
        pub(crate) cols: u32,
        pub(crate) eps: f32,
    }
}

const FORWARD: KernelSpec = KernelSpec {
    shader: "normalized_linear",
    source: SOURCE,
    entry: "nl_forward_few",
    inputs: 2,
    outputs: 3,
    params: NlParams::LAYOUT,
    constants: &[],
};

const WEIGHT_GRAD: KernelSpec = KernelSpec {
    shader: "normalized_linear",
    source: SOURCE,
    entry: "nl_weight_grad_few",
    inputs: 5,
    outputs: 1,
    params: NlParams::LAYOUT,
    constants: &[],
};

pub(crate) const KERNELS: &[KernelSpec] = &[FORWARD, WEIGHT_GRAD];

/// Whether `rows` rows by a `[depth, cols]` weight (cols a multiple of 4) take these kernels:
/// at most [`FEW_ROWS`] rows, and grids within one axis.
pub(crate) fn fits(rows: usize, depth: usize, cols: usize) -> bool {
    (1..=FEW_ROWS).contains(&rows)
        && depth >= 1
        && depth.div_ceil(V_ROWS as usize) <= 65_535
        && cols.is_multiple_of(4)
        && (cols / 4).div_ceil(BLOCK4) <= 65_535
}

fn blocks(p: &NlParams) -> u32 {
    (p.cols / 4).div_ceil(BLOCK4 as u32)
}

/// y = (x·v)·diag(s), with P = x·v and the column norms n kept for the backward.
pub(crate) fn forward(
    p: &NlParams,
    x: &Tensor,
    v: &Tensor,
    y: &Tensor,
    product: &Tensor,
    norms: &Tensor,
) -> Result<()> {
    x.gpu().dispatch(
        &FORWARD,
        p,
        &[x.buffer(), v.buffer()],
        &[y.buffer(), product.buffer(), norms.buffer()],
        Grid::Xyz(blocks(p), 1, 1),
    )
}

/// ∂v = (xᵀG)·diag(inv) − v·diag(κ), inv = 1/n where n > eps, else 1/eps.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad(
    p: &NlParams,
    x: &Tensor,
    g: &Tensor,
    v: &Tensor,
    norms: &Tensor,
    kappa: &Tensor,
    gv: &Tensor,
) -> Result<()> {
    x.gpu().dispatch(
        &WEIGHT_GRAD,
        p,
        &[
            x.buffer(),
            g.buffer(),
            v.buffer(),
            norms.buffer(),
            kappa.buffer(),
        ],
        &[gv.buffer()],
        Grid::Xyz(blocks(p), p.depth.div_ceil(V_ROWS), 1),
    )
}
