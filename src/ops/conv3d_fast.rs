//! Tiled (implicit GEMM) conv3d kernels. Each launcher returns `Ok(false)` when its shape
//! conditions do not hold, and the caller falls back to the straightforward kernels of
//! conv3d.rs, which stay the oracle for these.
//!
//! Forward (shaders/conv3d.wgsl `conv3d_tiled_c4` / `_c1`): GEMM with M = N·Do·Ho·Wo output
//! voxels, N = Cout, K = kD·kH·kW·Cin_g. One invocation holds a 4-voxel × 8-channel register tile
//! (eight vec4 accumulators); 64 invocations per workgroup run over voxels while the channel
//! block is the workgroup's z, so weight reads are workgroup-uniform. `_c4` reads the input four
//! channels at a time (Cin_g % 4 == 0).

use super::conv3d::{ConvParams, Geometry};
use crate::error::Result;
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

const SIZE: usize = std::mem::size_of::<ConvParams>();
const FWD_SRC: &str = include_str!("../../shaders/conv3d.wgsl");

const fn spec(shader: &'static str, source: &'static str, entry: &'static str, inputs: u32) -> KernelSpec {
    KernelSpec { shader, source, entry, inputs, outputs: 1, params_size: SIZE, constants: &[] }
}

const TILED_C4: KernelSpec = spec("conv3d", FWD_SRC, "conv3d_tiled_c4", 3);
const TILED_C1: KernelSpec = spec("conv3d", FWD_SRC, "conv3d_tiled_c1", 3);

pub(crate) const KERNELS: &[KernelSpec] = &[TILED_C4, TILED_C1];

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
pub(crate) fn forward(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, y: &Tensor, geo: &Geometry) -> Result<bool> {
    if geo.cout_g % TN != 0 {
        return Ok(false);
    }
    let gpu = x.gpu();
    let spec = if geo.cin_g % 4 == 0 { &TILED_C4 } else { &TILED_C1 };
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
    gpu.dispatch(spec, &params, &[x.buffer(), w.buffer(), b], &[y.buffer()], fold(blocks, geo.out[4] / TN))?;
    Ok(true)
}

pub(crate) fn backward_weight(_g: &Tensor, _x: &Tensor, _gw: &Tensor, _geo: &Geometry) -> Result<bool> {
    Ok(false)
}
