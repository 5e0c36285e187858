//! DRR kernels: raw launches of the Siddon and trilinear projectors, their pose gradients and
//! their adjoints (backprojection). Geometry, volumes with slabs and autograd live in
//! `src/drr/`; this file only packs [`DrrParams`] and dispatches.
//! Shaders: shaders/drr_siddon.wgsl, shaders/drr_trilinear.wgsl, shaders/drr_backproject.wgsl.
//! Reference: src/reference/drr.rs.

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

const SIDDON: &str = include_str!("../../shaders/drr_siddon.wgsl");
const TRILINEAR: &str = include_str!("../../shaders/drr_trilinear.wgsl");
const BACKPROJECT: &str = include_str!("../../shaders/drr_backproject.wgsl");

/// Mirrors `DrrParams` in the three DRR shaders (176 bytes).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug, Default)]
pub(crate) struct DrrParams {
    /// nx, ny, nz (of the bound slab), n_poses, z_offset, det_h, det_w, flags
    pub counts: [u32; 8],
    /// world mm → global voxel index, 3×4 rows
    pub inv: [f32; 12],
    /// global voxel index → world mm, 3×4 rows
    pub aff: [f32; 12],
    /// pixel pitch (row, col) mm, principal point offset (row, col) mm
    pub pixel: [f32; 4],
    /// sdd, sid, step_mm, pad
    pub dist: [f32; 4],
    /// isocentre xyz (world mm), pad
    pub iso: [f32; 4],
}

pub(crate) const FLAG_PARALLEL: u32 = 1;
pub(crate) const FLAG_ACCUMULATE: u32 = 2;

const fn spec(shader: &'static str, source: &'static str, entry: &'static str, inputs: u32) -> KernelSpec {
    KernelSpec {
        shader,
        source,
        entry,
        inputs,
        outputs: 1,
        params_size: std::mem::size_of::<DrrParams>(),
        constants: &[],
    }
}

const SIDDON_FORWARD: KernelSpec = spec("drr_siddon", SIDDON, "siddon_forward", 2);
const SIDDON_POSE_GRAD: KernelSpec = spec("drr_siddon", SIDDON, "siddon_pose_grad", 3);
const TRILINEAR_FORWARD: KernelSpec = spec("drr_trilinear", TRILINEAR, "trilinear_forward", 2);
const TRILINEAR_POSE_GRAD: KernelSpec = spec("drr_trilinear", TRILINEAR, "trilinear_pose_grad", 3);
const SIDDON_BACKPROJECT: KernelSpec = spec("drr_backproject", BACKPROJECT, "siddon_backproject", 2);
const TRILINEAR_BACKPROJECT: KernelSpec = spec("drr_backproject", BACKPROJECT, "trilinear_backproject", 2);

pub(crate) const KERNELS: &[KernelSpec] = &[
    SIDDON_FORWARD,
    SIDDON_POSE_GRAD,
    TRILINEAR_FORWARD,
    TRILINEAR_POSE_GRAD,
    SIDDON_BACKPROJECT,
    TRILINEAR_BACKPROJECT,
];

/// Which line-integral discretisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Projector {
    /// Exact intersection lengths of a piecewise-constant volume (Siddon / Amanatides–Woo).
    Siddon,
    /// Trilinear interpolation sampled every `step_mm` along the ray, anchored at the source.
    Trilinear { step_mm: f32 },
}

const WORKGROUP: u32 = 64;

/// `img (+)= P_slab(vol)`: one invocation per ray of every pose. `img` is [B, H, W].
pub(crate) fn forward_raw(projector: Projector, params: &DrrParams, slab: &Tensor, poses: &Tensor, img: &Tensor) -> Result<()> {
    let spec = match projector {
        Projector::Siddon => &SIDDON_FORWARD,
        Projector::Trilinear { .. } => &TRILINEAR_FORWARD,
    };
    slab.gpu().dispatch(
        spec,
        params,
        &[slab.buffer(), poses.buffer()],
        &[img.buffer()],
        Grid::cover(img.numel() as u64, WORKGROUP),
    )
}

/// `partial[b, pixel, :] (+)= g[b, pixel] · d img[b, pixel] / d pose[b, :]` for one slab.
pub(crate) fn pose_grad_raw(
    projector: Projector,
    params: &DrrParams,
    slab: &Tensor,
    poses: &Tensor,
    g: &Tensor,
    partial: &Tensor,
) -> Result<()> {
    let spec = match projector {
        Projector::Siddon => &SIDDON_POSE_GRAD,
        Projector::Trilinear { .. } => &TRILINEAR_POSE_GRAD,
    };
    slab.gpu().dispatch(
        spec,
        params,
        &[slab.buffer(), poses.buffer(), g.buffer()],
        &[partial.buffer()],
        Grid::cover(g.numel() as u64, WORKGROUP),
    )
}

/// `gslab = P_slabᵀ g` (fresh), as a voxel-driven gather.
pub(crate) fn backproject_raw(projector: Projector, params: &DrrParams, poses: &Tensor, g: &Tensor, gslab: &Tensor) -> Result<()> {
    let spec = match projector {
        Projector::Siddon => &SIDDON_BACKPROJECT,
        Projector::Trilinear { .. } => &TRILINEAR_BACKPROJECT,
    };
    poses.gpu().dispatch(
        spec,
        params,
        &[poses.buffer(), g.buffer()],
        &[gslab.buffer()],
        Grid::cover(gslab.numel() as u64, WORKGROUP),
    )
}
