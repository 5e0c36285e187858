//! `cads segment evaluate`: score a folder of predicted label maps against a folder of reference
//! label maps, per case and per label (Dice, HD95 in mm, NSD; see [`super::metrics`] for the
//! definitions and the empty-mask rules), with means, as JSON and CSV.
//!
//! Pairing: a reference `<case>.nii[.gz]` needs a prediction of the same case id (the file name
//! without its ending and without `_0000`); a missing prediction is an error naming the cases.
//! Each pair must lie on the same grid (dims and affine); a mismatch names both files and grids.
//! Distances use the voxel spacing of the reference (column norms of its affine), per axis.
//!
//! Means: Dice and NSD over all cases; HD95 over the cases where it is defined (not NaN), with
//! that count reported as `hd95_cases`.

use super::dataset::{case_id_of, check_grids};
use super::fingerprint::{dhw_shape, dhw_spacing};
use super::metrics::{class_metrics, ClassMetrics};
use super::predict::nifti_files;
use crate::data::read_volume;
use crate::data::Volume;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One case's metrics per label value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaseMetrics {
    pub case: String,
    pub labels: BTreeMap<u32, ClassMetrics>,
}

/// The mean over cases of one label.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanMetrics {
    pub dice: f64,
    /// Mean over the `hd95_cases` cases where HD95 is defined; NaN (null) when none is.
    pub hd95_mm: f64,
    pub hd95_cases: usize,
    pub nsd: f64,
    pub cases: usize,
}

/// The whole evaluation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvaluationReport {
    pub tolerance_mm: f64,
    pub labels: Vec<u32>,
    pub cases: Vec<CaseMetrics>,
    pub mean: BTreeMap<u32, MeanMetrics>,
    /// The mean over labels of the per-label mean Dice.
    pub mean_dice: f64,
}

/// Metrics of the label values `labels` between two label maps on the same grid.
pub fn evaluate_volumes(
    case: &str,
    predicted: &Volume,
    target: &Volume,
    labels: &[u32],
    tolerance_mm: f64,
) -> Result<CaseMetrics> {
    let shape = dhw_shape(target);
    let spacing = dhw_spacing(target);
    let mut out = BTreeMap::new();
    for &l in labels {
        let p: Vec<bool> = predicted.data.iter().map(|&v| v == l as f32).collect();
        let t: Vec<bool> = target.data.iter().map(|&v| v == l as f32).collect();
        out.insert(l, class_metrics(&p, &t, shape, spacing, tolerance_mm)?);
    }
    Ok(CaseMetrics {
        case: case.to_string(),
        labels: out,
    })
}

/// Evaluate `pred_dir` against `gt_dir`. `labels`: the label values to score (None: every non-zero
/// value found in the reference maps).
pub fn evaluate_folders(
    pred_dir: &Path,
    gt_dir: &Path,
    labels: Option<&[u32]>,
    tolerance_mm: f64,
) -> Result<EvaluationReport> {
    const OP: &str = "evaluate_folders";
    let gts = nifti_files(gt_dir, OP)?;
    if gts.is_empty() {
        return Err(Error::invalid(
            OP,
            "reference label maps (.nii, .nii.gz) in --gt",
            format!("none in {}", gt_dir.display()),
        ));
    }
    let preds: BTreeMap<String, std::path::PathBuf> = nifti_files(pred_dir, OP)?
        .into_iter()
        .map(|p| (case_id_of(&p.display().to_string()), p))
        .collect();
    let missing: Vec<String> = gts
        .iter()
        .map(|g| case_id_of(&g.display().to_string()))
        .filter(|id| !preds.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(
            OP,
            format!(
                "a prediction in {} for every reference case",
                pred_dir.display()
            ),
            format!("none for {missing:?}"),
        ));
    }
    let mut pairs = Vec::new();
    for g in &gts {
        let id = case_id_of(&g.display().to_string());
        let p = &preds[&id];
        let target = read_volume(g)?;
        let predicted = read_volume(p)?;
        check_grids(&target, g, &predicted, p)?;
        pairs.push((id, predicted, target));
    }
    let labels: Vec<u32> = match labels {
        Some(l) => l.to_vec(),
        None => {
            let mut set = std::collections::BTreeSet::new();
            for (_, _, t) in &pairs {
                for &v in &t.data {
                    if v != 0.0 {
                        set.insert(v as u32);
                    }
                }
            }
            set.into_iter().collect()
        }
    };
    if labels.is_empty() {
        return Err(Error::invalid(
            OP,
            "at least one label to score (--labels, or non-zero values in the references)",
            "none",
        ));
    }
    let cases = pairs
        .iter()
        .map(|(id, p, t)| evaluate_volumes(id, p, t, &labels, tolerance_mm))
        .collect::<Result<Vec<_>>>()?;
    Ok(report(cases, labels, tolerance_mm))
}

/// Means over cases (see the module docs).
pub fn report(cases: Vec<CaseMetrics>, labels: Vec<u32>, tolerance_mm: f64) -> EvaluationReport {
    let mut mean = BTreeMap::new();
    for &l in &labels {
        let ms: Vec<&ClassMetrics> = cases.iter().filter_map(|c| c.labels.get(&l)).collect();
        let n = ms.len().max(1) as f64;
        let hd: Vec<f64> = ms
            .iter()
            .map(|m| m.hd95_mm)
            .filter(|h| !h.is_nan())
            .collect();
        mean.insert(
            l,
            MeanMetrics {
                dice: ms.iter().map(|m| m.dice).sum::<f64>() / n,
                hd95_mm: if hd.is_empty() {
                    f64::NAN
                } else {
                    hd.iter().sum::<f64>() / hd.len() as f64
                },
                hd95_cases: hd.len(),
                nsd: ms.iter().map(|m| m.nsd).sum::<f64>() / n,
                cases: ms.len(),
            },
        );
    }
    let mean_dice = mean.values().map(|m| m.dice).sum::<f64>() / mean.len().max(1) as f64;
    EvaluationReport {
        tolerance_mm,
        labels,
        cases,
        mean,
        mean_dice,
    }
}

impl EvaluationReport {
    /// Pretty JSON (NaN is written as `null`).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| {
            Error::invalid(
                "EvaluationReport::to_json",
                "a serialisable report",
                e.to_string(),
            )
        })
    }

    /// CSV: `case,label,dice,hd95_mm,nsd,predicted_voxels,target_voxels`, one row per case and
    /// label, then `mean` rows (voxel columns empty); NaN is written `nan`.
    pub fn to_csv(&self) -> String {
        let f = |x: f64| {
            if x.is_nan() {
                "nan".to_string()
            } else {
                format!("{x:.6}")
            }
        };
        let mut s = String::from("case,label,dice,hd95_mm,nsd,predicted_voxels,target_voxels\n");
        for c in &self.cases {
            for (l, m) in &c.labels {
                s.push_str(&format!(
                    "{},{l},{},{},{},{},{}\n",
                    c.case,
                    f(m.dice),
                    f(m.hd95_mm),
                    f(m.nsd),
                    m.predicted_voxels,
                    m.target_voxels
                ));
            }
        }
        for (l, m) in &self.mean {
            s.push_str(&format!(
                "mean,{l},{},{},{},,\n",
                f(m.dice),
                f(m.hd95_mm),
                f(m.nsd)
            ));
        }
        s
    }
}
