//! Depthwise conv3d of kernel width 3 (stride 1, dilation 1 along W) on lanes over channels with
//! a sliding window along W (shaders/conv3d_depthwise_rows.wgsl): the CPU-adapter counterpart of
//! the vec4 depthwise kernels, on the `rows` path (`ConvPath::Rows`, conv3d_plan.rs).
//!
//! The PVT blocks' DWConv (3³, stride 1, padding 1 over the hidden channels) is the shape this is
//! for; its input gradient is the same depthwise conv with the flipped kernel, so it runs here too.
//! Why lanes over channels: see conv3d_rows.rs (uniform addresses on CPU adapters); why the window:
//! the three W taps of a kernel row read overlapping inputs, loaded once per window here instead
//! of once per tap (the shader's header counts the loads).

use super::conv3d::{self, Geometry};
use super::conv3d_fast::{fold, weight_gradient_in_chunks};
use super::conv3d_plan::ConvPath;
use super::conv3d_rows::{self, RowsLanes};
use super::reduce::split_count_toward;
use crate::error::Result;
use crate::gpu::KernelSpec;
use crate::tensor::{DType, Tensor};

const SOURCE: &str = concat!(
    include_str!("../../shaders/conv3d_depthwise_rows.wgsl"),
    include_str!("../../shaders/f16_bits.wgsl")
);

const fn spec(entry: &'static str, inputs: u32) -> KernelSpec {
    conv3d::spec("conv3d_depthwise_rows", SOURCE, entry, inputs)
}

const FORWARD: KernelSpec = spec("conv3d_depthwise_rows_w3", 3);
const BACKWARD_WEIGHT: KernelSpec = spec("conv3d_backward_weight_depthwise_rows_w3", 2);
const FORWARD_W16: KernelSpec = conv3d_rows::wide(FORWARD);
const BACKWARD_WEIGHT_W16: KernelSpec = conv3d_rows::wide(BACKWARD_WEIGHT);

/// The same on f16 activations (x, y and g as f16; weights, bias and sums f32), in workgroups of
/// 8, 16 or 64 lanes ([`HalfShape`]).
const FORWARD_X16: KernelSpec = spec("conv3d_depthwise_rows_w3_x16", 3);
const BACKWARD_WEIGHT_X16: KernelSpec = spec("conv3d_backward_weight_depthwise_rows_w3_x16", 2);
const FORWARD_X16_W16: KernelSpec = conv3d_rows::wide(FORWARD_X16);
const BACKWARD_WEIGHT_X16_W16: KernelSpec = conv3d_rows::wide(BACKWARD_WEIGHT_X16);
const GPU_LANES: usize = 64;
const GPU: &[(&str, f64)] = &[("LANES", GPU_LANES as f64)];
const FORWARD_X16_W64: KernelSpec = KernelSpec {
    constants: GPU,
    ..FORWARD_X16
};
const BACKWARD_WEIGHT_X16_W64: KernelSpec = KernelSpec {
    constants: GPU,
    ..BACKWARD_WEIGHT_X16
};

pub(crate) const KERNELS: &[KernelSpec] = &[
    FORWARD,
    BACKWARD_WEIGHT,
    FORWARD_W16,
    BACKWARD_WEIGHT_W16,
    FORWARD_X16,
    BACKWARD_WEIGHT_X16,
    FORWARD_X16_W16,
    BACKWARD_WEIGHT_X16_W16,
    FORWARD_X16_W64,
    BACKWARD_WEIGHT_X16_W64,
];

/// Lanes per workgroup (vec4 groups of channels) of the 8-lane kernels; the shader's `LANES`.
const LANES: usize = 8;

/// Lanes per workgroup and the forward and weight-gradient kernels: 16 lanes in the `rows_w16`
/// family (`wide`), 8 otherwise.
fn kernels(wide: bool) -> (usize, &'static KernelSpec, &'static KernelSpec) {
    if wide {
        (conv3d_rows::WIDE_LANES, &FORWARD_W16, &BACKWARD_WEIGHT_W16)
    } else {
        (LANES, &FORWARD, &BACKWARD_WEIGHT)
    }
}
/// Workgroups the forward aims at (each takes a run of output rows).
const FORWARD_TARGET_WORKGROUPS: usize = 256;
/// Workgroups a split weight-gradient launch aims at (as conv3d_rows.rs).
const SPLIT_TARGET_WORKGROUPS: usize = 64;

/// The f16 kernels' workgroup shape on an adapter. They run wherever mixed precision does
/// (`ops::dw_mlp_mixed`), GPUs included, whereas the f32 kernels of this file serve the CPU
/// adapters' `rows` conv path only: on that path 8 or 16 lanes (one SIMD row) and a few hundred
/// workgroups of many rows each, as the f32 kernels; on any other path (a GPU's) 64 lanes, one
/// output row per workgroup and 16× the weight-gradient splits, so a wide GPU has warps to fill.
/// (The GPU shape is checked on lavapipe for its values, not yet timed on a GPU.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HalfShape {
    lanes: usize,
    forward_workgroups: usize,
    split_workgroups: usize,
}

impl HalfShape {
    pub(crate) fn for_adapter(gpu: &crate::Gpu) -> Result<HalfShape> {
        let cpu = |lanes| HalfShape {
            lanes,
            forward_workgroups: FORWARD_TARGET_WORKGROUPS,
            split_workgroups: SPLIT_TARGET_WORKGROUPS,
        };
        Ok(match ConvPath::chosen(gpu)? {
            ConvPath::Rows(RowsLanes::Wide) => cpu(conv3d_rows::WIDE_LANES),
            ConvPath::Rows(_) => cpu(LANES),
            _ => HalfShape {
                lanes: GPU_LANES,
                forward_workgroups: usize::MAX,
                split_workgroups: 16 * SPLIT_TARGET_WORKGROUPS,
            },
        })
    }

    fn kernels(self) -> (&'static KernelSpec, &'static KernelSpec) {
        match self.lanes {
            GPU_LANES => (&FORWARD_X16_W64, &BACKWARD_WEIGHT_X16_W64),
            conv3d_rows::WIDE_LANES => (&FORWARD_X16_W16, &BACKWARD_WEIGHT_X16_W16),
            _ => (&FORWARD_X16, &BACKWARD_WEIGHT_X16),
        }
    }
}

/// Whether `geo` fits: depthwise (groups = Cin = Cout) over channels in fours, kernel width 3,
/// stride and dilation 1 along W.
pub(crate) fn fits(geo: &Geometry) -> bool {
    let c = &geo.cfg;
    geo.cin_g == 1
        && geo.cout_g == 1
        && geo.x[4].is_multiple_of(4)
        && c.kernel[2] == 3
        && c.stride[2] == 1
        && c.dilation[2] == 1
}

/// y = depthwise conv3d(x, w) + b, in workgroups of 16 lanes when `wide`.
pub(crate) fn forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    geo: &Geometry,
    wide: bool,
) -> Result<()> {
    let (lanes, spec, _) = kernels(wide);
    launch_forward(spec, lanes, FORWARD_TARGET_WORKGROUPS, x, w, bias, y, geo)
}

/// [`forward`] on f16 activations: x and y f16, w and the bias f32; the sums in f32 as the f32
/// kernel makes them, y rounded once to the nearest f16. In workgroups of `shape`.
pub(crate) fn forward_half(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    geo: &Geometry,
    shape: HalfShape,
) -> Result<()> {
    let (spec, _) = shape.kernels();
    let target = shape.forward_workgroups;
    launch_forward(spec, shape.lanes, target, x, w, bias, y, geo)
}

#[allow(clippy::too_many_arguments)]
fn launch_forward(
    spec: &KernelSpec,
    lanes: usize,
    target_workgroups: usize,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    geo: &Geometry,
) -> Result<()> {
    let gpu = x.gpu();
    let dummy;
    let b = match bias {
        Some(b) => b.buffer(),
        None => {
            // One vec4: the shader reads the bias as vec4s (scaled by has_bias = 0).
            dummy = Tensor::zeros(gpu, &[4])?;
            dummy.buffer()
        }
    };
    let rows = geo.out[0] * geo.out[1] * geo.out[2];
    let cblocks = (geo.x[4] / 4).div_ceil(lanes);
    // Output rows per workgroup: enough workgroups to keep every thread busy, each with enough
    // work that the per-workgroup cost of a CPU adapter does not dominate.
    let chunks = (target_workgroups.div_ceil(cblocks)).clamp(1, rows);
    let chunk = rows.div_ceil(chunks);
    let mut params = geo.params(y.numel(), bias.is_some());
    params.chunk = chunk as u32;
    let blocks = rows.div_ceil(chunk);
    let (inputs, outputs) = ([x.buffer(), w.buffer(), b], [y.buffer()]);
    let grid = fold(blocks, cblocks);
    if x.dtype() == DType::F16 {
        gpu.dispatch_f16_aware(spec, &params, &inputs, &outputs, grid)
    } else {
        gpu.dispatch(spec, &params, &inputs, &outputs, grid)
    }
}

/// gw = Σ over output voxels of x(voxel @ tap) · g(voxel), per channel: output rows split into
/// chunks (partials), then the sum pass; in workgroups of 16 lanes when `wide`.
pub(crate) fn backward_weight(
    g: &Tensor,
    x: &Tensor,
    gw: &Tensor,
    geo: &Geometry,
    wide: bool,
) -> Result<()> {
    let (lanes, _, spec) = kernels(wide);
    launch_backward_weight(spec, lanes, SPLIT_TARGET_WORKGROUPS, g, x, gw, geo)
}

/// [`backward_weight`] from f16 activations: g and x f16, gw f32 (the f32 kernel's sums on the
/// widened values). In workgroups of `shape`.
pub(crate) fn backward_weight_half(
    g: &Tensor,
    x: &Tensor,
    gw: &Tensor,
    geo: &Geometry,
    shape: HalfShape,
) -> Result<()> {
    let (_, spec) = shape.kernels();
    launch_backward_weight(spec, shape.lanes, shape.split_workgroups, g, x, gw, geo)
}

#[allow(clippy::too_many_arguments)]
fn launch_backward_weight(
    spec: &KernelSpec,
    lanes: usize,
    split_workgroups: usize,
    g: &Tensor,
    x: &Tensor,
    gw: &Tensor,
    geo: &Geometry,
) -> Result<()> {
    let pairs = geo.cfg.kernel[0] * geo.cfg.kernel[1];
    let cblocks = (geo.x[4] / 4).div_ceil(lanes);
    let rows = geo.out[0] * geo.out[1] * geo.out[2];
    let wn = gw.numel();
    let chunks =
        split_count_toward(split_workgroups, pairs * cblocks, rows, wn).min(65_535 / cblocks);
    let chunk = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(chunk);
    let mut params = geo.params(wn, false);
    params.splits = chunks as u32;
    params.chunk = chunk as u32;
    weight_gradient_in_chunks(spec, &params, x, g, gw, pairs, cblocks)
}
