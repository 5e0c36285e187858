//! Dataset fingerprint: what the plan is derived from (nnU-Net's "dataset fingerprint").
//!
//! Per training case, after reorientation to canonical RAS (so `[D, H, W]` = S, A, R axes, see the
//! crate docs, [Axis conventions](crate#axis-conventions)): the voxel spacing (mm) and shape in
//! `[D, H, W]` order, and a sample of the image values under the foreground (label > 0). nnU-Net
//! draws `10⁸ / cases` foreground voxels per case with replacement; we draw
//! `min(samples_per_case, foreground voxels)` with replacement from a per-case seeded [`Rng`], so
//! the fingerprint is reproducible. Over the pooled sample: mean, standard deviation, and the
//! 0.5 and 99.5 percentiles (linear interpolation), the CT normalisation's clip window.

use super::dataset::{load_case, SegDataset};
use super::metrics::percentile;
use crate::data::orientation::to_canonical;
use crate::data::Volume;
use crate::error::{Error, Result};
use crate::util::Rng;

/// One case of the fingerprint.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaseFingerprint {
    pub id: String,
    /// Canonical `[D, H, W]` spacing in mm.
    pub spacing_mm: [f64; 3],
    /// Canonical `[D, H, W]` voxels.
    pub shape: [usize; 3],
    pub foreground_voxels: u64,
}

/// Statistics of the image values under the foreground.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntensityStats {
    pub mean: f64,
    pub std: f64,
    pub percentile_00_5: f64,
    pub percentile_99_5: f64,
    pub min: f64,
    pub max: f64,
    /// Sampled voxels the statistics come from.
    pub samples: usize,
}

impl IntensityStats {
    /// Statistics of a sample (population std). Error on an empty sample.
    pub fn of(values: &[f64]) -> Result<IntensityStats> {
        if values.is_empty() {
            return Err(Error::invalid(
                "IntensityStats::of",
                "at least one foreground voxel in the dataset",
                "none (every label map is empty)",
            ));
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        Ok(IntensityStats {
            mean,
            std: var.sqrt(),
            percentile_00_5: percentile(values, 0.5),
            percentile_99_5: percentile(values, 99.5),
            min: values.iter().cloned().fold(f64::INFINITY, f64::min),
            max: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            samples: values.len(),
        })
    }
}

/// The dataset fingerprint.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub cases: Vec<CaseFingerprint>,
    pub foreground: IntensityStats,
    /// Distinct label values seen in the label maps, sorted (0 included).
    pub label_values: Vec<u32>,
}

/// Default foreground samples per case (nnU-Net: 10⁸ / cases; 10⁵ keeps a small dataset exact
/// enough for percentiles and bounded for a large one).
pub const SAMPLES_PER_CASE: usize = 100_000;

/// `[D, H, W]` order of a volume's `[X, Y, Z]` spacing and dims.
pub fn dhw_spacing(v: &Volume) -> [f64; 3] {
    [v.spacing[2], v.spacing[1], v.spacing[0]]
}

/// `[D, H, W]` of a volume's `[X, Y, Z]` dims.
pub fn dhw_shape(v: &Volume) -> [usize; 3] {
    [v.dims[2], v.dims[1], v.dims[0]]
}

/// The fingerprint of one (image, label) pair on the canonical grid, and its foreground sample.
pub fn case_fingerprint(
    id: &str,
    image: &Volume,
    label: &Volume,
    samples_per_case: usize,
    seed: u64,
) -> Result<(CaseFingerprint, Vec<f64>, Vec<u32>)> {
    const OP: &str = "case_fingerprint";
    if image.dims != label.dims {
        return Err(Error::shape(OP, image.dims, label.dims));
    }
    let (image, _) = to_canonical(image)?;
    let (label, _) = to_canonical(label)?;
    let mut foreground = Vec::new();
    let mut values = std::collections::BTreeSet::new();
    for (i, &l) in label.data.iter().enumerate() {
        if !(l >= 0.0 && l.fract() == 0.0 && l <= u32::MAX as f32) {
            return Err(Error::invalid(
                OP,
                "non-negative integer label values",
                format!("{l} at flat voxel {i} of case {id}"),
            ));
        }
        values.insert(l as u32);
        if l > 0.0 {
            foreground.push(i);
        }
    }
    let mut rng = Rng::new(seed);
    let take = samples_per_case.min(foreground.len());
    let sample = (0..take)
        .map(|_| image.data[foreground[rng.below(foreground.len())]] as f64)
        .collect();
    Ok((
        CaseFingerprint {
            id: id.to_string(),
            spacing_mm: dhw_spacing(&image),
            shape: dhw_shape(&image),
            foreground_voxels: foreground.len() as u64,
        },
        sample,
        values.into_iter().collect(),
    ))
}

/// The fingerprint of a dataset's training cases (each read once, one at a time).
pub fn fingerprint(dataset: &SegDataset, samples_per_case: usize) -> Result<Fingerprint> {
    if dataset.training.is_empty() {
        return Err(Error::invalid(
            "fingerprint",
            "at least one training case",
            0,
        ));
    }
    let mut cases = Vec::new();
    let mut pooled = Vec::new();
    let mut labels = std::collections::BTreeSet::new();
    for (n, case) in dataset.training.iter().enumerate() {
        let (image, label) = load_case(case)?;
        let label = label.ok_or_else(|| {
            Error::invalid(
                "fingerprint",
                "a label map for every training case",
                &case.id,
            )
        })?;
        let (fp, sample, values) =
            case_fingerprint(&case.id, &image, &label, samples_per_case, 1234 + n as u64)?;
        cases.push(fp);
        pooled.extend(sample);
        labels.extend(values);
    }
    Ok(Fingerprint {
        cases,
        foreground: IntensityStats::of(&pooled)?,
        label_values: labels.into_iter().collect(),
    })
}
