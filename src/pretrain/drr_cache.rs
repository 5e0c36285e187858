//! The per-volume CADS DRR through the DRR engine (`drr::preset::cads_view`): an exact Siddon
//! parallel antero-posterior line integral of max(0, HU + 1024), min-max scaled to [−1, 1] and
//! resized to 96×96. It fills the same [`DrrProjector`] slot as the CPU stand-in
//! [`ParallelLineIntegral`](super::cads_views::ParallelLineIntegral), so loaders compute it once
//! per CT and cache it.

use super::cads_views::DrrProjector;
use crate::data::orientation::to_canonical;
use crate::data::preprocess::Patch;
use crate::data::volume::Volume;
use crate::drr::preset::{cads_view, CADS_SIZE};
use crate::drr::{VolumeGrid, SAMPLE_CT};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// The CADS DRR rendered on a GPU.
#[derive(Clone, Debug)]
pub struct EngineCadsDrr {
    pub gpu: Gpu,
}

/// The DRR engine's grid of a volume: tensor `[D, H, W] = [Z, Y, X]` (x fastest, the
/// volume's own data order) and the index → world affine.
pub fn drr_grid(vol: &Volume) -> VolumeGrid {
    let [nx, ny, nz] = vol.dims;
    VolumeGrid {
        dims: [nz, ny, nx],
        affine: [vol.affine[0], vol.affine[1], vol.affine[2]],
    }
}

/// Read a CT in HU as (DRR grid, values `[D, H, W]`, x fastest) through the data layer's one
/// entry point (NIfTI, NRRD or a DICOM series); it joins `data` and `drr` here, above both, because neither may import the other. A
/// missing file is an [`Error::Io`] (`NotFound`) whose message names the path and
/// `scripts/fetch-sample-data.sh`, the way to get the sample CT. Used by `cads drr`, the DRR
/// examples and the `drr` bench.
pub fn read_ct(path: &str) -> Result<(VolumeGrid, Vec<f32>)> {
    if !std::path::Path::new(path).exists() {
        return Err(Error::Io {
            op: "read CT",
            path: path.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no such file (expected a CT in HU: NIfTI, NRRD or a DICOM series; the sample CT {SAMPLE_CT} comes \
                     from scripts/fetch-sample-data.sh)"
                ),
            ),
        });
    }
    let vol = crate::data::read_volume(path)?;
    Ok((drr_grid(&vol), vol.data))
}

impl DrrProjector for EngineCadsDrr {
    fn id(&self) -> String {
        format!("engine cads_view {CADS_SIZE}")
    }
    fn project(&self, ct: &Volume) -> Result<Patch> {
        // Canonical RAS grid: tensor [D, H, W] = [z (S), y (A), x (R)], affine maps (x, y, z).
        let (v, _) = to_canonical(ct)?;
        let grid = drr_grid(&v);
        let img = self.gpu.no_grad(|| cads_view(&self.gpu, &grid, &v.data))?;
        Patch::new(img, [1, CADS_SIZE, CADS_SIZE])
    }
}
