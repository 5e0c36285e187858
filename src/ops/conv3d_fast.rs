//! Tiled (implicit GEMM) conv3d kernels. Each launcher returns `Ok(false)` when its shape
//! conditions do not hold, and the caller falls back to the straightforward kernels of
//! conv3d.rs, which stay the oracle for these.
//!
//! Forward (shaders/conv3d.wgsl `conv3d_tiled_c4` / `_c1`): GEMM with M = N·Do·Ho·Wo output
//! voxels, N = Cout, K = kD·kH·kW·Cin_g. One invocation holds a 4-voxel × 8-channel register tile
//! (eight vec4 accumulators); 64 invocations per workgroup run over voxels while the channel
//! block is the workgroup's z, so weight reads are workgroup-uniform. `_c4` reads the input four
//! channels at a time (Cin_g % 4 == 0).

use super::conv3d::{ConvParams, Geometry, BACKWARD_WEIGHT_SUM};
use crate::error::Result;
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

const SIZE: usize = std::mem::size_of::<ConvParams>();
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
        params_size: SIZE,
        constants: &[],
    }
}

const TILED_C4: KernelSpec = spec("conv3d", FWD_SRC, "conv3d_tiled_c4", 3);
const TILED_C1: KernelSpec = spec("conv3d", FWD_SRC, "conv3d_tiled_c1", 3);
const BWD_W_SRC: &str = include_str!("../../shaders/conv3d_backward_weight.wgsl");
const BWD_W_TILED_C4: KernelSpec = spec(
    "conv3d_backward_weight",
    BWD_W_SRC,
    "conv3d_backward_weight_tiled_c4",
    2,
);
const BWD_W_TILED_C1: KernelSpec = spec(
    "conv3d_backward_weight",
    BWD_W_SRC,
    "conv3d_backward_weight_tiled_c1",
    2,
);

pub(crate) const KERNELS: &[KernelSpec] = &[TILED_C4, TILED_C1, BWD_W_TILED_C4, BWD_W_TILED_C1];

/// Output voxels per invocation and channels per workgroup of the tiled forward kernels.
const TM: usize = 4;
const TN: usize = 8;

/// A grid of `blocks` workgroups along a folded x·y axis, times `z`.
fn fold(blocks: usize, z: usize) -> Grid {
    let y = blocks.div_ceil(65_535).max(1);
    let x = blocks.div_ceil(y).max(1);
    Grid::Xyz(x as u32, y as u32, z as u32)
}

/// y = conv3d(x, w) + b with the tiled kernels, when Cout_g is a multiple of 8.
pub(crate) fn forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    geo: &Geometry,
) -> Result<bool> {
    if geo.cout_g % TN != 0 {
        return Ok(false);
    }
    let gpu = x.gpu();
    let spec = if geo.cin_g % 4 == 0 {
        &TILED_C4
    } else {
        &TILED_C1
    };
    let dummy;
    let b = match bias {
        Some(b) => b.buffer(),
        None => {
            dummy = Tensor::zeros(gpu, &[4])?;
            dummy.buffer()
        }
    };
    let params: ConvParams = geo.params(y.numel(), bias.is_some());
    let blocks = geo.m_total().div_ceil(64 * TM);
    gpu.dispatch(
        spec,
        &params,
        &[x.buffer(), w.buffer(), b],
        &[y.buffer()],
        fold(blocks, geo.out[4] / TN),
    )?;
    Ok(true)
}

/// gw = Σ_m x(m @ tap) ⊗ g(m) with the tiled kernels (Cout_g % 8 == 0), then the sum pass.
pub(crate) fn backward_weight(g: &Tensor, x: &Tensor, gw: &Tensor, geo: &Geometry) -> Result<bool> {
    if geo.cout_g % TN != 0 {
        return Ok(false);
    }
    let gpu = g.gpu();
    let c4 = geo.cin_g % 4 == 0;
    let spec = if c4 { &BWD_W_TILED_C4 } else { &BWD_W_TILED_C1 };
    let taps: usize = geo.cfg.kernel.iter().product();
    let tiles = taps * (geo.cin_g / if c4 { 4 } else { 1 }) * (geo.out[4] / TN);
    let rows = geo.out[0] * geo.out[1] * geo.out[2];
    let wn = gw.numel();
    // Lanes per tile: enough invocations to fill the machine, at most one per row, and a partial
    // buffer of at most 32 Mi floats.
    let lanes = 131_072usize
        .div_ceil(tiles)
        .min(rows)
        .min((32 << 20) / wn)
        .max(1);
    let partial = Tensor::uninit(gpu, "conv3d_backward_weight", &[lanes, wn])?;
    let mut params = geo.params(tiles * lanes, false);
    params.splits = lanes as u32;
    gpu.dispatch(
        spec,
        &params,
        &[x.buffer(), g.buffer()],
        &[partial.buffer()],
        Grid::cover((tiles * lanes) as u64, 64),
    )?;
    params.total = wn as u32;
    gpu.dispatch(
        &BACKWARD_WEIGHT_SUM,
        &params,
        &[partial.buffer()],
        &[gw.buffer()],
        Grid::cover(wn as u64, 64),
    )?;
    Ok(true)
}
