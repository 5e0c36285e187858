//! [`Volume`]: a CT volume — or its gradient — on the GPU as one value, stored as z-slabs.
//!
//! A storage binding holds at most `max_storage_buffer_binding_size` bytes (128 MiB = 32M floats
//! on lavapipe, less than the 512×512×133 LIDC CT), so a volume is split along z into slabs that
//! each fit one binding; a volume that fits is one slab, i.e. one tensor. The DRR op is exactly
//! additive over slabs (mod.rs), so the slabs are an implementation detail of storage: the
//! projection of a volume, its gradient ([`Volume::gradient`], [`super::backproject`]) and the
//! updates a reconstruction or registration loop makes ([`Volume::axpy_`], [`Volume::scale_`],
//! [`Volume::fill_`], [`Volume::dot`], or an optimizer over [`Volume::tensors`]) all take and
//! give whole volumes, and all of them stay on the GPU; [`Volume::to_host`] is the one read-back.
//!
//! See the crate docs, [Axis conventions](crate#axis-conventions).

use super::VolumeGrid;
use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// A volume `[D, H, W]` on the GPU as one or more z-slabs, with its grid.
#[derive(Clone)]
pub struct Volume {
    grid: VolumeGrid,
    /// (first z index, slab tensor [nz_slab, H, W]), tiling [0, D) in order
    slabs: Vec<(usize, Tensor)>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let starts: Vec<usize> = self.slabs.iter().map(|(z, _)| *z).collect();
        write!(f, "Volume({:?}, slabs at z = {starts:?})", self.grid.dims)
    }
}

impl Volume {
    /// Wrap one tensor `[D, H, W]` (it may require grad: the gradient is the backprojection).
    pub fn from_tensor(grid: VolumeGrid, volume: &Tensor) -> Result<Volume> {
        Volume::from_slabs(grid, vec![(0, volume.clone())])
    }

    /// Wrap slab tensors `(first z index, [nz, H, W])` that tile `[0, D)` in order.
    pub fn from_slabs(grid: VolumeGrid, slabs: Vec<(usize, Tensor)>) -> Result<Volume> {
        grid.validate("drr volume")?;
        crate::ops::drr::check_slabs("drr volume", grid.dims, &slabs)?;
        for (_, t) in &slabs[1..] {
            slabs[0].1.check_same_gpu("drr volume", t)?;
        }
        Ok(Volume { grid, slabs })
    }

    /// Upload host data `[D, H, W]`, tiled along z so each slab fits one storage binding.
    pub fn from_host(gpu: &Gpu, grid: VolumeGrid, data: &[f32]) -> Result<Volume> {
        Volume::from_host_tiled(gpu, grid, data, max_slab_voxels(gpu))
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
        let plane = plane_voxels(&grid)?;
        let slabs = slab_extents(grid.dims[0], plane, max_slab_voxels)?
            .into_iter()
            .map(|(z0, nz)| {
                let t = Tensor::from_slice(
                    gpu,
                    &data[z0 * plane..(z0 + nz) * plane],
                    &[nz, grid.dims[1], grid.dims[2]],
                )?;
                Ok((z0, t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Volume { grid, slabs })
    }

    /// Zeros on `grid`, tiled as [`Volume::from_host`] tiles (no host data is made or sent).
    pub fn zeros(gpu: &Gpu, grid: VolumeGrid) -> Result<Volume> {
        Volume::zeros_tiled(gpu, grid, max_slab_voxels(gpu))
    }

    /// Zeros on `grid` with at most `max_slab_voxels` voxels per slab.
    pub fn zeros_tiled(gpu: &Gpu, grid: VolumeGrid, max_slab_voxels: usize) -> Result<Volume> {
        grid.validate("drr volume")?;
        let plane = plane_voxels(&grid)?;
        let [_, h, w] = grid.dims;
        let slabs = slab_extents(grid.dims[0], plane, max_slab_voxels)?
            .into_iter()
            .map(|(z0, nz)| Ok((z0, Tensor::zeros(gpu, &[nz, h, w])?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Volume { grid, slabs })
    }

    /// Zeros with this volume's grid and slab tiling (so the two combine slab by slab).
    pub fn zeros_like(&self) -> Result<Volume> {
        let slabs = self
            .slabs
            .iter()
            .map(|(z0, t)| Ok((*z0, Tensor::zeros(t.gpu(), t.shape())?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Volume {
            grid: self.grid.clone(),
            slabs,
        })
    }

    pub fn grid(&self) -> &VolumeGrid {
        &self.grid
    }
    /// The slab tensors `[nz_slab, H, W]` and their first z index.
    pub fn slabs(&self) -> &[(usize, Tensor)] {
        &self.slabs
    }
    /// The slab tensors alone, in z order: e.g. the parameters of an optimizer
    /// (`optim::ParamGroup::new(volume.tensors())`), which then steps every slab from the
    /// autograd gradients on the GPU.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.slabs.iter().map(|(_, t)| t.clone()).collect()
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
    /// The same voxels, not recorded (for updates outside the tape).
    pub fn detach(&self) -> Volume {
        Volume {
            grid: self.grid.clone(),
            slabs: self.slabs.iter().map(|(z, t)| (*z, t.detach())).collect(),
        }
    }
    pub fn gpu(&self) -> &Gpu {
        self.slabs[0].1.gpu()
    }

    /// The gradient of this volume from an autograd result, as one volume with the same grid and
    /// tiling (still on the GPU). Every slab must have a gradient: a slab without one did not
    /// require grad or did not reach the loss, and is an error that names it.
    pub fn gradient(&self, grads: &Gradients) -> Result<Volume> {
        let slabs = self
            .slabs
            .iter()
            .map(|(z0, slab)| {
                let g = grads.get(slab).ok_or_else(|| {
                    Error::invalid(
                        "drr volume gradient",
                        "a gradient for every slab (does the volume require grad?)",
                        format!("none for the slab at z = {z0}"),
                    )
                })?;
                Ok((*z0, g.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Volume::from_slabs(self.grid.clone(), slabs)
    }

    /// All voxels `[D, H, W]` (x fastest) on the host, whatever the tiling.
    pub fn to_host(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.grid.numel());
        for (_, slab) in &self.slabs {
            out.extend(slab.to_vec()?);
        }
        Ok(out)
    }

    /// `self ← self + alpha·x` in place, slab by slab, unrecorded (a gradient step, an
    /// accumulation). `x` must have the same grid dimensions and tiling.
    pub fn axpy_(&self, alpha: f32, x: &Volume) -> Result<()> {
        self.check_same_tiling("drr volume axpy", x)?;
        for ((_, y), (_, x)) in self.slabs.iter().zip(&x.slabs) {
            let sum = crate::ops::add(&y.detach(), &crate::ops::scale(&x.detach(), alpha)?)?;
            y.assign(&sum)?;
        }
        Ok(())
    }

    /// `self ← alpha·self` in place, unrecorded.
    pub fn scale_(&self, alpha: f32) -> Result<()> {
        for (_, y) in &self.slabs {
            y.assign(&crate::ops::scale(&y.detach(), alpha)?)?;
        }
        Ok(())
    }

    /// Every voxel ← `value`, in place, unrecorded.
    pub fn fill_(&self, value: f32) -> Result<()> {
        for (_, y) in &self.slabs {
            y.assign(&Tensor::full(y.gpu(), y.shape(), value)?)?;
        }
        Ok(())
    }

    /// `Σ_voxels self·other` as a `[1]` tensor on the GPU (no read-back), unrecorded.
    pub fn dot(&self, other: &Volume) -> Result<Tensor> {
        self.check_same_tiling("drr volume dot", other)?;
        let mut total: Option<Tensor> = None;
        for ((_, a), (_, b)) in self.slabs.iter().zip(&other.slabs) {
            let part = crate::ops::sum_all(&crate::ops::mul(&a.detach(), &b.detach())?)?;
            total = Some(match total {
                None => part,
                Some(t) => crate::ops::add(&t, &part)?,
            });
        }
        // A volume has at least one slab (every constructor tiles D >= 1).
        total.ok_or_else(|| Error::invalid("drr volume dot", "at least one slab", 0))
    }

    /// Same dims and the same slab starts and extents, so the two combine slab by slab.
    fn check_same_tiling(&self, op: &'static str, other: &Volume) -> Result<()> {
        let tiling = |v: &Volume| -> Vec<(usize, Vec<usize>)> {
            v.slabs
                .iter()
                .map(|(z, t)| (*z, t.shape().to_vec()))
                .collect()
        };
        if self.grid.dims != other.grid.dims || tiling(self) != tiling(other) {
            return Err(Error::shape(
                op,
                format!("{:?} tiled as {:?}", self.grid.dims, tiling(self)),
                format!("{:?} tiled as {:?}", other.grid.dims, tiling(other)),
            ));
        }
        for ((_, a), (_, b)) in self.slabs.iter().zip(&other.slabs) {
            a.check_same_gpu(op, b)?;
        }
        Ok(())
    }
}

/// The most voxels one slab may hold on `gpu` (one storage binding).
fn max_slab_voxels(gpu: &Gpu) -> usize {
    (gpu.max_binding_bytes() / 4) as usize
}

/// Voxels in one z-plane (H × W), checked.
fn plane_voxels(grid: &VolumeGrid) -> Result<usize> {
    let [_, h, w] = grid.dims;
    crate::util::size::checked_mul("drr volume", "a z-plane of H × W voxels", h, w)
}

/// `(first z, depth)` of each slab when `d` planes of `plane` voxels are cut into slabs of at
/// most `max_slab_voxels`.
fn slab_extents(d: usize, plane: usize, max_slab_voxels: usize) -> Result<Vec<(usize, usize)>> {
    let depth = max_slab_voxels / plane;
    if depth == 0 {
        return Err(Error::TooLarge {
            op: "drr volume",
            bytes: (plane * 4) as u64,
            limit: (max_slab_voxels * 4) as u64,
            which: "one z-plane exceeds a storage binding (tiling is along z only)",
        });
    }
    Ok((0..d.div_ceil(depth))
        .map(|i| (i * depth, depth.min(d - i * depth)))
        .collect())
}
