//! LayerNorm (last axis, layer.rs; what it keeps for backward, layer_kept.rs) and InstanceNorm
//! (per channel over space, channels-last, instance.rs): this file holds their kernels' params,
//! specs and shared checks. Kernels: shaders/layer_norm.wgsl, shaders/layer_norm_backward.wgsl,
//! shaders/instance_norm.wgsl, shaders/instance_norm_backward.wgsl. Reference:
//! src/reference/norm.rs.
//!
//! Both save (μ, rstd) in the forward pass and recompute x̂ = (x − μ)·rstd in the backward pass.
//! Every reduction over many rows (γ/β gradients, InstanceNorm statistics over D·H·W) is two-level
//! — per-block partials, then a sum over blocks — so no float atomics are needed and the result is
//! deterministic.

use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec, ParamsLayout};
use crate::tensor::Tensor;

crate::gpu::shader_params! {
    /// Mirrors `LayerNormParams` in shaders/layer_norm.wgsl and shaders/layer_norm_backward.wgsl.
    struct LayerNormParams {
        rows: u32,
        cols: u32,
        eps: f32,
        affine: u32,
        block_rows: u32,
        n_blocks: u32,
        _pad: [u32; 2],
    }
}

crate::gpu::shader_params! {
    /// Mirrors `InstanceNormParams` in shaders/instance_norm.wgsl and instance_norm_backward.wgsl.
    struct InstanceNormParams {
        batch: u32,
        spatial: u32,
        channels: u32,
        eps: f32,
        affine: u32,
        block_rows: u32,
        n_blocks: u32,
        /// LeakyReLU's slope in `instance_norm_apply_leaky`; in the backward kernels, > 0 when
        /// they read the fused op's output z instead of x (`normalized_and_grad`); else unused.
        act_slope: f32,
    }
}

const LN: &str = include_str!("../../../shaders/layer_norm.wgsl");
const LN_BACK: &str = include_str!("../../../shaders/layer_norm_backward.wgsl");
const IN: &str = include_str!("../../../shaders/instance_norm.wgsl");
const IN_BACK: &str = include_str!("../../../shaders/instance_norm_backward.wgsl");

const fn spec(
    shader: &'static str,
    source: &'static str,
    entry: &'static str,
    inputs: u32,
    outputs: u32,
    params: ParamsLayout,
) -> KernelSpec {
    KernelSpec {
        shader,
        source,
        entry,
        inputs,
        outputs,
        params,
        constants: &[],
    }
}
const LN_LAYOUT: ParamsLayout = LayerNormParams::LAYOUT;
const IN_LAYOUT: ParamsLayout = InstanceNormParams::LAYOUT;

const LN_WG: KernelSpec = spec("layer_norm", LN, "layer_norm_wg", 3, 2, LN_LAYOUT);
const LN_THREAD: KernelSpec = spec("layer_norm", LN, "layer_norm_thread", 3, 2, LN_LAYOUT);
const LN_BACK_WG: KernelSpec = spec(
    "layer_norm_backward",
    LN_BACK,
    "layer_norm_backward_input_wg",
    4,
    1,
    LN_LAYOUT,
);
const LN_BACK_THREAD: KernelSpec = spec(
    "layer_norm_backward",
    LN_BACK,
    "layer_norm_backward_input_thread",
    4,
    1,
    LN_LAYOUT,
);
const LN_BACK_PARAMS: KernelSpec = spec(
    "layer_norm_backward",
    LN_BACK,
    "layer_norm_backward_params",
    3,
    1,
    LN_LAYOUT,
);
const IN_PARTIAL: KernelSpec = spec(
    "instance_norm",
    IN,
    "instance_norm_partial",
    1,
    1,
    IN_LAYOUT,
);
const IN_FINALIZE: KernelSpec = spec(
    "instance_norm",
    IN,
    "instance_norm_finalize",
    1,
    1,
    IN_LAYOUT,
);
const IN_APPLY: KernelSpec = spec("instance_norm", IN, "instance_norm_apply", 4, 1, IN_LAYOUT);
const IN_APPLY_LEAKY: KernelSpec = spec(
    "instance_norm",
    IN,
    "instance_norm_apply_leaky",
    4,
    1,
    IN_LAYOUT,
);
const IN_BACK_PARTIAL: KernelSpec = spec(
    "instance_norm_backward",
    IN_BACK,
    "instance_norm_backward_partial",
    3,
    1,
    IN_LAYOUT,
);
const IN_BACK_INPUT: KernelSpec = spec(
    "instance_norm_backward",
    IN_BACK,
    "instance_norm_backward_input",
    5,
    1,
    IN_LAYOUT,
);

pub(crate) const KERNELS: &[KernelSpec] = &[
    LN_WG,
    LN_THREAD,
    LN_BACK_WG,
    LN_BACK_THREAD,
    LN_BACK_PARAMS,
    IN_PARTIAL,
    IN_FINALIZE,
    IN_APPLY,
    IN_APPLY_LEAKY,
    IN_BACK_PARTIAL,
    IN_BACK_INPUT,
];

/// On a GPU adapter, LayerNorm rows at most this long run one invocation per row (PVT widths
/// are 64..512); see [`thread_per_row`].
pub const LAYER_NORM_SHORT_ROW: usize = 256;

/// Rows per block of a two-level reduction over `rows`: about √rows, so both levels have similar
/// work and the first level has enough invocations to fill the device.
fn block_rows(rows: usize) -> usize {
    ((rows as f64).sqrt().ceil() as usize).max(1)
}

/// Check an optional (γ, β) pair against `channels`; returns whether affine is on.
fn check_affine(
    op: &'static str,
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    channels: usize,
) -> Result<bool> {
    let Some((gamma, beta)) = affine else {
        return Ok(false);
    };
    for t in [gamma, beta] {
        x.check_same_gpu(op, t)?;
        if t.shape() != [channels] {
            return Err(Error::shape(op, [channels], t.shape()));
        }
    }
    Ok(true)
}

fn finite_eps(op: &'static str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(op, "a finite eps >= 0", eps));
    }
    Ok(())
}

fn row_grid(rows: usize, thread: bool) -> Grid {
    if thread {
        Grid::cover(rows as u64, 64)
    } else {
        Grid::Linear(rows as u64)
    }
}

mod instance;
mod layer;
mod layer_kept;

pub use instance::{
    instance_norm, instance_norm_backward_raw, instance_norm_leaky_relu, instance_norm_raw,
    MIN_SLOPE_FROM_OUTPUT,
};
pub use layer::{layer_norm, layer_norm_backward_raw, layer_norm_raw};
