//! Tiled (implicit GEMM) conv3d kernels. Each family has a planner (`plan_forward`,
//! `plan_backward_weight`) that says from the shapes alone, before any work, whether and how a
//! tiled kernel runs; conv3d.rs resolves the whole choice once in its `ConvPlan` and uses the
//! straightforward kernels (the oracle for these) where the planner says no.
//!
//! Forward (shaders/conv3d.wgsl `conv3d_tiled_m8n8_c4` / `_c1`): GEMM with M = N·Do·Ho·Wo
//! output voxels, N = Cout, K = kD·kH·kW·Cin_g. One invocation holds an 8-voxel × 8-channel
//! register tile (16 vec4 accumulators); 64 invocations per workgroup run over voxels while the
//! channel block is the workgroup's z, so weight reads are workgroup-uniform. `_c4` reads the
//! input four channels at a time (Cin_g % 4 == 0). The stride-1 input gradient reuses it.
//!
//! Weight gradient (shaders/conv3d_backward_weight.wgsl `..._tiled_n{16,8,32}_c{4,1}`): lanes
//! over (tap, 4-channel input block), output-channel block and row chunk per workgroup, partials
//! per chunk summed by `conv3d_backward_weight_sum` (no atomics, deterministic).
//!
//! These kernels guard bounds by clamping and masked stores, never by an early return: SIMD
//! compilers such as lavapipe run both sides of a branch masked. On Mesa 25.0.7 every storage
//! load, uniform address or not, is a per-lane checked scalar sequence (docs/lavapipe-loads.md),
//! which is what bounds these kernels there.

use super::conv3d::{ConvParams, Geometry, BACKWARD_WEIGHT_SUM};
use super::conv3d_igemm::{self, IgemmTile};
use super::reduce::{split_count, sum_leading_into};
use super::{conv3d_depthwise_rows, conv3d_fold, conv3d_rows};
use crate::error::Result;
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::{DType, Tensor};

const FWD_SRC: &str = include_str!("../../shaders/conv3d.wgsl");

const fn spec(
    shader: &'static str,
    source: &'static str,
    entry: &'static str,
    inputs: u32,
) -> KernelSpec {
    KernelSpec {
        shader,
        source,
        entry,
        inputs,
        outputs: 1,
        params: ConvParams::LAYOUT,
        constants: &[],
    }
}

/// Forward tile of the tiled kernel: TM output voxels × TN output channels per invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardTile {
    M8N8,
    M16N8,
}

impl ForwardTile {
    /// (TM, TN)
    fn dims(self) -> (usize, usize) {
        match self {
            ForwardTile::M8N8 => (8, 8),
            ForwardTile::M16N8 => (16, 8),
        }
    }
}

/// Output-channel tile TN of the tiled weight-gradient kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightTile {
    N8,
    N16,
    N32,
}

impl WeightTile {
    fn channels(self) -> usize {
        match self {
            WeightTile::N8 => 8,
            WeightTile::N16 => 16,
            WeightTile::N32 => 32,
        }
    }
}

const DEPTHWISE: KernelSpec = spec("conv3d", FWD_SRC, "conv3d_depthwise_c4", 3);

/// (TM voxels, TN channels, spec for Cin_g % 4 == 0, spec for any Cin_g), preferred first.
/// Measured on lavapipe (c32 forward, % of FMA peak): m8n8 8.1, m16n8 8.6, m4n8 7.8, m2n16 5.0,
/// m8n16 4.9, m1n32 1.6 — every load costs about as much as several FMAs there, so only the two
/// best are kept. Both need Cout_g % 8 == 0.
const TILED: [(usize, usize, KernelSpec, KernelSpec); 2] = [
    (
        8,
        8,
        spec("conv3d", FWD_SRC, "conv3d_tiled_m8n8_c4", 3),
        spec("conv3d", FWD_SRC, "conv3d_tiled_m8n8_c1", 3),
    ),
    (
        16,
        8,
        spec("conv3d", FWD_SRC, "conv3d_tiled_m16n8_c4", 3),
        spec("conv3d", FWD_SRC, "conv3d_tiled_m16n8_c1", 3),
    ),
];
const BWD_W_SRC: &str = include_str!("../../shaders/conv3d_backward_weight.wgsl");
const fn bw(entry: &'static str) -> KernelSpec {
    spec("conv3d_backward_weight", BWD_W_SRC, entry, 2)
}
/// (TN channels, input channels per tile (4 = vec4 loads), spec), in order of preference: the
/// register tile is 4·TN (c4) or TN (c1) floats, kept near 64 to avoid spills.
const BWD_W_TILED: [(usize, usize, KernelSpec); 6] = [
    (16, 4, bw("conv3d_backward_weight_tiled_n16_c4")),
    (8, 4, bw("conv3d_backward_weight_tiled_n8_c4")),
    (32, 4, bw("conv3d_backward_weight_tiled_n32_c4")),
    (32, 1, bw("conv3d_backward_weight_tiled_n32_c1")),
    (16, 1, bw("conv3d_backward_weight_tiled_n16_c1")),
    (8, 1, bw("conv3d_backward_weight_tiled_n8_c1")),
];

const BWD_W_DEPTHWISE: KernelSpec = bw("conv3d_backward_weight_depthwise_c4");

pub(crate) const KERNELS: &[KernelSpec] = &[
    DEPTHWISE,
    BWD_W_DEPTHWISE,
    TILED[0].2,
    TILED[0].3,
    TILED[1].2,
    TILED[1].3,
    BWD_W_TILED[0].2,
    BWD_W_TILED[1].2,
    BWD_W_TILED[2].2,
    BWD_W_TILED[3].2,
    BWD_W_TILED[4].2,
    BWD_W_TILED[5].2,
];

/// Depthwise (groups = C, multiplier 1, C % 4 == 0) weight gradient: lanes over (tap, 4
/// channels), chunks of output rows per workgroup z, then the sum pass.
fn backward_weight_depthwise(g: &Tensor, x: &Tensor, gw: &Tensor, geo: &Geometry) -> Result<()> {
    let gpu = g.gpu();
    let taps: usize = geo.cfg.kernel.iter().product();
    let blocks = (taps * geo.x[4] / 4).div_ceil(64);
    let rows = geo.out[0] * geo.out[1] * geo.out[2];
    let wn = gw.numel();
    let chunks = split_count(blocks, rows, wn).min(65_535);
    let chunk = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(chunk);
    let partial = Tensor::uninit(gpu, "conv3d_backward_weight", &[chunks, wn])?;
    let mut params = geo.params(wn, false);
    params.splits = chunks as u32;
    params.chunk = chunk as u32;
    gpu.dispatch(
        &BWD_W_DEPTHWISE,
        &params,
        &[x.buffer(), g.buffer()],
        &[partial.buffer()],
        fold(blocks, chunks),
    )?;
    gpu.dispatch(
        &BACKWARD_WEIGHT_SUM,
        &params,
        &[partial.buffer()],
        &[gw.buffer()],
        Grid::cover(wn as u64, 64),
    )
}

/// A grid of `blocks` workgroups along a folded x·y axis, times `z` (the conv launchers' grid).
pub(crate) fn fold(blocks: usize, z: usize) -> Grid {
    let y = blocks.div_ceil(65_535).max(1);
    let x = blocks.div_ceil(y).max(1);
    Grid::Xyz(x as u32, y as u32, z as u32)
}

/// Launch a weight-gradient kernel that sums `params.chunk` output voxels (or rows) per chunk:
/// with one chunk it writes `gw` directly; with more, partials `[chunks, |gw|]` (z = `col_blocks`
/// · chunks) and then the ordered sum pass (no atomics, deterministic). `params.splits` is the
/// chunk count; the kernel's bindings are (x, g) → out, its grid `fold(blocks, col_blocks ·
/// chunks)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_gradient_in_chunks(
    spec: &KernelSpec,
    params: &ConvParams,
    x: &Tensor,
    g: &Tensor,
    gw: &Tensor,
    blocks: usize,
    col_blocks: usize,
) -> Result<()> {
    let gpu = g.gpu();
    let chunks = params.splits as usize;
    // A kernel reading f16 activations (x and g as f16 words) binds f16 buffers.
    let half = x.dtype() == DType::F16;
    let launch = |out: &Tensor, grid| {
        let (inputs, outputs) = ([x.buffer(), g.buffer()], [out.buffer()]);
        if half {
            gpu.dispatch_f16_aware(spec, params, &inputs, &outputs, grid)
        } else {
            gpu.dispatch(spec, params, &inputs, &outputs, grid)
        }
    };
    if chunks == 1 {
        return launch(gw, fold(blocks, col_blocks));
    }
    let partial = Tensor::uninit(gpu, "conv3d_backward_weight", &[chunks, gw.numel()])?;
    launch(&partial, fold(blocks, col_blocks * chunks))?;
    gpu.dispatch(
        &BACKWARD_WEIGHT_SUM,
        params,
        &[partial.buffer()],
        &[gw.buffer()],
        Grid::cover(gw.numel() as u64, 64),
    )
}

/// The depthwise kernels' condition: groups = C with multiplier 1, C % 4 == 0 (vec4 channels).
fn is_depthwise(geo: &Geometry) -> bool {
    geo.cin_g == 1 && geo.cout_g == 1 && geo.x[4].is_multiple_of(4)
}

/// A resolved fast forward launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FastForward {
    Depthwise,
    /// Depthwise, kernel width 3, on lanes over channels for CPU adapters
    /// (conv3d_depthwise_rows.rs), in workgroups of 16 lanes when `wide`.
    DepthwiseRows {
        wide: bool,
    },
    /// The workgroup-memory implicit GEMM for GPUs (conv3d_igemm.rs).
    Igemm(IgemmTile),
    /// Lanes over output channels for CPU adapters (conv3d_rows.rs), on `tile` of the `lanes`
    /// family.
    Rows {
        lanes: conv3d_rows::RowsLanes,
        tile: conv3d_rows::RowsTile,
    },
    /// Cin not in fours: the row kernels of the `lanes` family on the input with kernel axes
    /// folded into its channels (conv3d_fold.rs).
    RowsFolded {
        lanes: conv3d_rows::RowsLanes,
    },
    /// `TILED[variant]`, with vec4 input loads when `c4` (Cin_g % 4 == 0).
    Tiled {
        variant: usize,
        c4: bool,
    },
}

/// Which fast forward kernel fits `geo`, if any: depthwise, else the first tile (or the forced
/// one) whose TN divides Cout_g.
pub(crate) fn plan_forward(geo: &Geometry, forced: Option<ForwardTile>) -> Option<FastForward> {
    if is_depthwise(geo) {
        return Some(FastForward::Depthwise);
    }
    let variant = TILED.iter().position(|(tm, tn, ..)| {
        geo.cout_g.is_multiple_of(*tn) && forced.is_none_or(|f| f.dims() == (*tm, *tn))
    })?;
    Some(FastForward::Tiled {
        variant,
        c4: geo.cin_g.is_multiple_of(4),
    })
}

/// y = conv3d(x, w) + b with the planned fast kernel.
pub(crate) fn forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    geo: &Geometry,
    plan: FastForward,
) -> Result<()> {
    let gpu = x.gpu();
    let dummy;
    let b = match bias {
        Some(b) => b.buffer(),
        None => {
            dummy = Tensor::zeros(gpu, &[4])?;
            dummy.buffer()
        }
    };
    let (variant, c4) = match plan {
        // The other families bring their own launchers (and dummy bias).
        FastForward::Igemm(tile) => return conv3d_igemm::forward(x, w, bias, y, geo, tile),
        FastForward::Rows { lanes, tile } => {
            return conv3d_rows::forward(x, w, bias, y, geo, lanes, tile)
        }
        FastForward::RowsFolded { lanes } => {
            return conv3d_fold::forward(x, w, bias, y, geo, lanes)
        }
        FastForward::DepthwiseRows { wide } => {
            return conv3d_depthwise_rows::forward(x, w, bias, y, geo, wide)
        }
        FastForward::Depthwise => {
            let params: ConvParams = geo.params(y.numel(), bias.is_some());
            let blocks = geo.m_total().div_ceil(256);
            let grid = fold(blocks, geo.x[4] / 4);
            return gpu.dispatch(
                &DEPTHWISE,
                &params,
                &[x.buffer(), w.buffer(), b],
                &[y.buffer()],
                grid,
            );
        }
        FastForward::Tiled { variant, c4 } => (variant, c4),
    };
    let (tm, tn, s4, s1) = &TILED[variant];
    let spec = if c4 { s4 } else { s1 };
    let mut params: ConvParams = geo.params(y.numel(), bias.is_some());
    let blocks = geo.m_total().div_ceil(64 * tm);
    let co_blocks = geo.out[4] / tn;
    let taps: usize = geo.cfg.kernel.iter().product();
    // Split-K over taps when the output gives few workgroups (a patch-embedding conv such as
    // SR 8 has 36 output voxels and 32 768 products per output).
    let splits = split_count(blocks * co_blocks, taps, y.numel());
    let chunk = taps.div_ceil(splits);
    let splits = taps.div_ceil(chunk);
    params.splits = splits as u32;
    params.chunk = chunk as u32;
    let grid = fold(blocks, co_blocks * splits);
    // Split-K over taps: partial outputs [splits, M, Cout], then their sum (bias is in split 0).
    let partial = if splits > 1 {
        Some(Tensor::uninit(gpu, "conv3d", &[splits, y.numel()])?)
    } else {
        None
    };
    let target = partial.as_ref().unwrap_or(y);
    gpu.dispatch(
        spec,
        &params,
        &[x.buffer(), w.buffer(), b],
        &[target.buffer()],
        grid,
    )?;
    if let Some(partial) = partial {
        sum_leading_into(&partial, y)?;
    }
    Ok(())
}

/// A resolved fast weight-gradient launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FastWeight {
    Depthwise,
    /// The workgroup-memory implicit GEMM for GPUs (conv3d_igemm.rs).
    Igemm(IgemmTile),
    /// Lanes over output channels for CPU adapters (conv3d_rows.rs), on `tile` of the `lanes`
    /// family.
    Rows {
        lanes: conv3d_rows::RowsLanes,
        tile: conv3d_rows::RowsWeightTile,
    },
    /// Depthwise, kernel width 3, lanes over channels for CPU adapters
    /// (conv3d_depthwise_rows.rs), in workgroups of 16 lanes when `wide`.
    DepthwiseRows {
        wide: bool,
    },
    /// `BWD_W_TILED[variant]`.
    Tiled {
        variant: usize,
    },
}

/// Which fast weight-gradient kernel fits `geo`, if any: depthwise, else the first tile (or the
/// forced channel tile) with the right input-channel vector width whose TN divides Cout_g.
pub(crate) fn plan_backward_weight(
    geo: &Geometry,
    forced: Option<WeightTile>,
) -> Option<FastWeight> {
    if is_depthwise(geo) {
        return Some(FastWeight::Depthwise);
    }
    let c4 = geo.cin_g.is_multiple_of(4);
    let variant = BWD_W_TILED.iter().position(|(tn, nci, _)| {
        (*nci == 4) == c4
            && geo.cout_g.is_multiple_of(*tn)
            && forced.is_none_or(|f| f.channels() == *tn)
    })?;
    Some(FastWeight::Tiled { variant })
}

/// gw = Σ_m x(m @ tap) ⊗ g(m) with the planned fast kernel, then the sum pass.
pub(crate) fn backward_weight(
    g: &Tensor,
    x: &Tensor,
    gw: &Tensor,
    geo: &Geometry,
    plan: FastWeight,
) -> Result<()> {
    let variant = match plan {
        FastWeight::Igemm(tile) => return conv3d_igemm::backward_weight(g, x, gw, geo, tile),
        FastWeight::Rows { lanes, tile } => {
            return conv3d_rows::backward_weight(g, x, gw, geo, lanes, tile)
        }
        FastWeight::Depthwise => return backward_weight_depthwise(g, x, gw, geo),
        FastWeight::DepthwiseRows { wide } => {
            return conv3d_depthwise_rows::backward_weight(g, x, gw, geo, wide)
        }
        FastWeight::Tiled { variant } => variant,
    };
    let (tn, nci, spec) = &BWD_W_TILED[variant];
    let gpu = g.gpu();
    let taps: usize = geo.cfg.kernel.iter().product();
    let tc_blocks = (taps * geo.cin_g / nci).div_ceil(64);
    let co_blocks = geo.out[4] / tn;
    let rows = geo.out[0] * geo.out[1] * geo.out[2];
    let wn = gw.numel();
    // Chunks of output rows: enough workgroups to fill the machine, a partial buffer of at
    // most 16 Mi floats.
    let per_chunk = tc_blocks * co_blocks;
    let chunks = split_count(per_chunk, rows, wn).min(65_535);
    let chunk = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(chunk);
    let partial = Tensor::uninit(gpu, "conv3d_backward_weight", &[chunks, wn])?;
    let mut params = geo.params(wn, false);
    params.splits = chunks as u32;
    params.chunk = chunk as u32;
    let grid = Grid::Xyz(tc_blocks as u32, co_blocks as u32, chunks as u32);
    gpu.dispatch(
        spec,
        &params,
        &[x.buffer(), g.buffer()],
        &[partial.buffer()],
        grid,
    )?;
    gpu.dispatch(
        &BACKWARD_WEIGHT_SUM,
        &params,
        &[partial.buffer()],
        &[gw.buffer()],
        Grid::cover(wn as u64, 64),
    )
}
