//! The DRR op, whole: validate → plan → allocate → launch → record backward. It renders line
//! integrals of a volume given as z-slabs, for a batch of poses, with the Siddon or trilinear
//! projector, and records the backward: the volume gradient is the adjoint (backprojection per
//! slab: a ray-driven scatter with float atomics, or with a CAS loop where the adapter has none,
//! or in deterministic fixed point with i32 atomics; the voxel-driven gather stays as the oracle,
//! see [`Backprojection`]) and the pose gradient the per-ray Jacobian written by the same
//! walk, weighted by the upstream gradient and summed over rays.
//!
//! Inputs are plain, in the kernel's own terms ([`DrrSetup`]: extents, affines, detector and
//! distances in mm). The geometry types with units and conventions (`VolumeGrid`, `Geometry`,
//! `Pose`), the slab tiling of a volume and the presets live one layer up in `src/drr/`, which
//! builds a [`DrrSetup`] and calls [`drr`]. Volume layout: see the crate docs, Axis conventions.
//!
//! Shaders: shaders/drr_siddon.wgsl, shaders/drr_trilinear.wgsl, shaders/drr_backproject.wgsl,
//! shaders/drr_scatter.wgsl (+ drr_scatter_cas.wgsl, drr_scatter_fixed.wgsl,
//! drr_scatter_walks.wgsl), sharing
//! drr_geometry.wgsl, drr_pose_grad.wgsl, drr_siddon_walk.wgsl and drr_trilinear_samples.wgsl.
//! Reference: src/reference/drr.rs.

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

mod backproject;
use backproject::backproject_slab;
pub use backproject::{backproject, fixed_point_bound, Backprojection};

// Each DRR shader is its body followed by shared files (WGSL has no include; module-scope
// declarations may come in any order): the geometry (DrrParams, pose → ray), the pose-gradient
// helpers, and the walks, each written once: the Siddon voxel walk (drr_siddon_walk.wgsl) and
// the trilinear sample set (drr_trilinear_samples.wgsl) serve both the forward kernels and the
// scatter adjoints, so the adjoint visits exactly the forward's voxels and samples.
// tests/shaders.rs wants every shared file at the end of some kernel's source; the orders below
// give each one such a place.
const SIDDON: &str = concat!(
    include_str!("../../shaders/drr_siddon.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl"),
    include_str!("../../shaders/drr_siddon_walk.wgsl"),
    include_str!("../../shaders/drr_pose_grad.wgsl")
);
const TRILINEAR: &str = concat!(
    include_str!("../../shaders/drr_trilinear.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl"),
    include_str!("../../shaders/drr_pose_grad.wgsl"),
    include_str!("../../shaders/drr_trilinear_samples.wgsl")
);
const BACKPROJECT: &str = concat!(
    include_str!("../../shaders/drr_backproject.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl")
);

// The scatter adjoints: the binding and `scatter_add` (float atomics, or a CAS loop on u32 bits),
// then the geometry, the two walks and the entries (drr_scatter_walks.wgsl).
const SCATTER_F32: &str = concat!(
    include_str!("../../shaders/drr_scatter.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl"),
    include_str!("../../shaders/drr_trilinear_samples.wgsl"),
    include_str!("../../shaders/drr_siddon_walk.wgsl"),
    include_str!("../../shaders/drr_scatter_walks.wgsl")
);
const SCATTER_FIXED: &str = concat!(
    include_str!("../../shaders/drr_scatter_fixed.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl"),
    include_str!("../../shaders/drr_trilinear_samples.wgsl"),
    include_str!("../../shaders/drr_siddon_walk.wgsl"),
    include_str!("../../shaders/drr_scatter_walks.wgsl")
);
const SCATTER_CAS: &str = concat!(
    include_str!("../../shaders/drr_scatter_cas.wgsl"),
    include_str!("../../shaders/drr_geometry.wgsl"),
    include_str!("../../shaders/drr_trilinear_samples.wgsl"),
    include_str!("../../shaders/drr_scatter_walks.wgsl"),
    include_str!("../../shaders/drr_siddon_walk.wgsl")
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
        /// sdd, sid, step_mm, fixed_bound (the fixed-point scatter's bound on one voxel's
        /// gradient per unit of max |g|, see [`fixed_point_bound`]; unused by the others)
        pub dist: [f32; 4] => [sdd, sid, step_mm, fixed_bound],
        /// isocentre xyz (world mm), pad
        pub iso: [f32; 4] => [iso_x, iso_y, iso_z, _pad1],
    }
}

const FLAG_PARALLEL: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;

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

const SIDDON_SCATTER_F32: KernelSpec = spec("drr_scatter", SCATTER_F32, "siddon_scatter", 2, 1);
const TRILINEAR_SCATTER_F32: KernelSpec =
    spec("drr_scatter", SCATTER_F32, "trilinear_scatter", 2, 1);
const SIDDON_SCATTER_CAS: KernelSpec = spec("drr_scatter_cas", SCATTER_CAS, "siddon_scatter", 2, 1);
const TRILINEAR_SCATTER_CAS: KernelSpec =
    spec("drr_scatter_cas", SCATTER_CAS, "trilinear_scatter", 2, 1);

// The fixed-point scatter's three entries share one binding signature (poses, g; scale, gvol).
const SIDDON_SCATTER_FIXED: KernelSpec =
    spec("drr_scatter_fixed", SCATTER_FIXED, "siddon_scatter", 2, 2);
const TRILINEAR_SCATTER_FIXED: KernelSpec = spec(
    "drr_scatter_fixed",
    SCATTER_FIXED,
    "trilinear_scatter",
    2,
    2,
);
const FIXED_SCALE: KernelSpec = spec("drr_scatter_fixed", SCATTER_FIXED, "fixed_scale", 2, 2);
const FIXED_TO_FLOAT: KernelSpec = spec("drr_scatter_fixed", SCATTER_FIXED, "fixed_to_float", 2, 2);

pub(crate) const KERNELS: &[KernelSpec] = &[
    SIDDON_SCATTER_FIXED,
    TRILINEAR_SCATTER_FIXED,
    FIXED_SCALE,
    FIXED_TO_FLOAT,
    SIDDON_SCATTER_F32,
    TRILINEAR_SCATTER_F32,
    SIDDON_SCATTER_CAS,
    TRILINEAR_SCATTER_CAS,
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
fn forward_raw(
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
fn forward_jacobian_raw(
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

/// One render in the kernel's terms. `src/drr/` builds it from its geometry types (which carry
/// the conventions and validate units); this op checks what the kernels rely on.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DrrSetup {
    /// Whole-volume extents `[D, H, W] = [z, y, x]` voxels (x fastest); the slabs tile D.
    pub dims: [usize; 3],
    /// Voxel index (x, y, z) → world mm, 3×4 rows.
    pub affine: [[f64; 4]; 3],
    /// World mm → voxel index (x, y, z): the inverse of `affine`, 3×4 rows.
    pub inverse: [[f64; 4]; 3],
    /// Detector pixels `[rows (height), columns (width)]`.
    pub detector: [usize; 2],
    /// Pixel pitch `[row, column]` mm.
    pub pixel_mm: [f64; 2],
    /// Principal point offset `[row, column]` mm.
    pub principal_mm: [f64; 2],
    /// Source-to-detector and source-to-isocentre distances (mm).
    pub sdd_mm: f64,
    pub sid_mm: f64,
    /// Isocentre in world mm.
    pub isocentre_mm: [f64; 3],
    /// Parallel beam (rays along the central ray) instead of a cone from the source.
    pub parallel: bool,
    pub projector: Projector,
}

impl DrrSetup {
    /// Kernel parameters for the slab starting at z index `z0` with extents `slab_dims`.
    fn params(
        &self,
        z0: usize,
        slab_dims: &[usize],
        n_poses: usize,
        accumulate: bool,
    ) -> DrrParams {
        let step = match self.projector {
            Projector::Siddon => 0.0,
            Projector::Trilinear { step_mm } => step_mm,
        };
        let mut flags = if accumulate { FLAG_ACCUMULATE } else { 0 };
        if self.parallel {
            flags |= FLAG_PARALLEL;
        }
        let flat =
            |m: &[[f64; 4]; 3]| -> [f32; 12] { std::array::from_fn(|i| m[i / 4][i % 4] as f32) };
        let [det_h, det_w] = self.detector;
        let n_rays = (n_poses * det_h * det_w) as u64;
        // Rounded up by a relative 1e-6 on the way to f32 (far inside the shader's 2^28 margin).
        let fixed_bound =
            (fixed_point_bound(&self.affine, self.projector, n_rays) * (1.0 + 1e-6)) as f32;
        DrrParams {
            counts: [
                slab_dims[2] as u32,
                slab_dims[1] as u32,
                slab_dims[0] as u32,
                n_poses as u32,
                z0 as u32,
                det_h as u32,
                det_w as u32,
                flags,
            ],
            inv: flat(&self.inverse),
            aff: flat(&self.affine),
            pixel: [
                self.pixel_mm[0] as f32,
                self.pixel_mm[1] as f32,
                self.principal_mm[0] as f32,
                self.principal_mm[1] as f32,
            ],
            dist: [self.sdd_mm as f32, self.sid_mm as f32, step, fixed_bound],
            iso: [
                self.isocentre_mm[0] as f32,
                self.isocentre_mm[1] as f32,
                self.isocentre_mm[2] as f32,
                0.0,
            ],
        }
    }

    /// What the kernels rely on: a tiled volume, a non-empty detector, a valid projector step,
    /// finite distances and affines, and fewer than 2^29 rays per launch.
    fn validate(&self, slabs: &[(usize, Tensor)], n_poses: usize) -> Result<()> {
        let op = "drr";
        check_slabs(op, self.dims, slabs)?;
        if self.detector.contains(&0) {
            return Err(Error::invalid(
                op,
                "a detector with at least 1×1 pixels",
                format!("{:?}", self.detector),
            ));
        }
        check_projector(op, self.dims, &self.affine, self.projector)?;
        let finite = self
            .affine
            .iter()
            .chain(&self.inverse)
            .flatten()
            .all(|v| v.is_finite())
            && self
                .pixel_mm
                .iter()
                .chain(&self.principal_mm)
                .chain(&self.isocentre_mm)
                .all(|v| v.is_finite())
            && self.sdd_mm.is_finite()
            && self.sid_mm.is_finite();
        if !finite {
            return Err(Error::invalid(
                op,
                "finite affines, pitches and distances",
                format!("{self:?}"),
            ));
        }
        // Checked: with rows and columns near 2^64 the u64 product wrapped and passed.
        let n_rays = (n_poses as u64)
            .checked_mul(self.detector[0] as u64)
            .and_then(|v| v.checked_mul(self.detector[1] as u64));
        if n_rays.is_none_or(|n| n > u32::MAX as u64 / 8) {
            return Err(Error::invalid(
                op,
                "fewer than 2^29 rays per launch",
                format!(
                    "{n_poses} poses × {} × {} pixels",
                    self.detector[0], self.detector[1]
                ),
            ));
        }
        Ok(())
    }
}

/// Slabs must tile `[0, D)` along z in order, each `(first z, [nz >= 1, H, W])` for `dims` =
/// `[D, H, W]` (the op's input, and every `drr::Volume`).
pub(crate) fn check_slabs(
    op: &'static str,
    dims: [usize; 3],
    slabs: &[(usize, Tensor)],
) -> Result<()> {
    let [d, h, w] = dims;
    if slabs.is_empty() {
        return Err(Error::invalid(op, "at least one volume slab", 0));
    }
    let mut z = 0;
    for (z0, slab) in slabs {
        let s = slab.shape();
        if *z0 != z || s.len() != 3 || s[0] == 0 || s[1] != h || s[2] != w {
            return Err(Error::shape(
                op,
                format!("a slab [nz >= 1, {h}, {w}] starting at z = {z}"),
                format!("{s:?} starting at z = {z0}"),
            ));
        }
        z += s[0];
    }
    if z != d {
        return Err(Error::shape(
            op,
            format!("slabs covering D = {d}"),
            format!("D = {z}"),
        ));
    }
    Ok(())
}

/// The most trilinear samples one ray may take. A ray inside the volume is at most as long as
/// the padded box's diagonal; a step of 1e-6 mm on a CT asked for ~10^9 samples per ray (minutes
/// of GPU time, and a k index near i32 overflow in the shader). 2^16 samples cover a 650 mm box
/// at 0.01 mm, far finer than any voxel.
pub const MAX_SAMPLES_PER_RAY: f64 = 65536.0;

/// Typed error unless the projector can run on a `[D, H, W]` volume with this affine in bounded
/// work: a positive finite trilinear step with at most [`MAX_SAMPLES_PER_RAY`] samples per ray.
pub fn check_projector(
    op: &'static str,
    dims: [usize; 3],
    affine: &[[f64; 4]; 3],
    projector: Projector,
) -> Result<()> {
    let Projector::Trilinear { step_mm } = projector else {
        return Ok(());
    };
    if !(step_mm.is_finite() && step_mm > 0.0) {
        return Err(Error::invalid(
            op,
            "a positive finite trilinear step (mm)",
            step_mm,
        ));
    }
    // Longest chord of the padded box (indices −1 ..= n per axis): at most Σ_axis (n + 1)·|column|.
    let [d, h, w] = dims;
    let chord_mm: f64 = [w, h, d]
        .iter()
        .enumerate()
        .map(|(c, &n)| {
            let col = (0..3)
                .map(|r| affine[r][c] * affine[r][c])
                .sum::<f64>()
                .sqrt();
            (n as f64 + 1.0) * col
        })
        .sum();
    let samples = chord_mm / step_mm as f64;
    // NaN (0/0 cannot happen: step > 0) and infinity both fail `is_finite`.
    if !samples.is_finite() || samples > MAX_SAMPLES_PER_RAY {
        return Err(Error::invalid(
            op,
            format!(
                "at most {MAX_SAMPLES_PER_RAY} trilinear samples per ray (a step of at least {:.3e} mm for this volume)",
                chord_mm / MAX_SAMPLES_PER_RAY
            ),
            format!("step {step_mm} mm over rays up to {chord_mm:.1} mm long: {samples:.3e} samples per ray"),
        ));
    }
    Ok(())
}

/// Render `[B, H, W]` line integrals (volume units × mm) of the volume held by `slabs` (each
/// `(first z index, [nz, H, W])`, tiling the whole depth in order) for each pose row of `poses`
/// (`[B, 6]` = `[rx, ry, rz, tx, ty, tz]`, radians and mm), recorded for autograd: gradients
/// flow to every slab that requires grad (the adjoint) and to `poses` (the ray geometry).
///
/// Pose values are not read back here (that would stall the device inside the forward pass):
/// poses built on the host are checked finite when uploaded (`drr::pose_tensor`); a pose tensor
/// made on the device (an optimizer step) is trusted, and a non-finite pose gives non-finite
/// pixels for its rays.
pub fn drr(slabs: &[(usize, Tensor)], poses: &Tensor, setup: &DrrSetup) -> Result<Tensor> {
    let op = "drr";
    if poses.rank() != 2 || poses.shape()[1] != 6 || poses.shape()[0] == 0 {
        return Err(Error::shape(
            "drr poses",
            "[B >= 1, 6] = [rx, ry, rz, tx, ty, tz]",
            poses.shape(),
        ));
    }
    let n_poses = poses.shape()[0];
    setup.validate(slabs, n_poses)?;
    for (_, slab) in slabs {
        slab.check_same_gpu(op, poses)?;
    }
    let [det_h, det_w] = setup.detector;
    let projector = setup.projector;
    let img = Tensor::uninit(poses.gpu(), op, &[n_poses, det_h, det_w])?;
    // When the pose needs a gradient, the same walk also writes the per-ray pose Jacobian
    // [B, H·W, 6] (O(image) memory); backward then only weights it by g and sums over rays.
    let jacobian = if poses.requires_grad() && poses.gpu().grad_enabled() {
        Some(Tensor::uninit(
            poses.gpu(),
            "drr pose jacobian",
            &[n_poses, det_h * det_w, 6],
        )?)
    } else {
        None
    };
    // Both projectors are additive over slabs, so every slab after the first accumulates.
    for (i, (z0, slab)) in slabs.iter().enumerate() {
        let params = setup.params(*z0, slab.shape(), n_poses, i > 0);
        match &jacobian {
            Some(jac) => forward_jacobian_raw(projector, &params, slab, poses, &img, jac)?,
            None => forward_raw(projector, &params, slab, poses, &img)?,
        }
    }

    let mut inputs: Vec<&Tensor> = slabs.iter().map(|(_, t)| t).collect();
    inputs.push(poses);
    let need: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    let slabs_c: Vec<(usize, Tensor)> = slabs.iter().map(|(z, t)| (*z, t.detach())).collect();
    let (setup, poses_c) = (*setup, poses.detach());
    Ok(record(img, op, &inputs, move |g| {
        if g.shape() != [n_poses, det_h, det_w] {
            return Err(Error::shape(
                "drr backward",
                [n_poses, det_h, det_w],
                g.shape(),
            ));
        }
        let mut grads = Vec::with_capacity(slabs_c.len() + 1);
        let method = Backprojection::Auto.resolve(g.gpu())?;
        for (i, (z0, slab)) in slabs_c.iter().enumerate() {
            if !need[i] {
                grads.push(None);
                continue;
            }
            // gslab = P_slabᵀ g, fresh per slab (the slabs are separate leaves).
            let params = setup.params(*z0, slab.shape(), n_poses, false);
            grads.push(Some(backproject_slab(
                method,
                setup.projector,
                &params,
                &poses_c,
                g,
                slab.shape(),
            )?));
        }
        match &jacobian {
            Some(jac) if need[slabs_c.len()] => {
                // d(Σ g·img)/d pose[b] = Σ_pixels g[b, pixel] · jac[b, pixel, :]
                let weighted = super::mul(jac, &g.reshape(&[n_poses, det_h * det_w, 1])?)?;
                grads.push(Some(super::sum(&weighted, &[1], false)?));
            }
            _ => grads.push(None),
        }
        Ok(grads)
    }))
}
