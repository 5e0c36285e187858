//! The per-volume CADS DRR through the DRR engine (`drr::preset::cads_view`): an exact Siddon
//! parallel antero-posterior line integral of max(0, HU + 1024), min-max scaled to [−1, 1] and
//! resized to 96×96. It fills the same [`DrrProjector`] slot as the CPU stand-in
//! [`ParallelLineIntegral`](super::cads_views::ParallelLineIntegral), so loaders compute it once
//! per CT and cache it.

use super::cads_views::DrrProjector;
use super::orientation::to_canonical;
use super::preprocess::Patch;
use super::volume::Volume;
use crate::drr::preset::{cads_view, CADS_SIZE};
use crate::drr::VolumeGrid;
use crate::error::Result;
use crate::gpu::Gpu;

/// The CADS DRR rendered on a GPU.
#[derive(Clone, Debug)]
pub struct EngineCadsDrr {
    pub gpu: Gpu,
}

impl DrrProjector for EngineCadsDrr {
    fn project(&self, ct: &Volume) -> Result<Patch> {
        // Canonical RAS grid: tensor [D, H, W] = [z (S), y (A), x (R)], affine maps (x, y, z).
        let (v, _) = to_canonical(ct)?;
        let [nx, ny, nz] = v.dims;
        let grid = VolumeGrid {
            dims: [nz, ny, nx],
            affine: [v.affine[0], v.affine[1], v.affine[2]],
        };
        let img = self.gpu.no_grad(|| cads_view(&self.gpu, &grid, &v.data))?;
        Patch::new(img, [1, CADS_SIZE, CADS_SIZE])
    }
}
