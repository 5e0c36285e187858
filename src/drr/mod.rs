//! Digitally reconstructed radiographs: ray-cast line integrals of a CT volume, differentiable
//! with respect to the volume (backprojection) and to the pose (6 parameters per view).
//!
//! - Geometry and units: [`geometry`] (frames, ZXY-intrinsic Euler pose, cone/parallel beams).
//! - Kernels: src/ops/drr.rs; one GPU invocation per ray, rays generated in the kernel from the
//!   pose, accumulation in registers; Siddon (exact voxel walk) or trilinear (step in mm).
//! - Volume layout: `[D, H, W] = [z, y, x]` row-major f32 (x fastest), as a NIfTI volume is stored.
//! - **Tiling**: a storage binding holds at most `max_storage_buffer_binding_size` bytes (128 MiB =
//!   32M floats on lavapipe, less than the 512×512×133 LIDC CT). [`Volume`] therefore splits the
//!   volume along z into slabs that each fit one binding. Both projectors are exactly additive over
//!   slabs: Siddon walks each slab's sub-box (the intersection lengths partition the ray), and
//!   zero-padded trilinear interpolation is linear in the voxels, so each slab interpolates with
//!   only its own voxels and the per-slab sums add up to the whole. The kernels accumulate into
//!   the same image; the volume gradient comes out per slab.

pub mod geometry;

pub use crate::ops::drr::Projector;
pub use ct::{read_ct, Intensity, SAMPLE_CT};
pub use geometry::{validate_pose_values, Beam, Detector, Geometry, Pose, Vec3, VolumeGrid};

use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::drr::{
    backproject_raw, forward_jacobian_raw, forward_raw, DrrParams, FLAG_ACCUMULATE, FLAG_PARALLEL,
};
use crate::tensor::Tensor;

/// A CT volume on the GPU as one or more z-slabs, with its grid.
#[derive(Clone)]
pub struct Volume {
    grid: VolumeGrid,
    /// (first z index, slab tensor [nz_slab, H, W])
    slabs: Vec<(usize, Tensor)>,
}

impl Volume {
    /// Wrap one tensor `[D, H, W]` (it may require grad: the gradient is the backprojection).
    pub fn from_tensor(grid: VolumeGrid, volume: &Tensor) -> Result<Volume> {
        grid.validate("drr volume")?;
        if volume.shape() != grid.dims {
            return Err(Error::shape("drr volume", grid.dims, volume.shape()));
        }
        Ok(Volume {
            grid,
            slabs: vec![(0, volume.clone())],
        })
    }

    /// Upload host data `[D, H, W]`, tiled along z so each slab fits one storage binding.
    pub fn from_host(gpu: &Gpu, grid: VolumeGrid, data: &[f32]) -> Result<Volume> {
        let max_voxels = (gpu.max_binding_bytes() / 4) as usize;
        Volume::from_host_tiled(gpu, grid, data, max_voxels)
    }

    /// As [`Volume::from_host`] with at most `max_slab_voxels` voxels per slab.
    pub fn from_host_tiled(
        gpu: &Gpu,
        grid: VolumeGrid,
        data: &[f32],
        max_slab_voxels: usize,
    ) -> Result<Volume> {
        grid.validate("drr volume")?;
        if data.len() != grid.numel() {
            return Err(Error::shape("drr volume", grid.dims, [data.len()]));
        }
        let [d, h, w] = grid.dims;
        let plane = h * w;
        let depth = max_slab_voxels / plane;
        if depth == 0 {
            return Err(Error::TooLarge {
                op: "drr volume",
                bytes: (plane * 4) as u64,
                limit: (max_slab_voxels * 4) as u64,
                which: "one z-plane exceeds a storage binding (tiling is along z only)",
            });
        }
        let mut slabs = Vec::new();
        let mut z0 = 0;
        while z0 < d {
            let nz = depth.min(d - z0);
            let t = Tensor::from_slice(gpu, &data[z0 * plane..(z0 + nz) * plane], &[nz, h, w])?;
            slabs.push((z0, t));
            z0 += nz;
        }
        Ok(Volume { grid, slabs })
    }

    pub fn grid(&self) -> &VolumeGrid {
        &self.grid
    }
    /// The slab tensors `[nz_slab, H, W]` and their first z index.
    pub fn slabs(&self) -> &[(usize, Tensor)] {
        &self.slabs
    }
    /// Mark every slab as a leaf requiring grad.
    pub fn requires_grad_(mut self, requires: bool) -> Volume {
        self.slabs = self
            .slabs
            .into_iter()
            .map(|(z, t)| (z, t.requires_grad_(requires)))
            .collect();
        self
    }
    pub fn gpu(&self) -> &Gpu {
        self.slabs[0].1.gpu()
    }
}

/// Kernel parameters for one slab.
fn make_params(
    grid: &VolumeGrid,
    geometry: &Geometry,
    z0: usize,
    slab_dims: &[usize],
    n_poses: usize,
    projector: Projector,
    accumulate: bool,
) -> Result<DrrParams> {
    let inv = grid.inverse_affine("drr")?;
    let iso = geometry.isocentre.unwrap_or_else(|| grid.centre());
    let det = &geometry.detector;
    let step = match projector {
        Projector::Siddon => 0.0,
        Projector::Trilinear { step_mm } => step_mm,
    };
    let mut flags = if accumulate { FLAG_ACCUMULATE } else { 0 };
    if geometry.beam == Beam::Parallel {
        flags |= FLAG_PARALLEL;
    }
    let flat = |m: &[[f64; 4]; 3]| -> [f32; 12] { std::array::from_fn(|i| m[i / 4][i % 4] as f32) };
    Ok(DrrParams {
        counts: [
            slab_dims[2] as u32,
            slab_dims[1] as u32,
            slab_dims[0] as u32,
            n_poses as u32,
            z0 as u32,
            det.height as u32,
            det.width as u32,
            flags,
        ],
        inv: flat(&inv),
        aff: flat(&grid.affine),
        pixel: [
            det.pixel_mm[0] as f32,
            det.pixel_mm[1] as f32,
            det.principal_mm[0] as f32,
            det.principal_mm[1] as f32,
        ],
        dist: [geometry.sdd_mm as f32, geometry.sid_mm as f32, step, 0.0],
        iso: [iso[0] as f32, iso[1] as f32, iso[2] as f32, 0.0],
    })
}

/// Check the pose tensor `[B, 6]` (shape and finite values; reads the B·6 values back).
fn check_poses(poses: &Tensor) -> Result<usize> {
    if poses.rank() != 2 || poses.shape()[1] != 6 || poses.shape()[0] == 0 {
        return Err(Error::shape(
            "drr poses",
            "[B >= 1, 6] = [rx, ry, rz, tx, ty, tz]",
            poses.shape(),
        ));
    }
    let values: Vec<f64> = poses.to_vec()?.into_iter().map(f64::from).collect();
    validate_pose_values("drr", &values)?;
    Ok(poses.shape()[0])
}

/// Render `[B, H, W]` line integrals (volume units × mm) of `volume` for each pose row of
/// `poses` (`[B, 6]`), recorded for autograd: gradients flow to every slab that requires grad
/// (the adjoint, a voxel-driven gather) and to `poses` (through the ray geometry).
pub fn render(
    volume: &Volume,
    poses: &Tensor,
    geometry: &Geometry,
    projector: Projector,
) -> Result<Tensor> {
    geometry.validate("drr")?;
    volume.grid.validate("drr")?;
    if let Projector::Trilinear { step_mm } = projector {
        if !(step_mm.is_finite() && step_mm > 0.0) {
            return Err(Error::invalid(
                "drr",
                "a positive finite trilinear step (mm)",
                step_mm,
            ));
        }
    }
    let n_poses = check_poses(poses)?;
    let det = geometry.detector;
    let n_rays = n_poses as u64 * det.height as u64 * det.width as u64;
    if n_rays > u32::MAX as u64 / 8 {
        return Err(Error::invalid(
            "drr",
            "fewer than 2^29 rays per launch",
            n_rays,
        ));
    }
    let img = Tensor::uninit(poses.gpu(), "drr", &[n_poses, det.height, det.width])?;
    // When the pose needs a gradient, the same walk also writes the per-ray pose Jacobian
    // [B, H·W, 6] (O(image) memory); backward then only weights it by g and sums over rays.
    let jacobian = if poses.requires_grad() && poses.gpu().grad_enabled() {
        Some(Tensor::uninit(
            poses.gpu(),
            "drr pose jacobian",
            &[n_poses, det.height * det.width, 6],
        )?)
    } else {
        None
    };
    for (i, (z0, slab)) in volume.slabs.iter().enumerate() {
        slab.check_same_gpu("drr", poses)?;
        let params = make_params(
            &volume.grid,
            geometry,
            *z0,
            slab.shape(),
            n_poses,
            projector,
            i > 0,
        )?;
        match &jacobian {
            Some(jac) => forward_jacobian_raw(projector, &params, slab, poses, &img, jac)?,
            None => forward_raw(projector, &params, slab, poses, &img)?,
        }
    }

    let mut inputs: Vec<&Tensor> = volume.slabs.iter().map(|(_, t)| t).collect();
    inputs.push(poses);
    let need: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    let slabs: Vec<(usize, Tensor)> = volume.slabs.iter().map(|(z, t)| (*z, t.detach())).collect();
    let (grid, geometry, poses_c) = (volume.grid.clone(), *geometry, poses.detach());
    Ok(record(img, "drr", &inputs, move |g| {
        if g.shape() != [n_poses, det.height, det.width] {
            return Err(Error::shape(
                "drr backward",
                [n_poses, det.height, det.width],
                g.shape(),
            ));
        }
        let mut grads = Vec::with_capacity(slabs.len() + 1);
        for (i, (z0, slab)) in slabs.iter().enumerate() {
            if !need[i] {
                grads.push(None);
                continue;
            }
            let params = make_params(
                &grid,
                &geometry,
                *z0,
                slab.shape(),
                n_poses,
                projector,
                false,
            )?;
            let gslab = Tensor::uninit(g.gpu(), "drr backproject", slab.shape())?;
            backproject_raw(projector, &params, &poses_c, g, &gslab)?;
            grads.push(Some(gslab));
        }
        match &jacobian {
            Some(jac) if need[slabs.len()] => {
                // d(Σ g·img)/d pose[b] = Σ_pixels g[b, pixel] · jac[b, pixel, :]
                let weighted =
                    crate::ops::mul(jac, &g.reshape(&[n_poses, det.height * det.width, 1])?)?;
                grads.push(Some(crate::ops::sum(&weighted, &[1], false)?));
            }
            _ => grads.push(None),
        }
        Ok(grads)
    }))
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
pub mod io;
pub mod preset;
