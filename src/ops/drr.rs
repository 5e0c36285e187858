//! DRR kernels: raw launches of the Siddon and trilinear projectors, their pose gradients and
//! their adjoints (backprojection). Geometry, volumes with slabs and autograd live in
//! `src/drr/`; this file only packs [`DrrParams`] and dispatches.
//! Shaders: shaders/drr_siddon.wgsl, shaders/drr_trilinear.wgsl, shaders/drr_backproject.wgsl.
//! Reference: src/reference/drr.rs.

use crate::error::Result;
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

// Each DRR shader is its body followed by the shared geometry (WGSL has no include; module-scope
// declarations may come in any order).
const SIDDON: &str = concat!(
    include_str!("../../shaders/drr_siddon.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl"),
    include_str!("../../shaders/drr_pose_grad.wgsl")
);
const TRILINEAR: &str = concat!(
    include_str!("../../shaders/drr_trilinear.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl"),
    include_str!("../../shaders/drr_pose_grad.wgsl")
);
const BACKPROJECT: &str = concat!(
    include_str!("../../shaders/drr_backproject.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl")
);

crate::gpu::shader_params! {
    /// Mirrors `DrrParams` in the three DRR shaders (176 bytes).
    #[derive(Debug, Default)]
    pub(crate) struct DrrParams {
        /// nx, ny, nz (of the bound slab), n_poses, z_offset, det_h, det_w, flags
        pub counts: [u32; 8] => [nx, ny, nz, n_poses, z_offset, det_h, det_w, flags],
        /// world mm → global voxel index, 3×4 rows
        pub inv: [f32; 12] => [
            inv00, inv01, inv02, inv03,
            inv10, inv11, inv12, inv13,
            inv20, inv21, inv22, inv23,
        ],
        /// global voxel index → world mm, 3×4 rows
        pub aff: [f32; 12] => [
            aff00, aff01, aff02, aff03,
            aff10, aff11, aff12, aff13,
            aff20, aff21, aff22, aff23,
        ],
        /// pixel pitch (row, col) mm, principal point offset (row, col) mm
        pub pixel: [f32; 4] => [pix_v, pix_u, off_v, off_u],
        /// sdd, sid, step_mm, pad
        pub dist: [f32; 4] => [sdd, sid, step_mm, _pad0],
        /// isocentre xyz (world mm), pad
        pub iso: [f32; 4] => [iso_x, iso_y, iso_z, _pad1],
    }
}

pub(crate) const FLAG_PARALLEL: u32 = 1;
pub(crate) const FLAG_ACCUMULATE: u32 = 2;

const fn spec(
    shader: &'static str,
    source: &'static str,
    entry: &'static str,
    inputs: u32,
    outputs: u32,
) -> KernelSpec {
    KernelSpec {
        shader,
        source,
        entry,
        inputs,
        outputs,
        params: DrrParams::LAYOUT,
        constants: &[],
    }
}

const SIDDON_FORWARD: KernelSpec = spec("drr_siddon", SIDDON, "siddon_forward", 2, 1);
const SIDDON_FORWARD_JACOBIAN: KernelSpec =
    spec("drr_siddon", SIDDON, "siddon_forward_jacobian", 2, 2);
const TRILINEAR_FORWARD: KernelSpec = spec("drr_trilinear", TRILINEAR, "trilinear_forward", 2, 1);
const TRILINEAR_FORWARD_JACOBIAN: KernelSpec = spec(
    "drr_trilinear",
    TRILINEAR,
    "trilinear_forward_jacobian",
    2,
    2,
);
const SIDDON_BACKPROJECT: KernelSpec =
    spec("drr_backproject", BACKPROJECT, "siddon_backproject", 2, 1);
const TRILINEAR_BACKPROJECT: KernelSpec = spec(
    "drr_backproject",
    BACKPROJECT,
    "trilinear_backproject",
    2,
    1,
);

pub(crate) const KERNELS: &[KernelSpec] = &[
    SIDDON_FORWARD,
    SIDDON_FORWARD_JACOBIAN,
    TRILINEAR_FORWARD,
    TRILINEAR_FORWARD_JACOBIAN,
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

/// Workgroups of the forward kernels: one per 8×8 detector tile of each pose (`tiled_ray` in
/// shaders/drr_geometry.wgsl). `img` is [B, H, W].
fn ray_tiles(img: &Tensor) -> Grid {
    let s = img.shape();
    let (b, h, w) = (s[0] as u64, s[1] as u64, s[2] as u64);
    Grid::Linear((b * h.div_ceil(8) * w.div_ceil(8)).max(1))
}

/// `img (+)= P_slab(vol)`: one invocation per ray of every pose. `img` is [B, H, W].
pub(crate) fn forward_raw(
    projector: Projector,
    params: &DrrParams,
    slab: &Tensor,
    poses: &Tensor,
    img: &Tensor,
) -> Result<()> {
    let spec = match projector {
        Projector::Siddon => &SIDDON_FORWARD,
        Projector::Trilinear { .. } => &TRILINEAR_FORWARD,
    };
    slab.gpu().dispatch(
        spec,
        params,
        &[slab.buffer(), poses.buffer()],
        &[img.buffer()],
        ray_tiles(img),
    )
}

/// `img (+)= P_slab(vol)` and `jac[b, pixel, :] (+)= d img[b, pixel] / d pose[b, :]` in one walk.
pub(crate) fn forward_jacobian_raw(
    projector: Projector,
    params: &DrrParams,
    slab: &Tensor,
    poses: &Tensor,
    img: &Tensor,
    jac: &Tensor,
) -> Result<()> {
    let spec = match projector {
        Projector::Siddon => &SIDDON_FORWARD_JACOBIAN,
        Projector::Trilinear { .. } => &TRILINEAR_FORWARD_JACOBIAN,
    };
    slab.gpu().dispatch(
        spec,
        params,
        &[slab.buffer(), poses.buffer()],
        &[img.buffer(), jac.buffer()],
        ray_tiles(img),
    )
}

/// `gslab = P_slabᵀ g` (fresh), as a voxel-driven gather.
pub(crate) fn backproject_raw(
    projector: Projector,
    params: &DrrParams,
    poses: &Tensor,
    g: &Tensor,
    gslab: &Tensor,
) -> Result<()> {
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
