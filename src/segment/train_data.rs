//! The training data of PVT-UNet, split into training and held-out cases (the last
//! `validation_fraction` of the cases in dataset order; with a single case, the last
//! `validation_fraction` of its slices along D, a cranio-caudal slab). Two ways in:
//!
//! - [`load_planned_data`] (what `cads segment train` uses): the plan's preprocessing — canonical
//!   RAS, the plan's CT normalisation (from the fingerprint of all training cases, as nnU-Net),
//!   resampling to the plan's spacing (images linear or cubic, labels nearest or one-hot linear),
//!   label values mapped to the plan's classes — done once per case into the on-disk
//!   [`PreprocessCache`] keyed by the plan, and read back from it on every later run with the
//!   same plan (an edited plan gets a new key, so its cases are preprocessed again).
//! - [`load_training_data`] (library use, no plan): an nnU-Net raw folder or a JSON manifest read
//!   by `data::loader`, reoriented to RAS, on each case's own voxel grid, with the CT
//!   normalisation of the training split's foreground; label values are the classes.

use std::path::Path;

use super::augment::TrainingCase;
use super::dataset::SegDataset;
use super::plan::Plan;
use super::preprocess::PreprocessCache;
use crate::data::loader::{dataset_from_folder, dataset_from_manifest, load_case};
use crate::data::preprocess::{crop_pad, Patch};
use crate::error::{Error, Result};

/// CT intensity normalisation: `x ← (clip(x, lo, hi) − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CtNormalization {
    pub lo: f32,
    pub hi: f32,
    pub mean: f32,
    pub std: f32,
}

impl CtNormalization {
    /// nnU-Net's CT scheme from the foreground voxels of the training cases (labels > 0): the
    /// 0.5 and 99.5 percentiles, then the mean and std of the clipped foreground. At most
    /// 100 000 voxels per case are used (evenly strided), as nnU-Net samples its fingerprint.
    pub fn from_foreground(cases: &[(Patch, Patch)]) -> Result<CtNormalization> {
        let op = "CtNormalization::from_foreground";
        let mut values = Vec::new();
        for (image, label) in cases {
            let fg: Vec<f32> = image
                .data
                .iter()
                .zip(&label.data)
                .filter(|(_, &l)| l > 0.0)
                .map(|(&v, _)| v)
                .collect();
            let step = fg.len().div_ceil(100_000).max(1);
            values.extend(fg.iter().step_by(step).copied().filter(|v| v.is_finite()));
        }
        if values.is_empty() {
            return Err(Error::invalid(
                op,
                "training cases with foreground voxels",
                "none",
            ));
        }
        values.sort_by(f32::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        let (lo, hi) = (at(0.005), at(0.995));
        let clipped: Vec<f64> = values.iter().map(|&v| v.clamp(lo, hi) as f64).collect();
        let mean = clipped.iter().sum::<f64>() / clipped.len() as f64;
        let var = clipped.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / clipped.len() as f64;
        Ok(CtNormalization {
            lo,
            hi,
            mean: mean as f32,
            std: var.sqrt().max(1e-8) as f32,
        })
    }

    pub fn apply(&self, data: &mut [f32]) {
        for v in data {
            *v = (v.clamp(self.lo, self.hi) - self.mean) / self.std;
        }
    }
}

/// Training and validation cases, normalised, with the class count and names.
pub struct SegData {
    pub train: Vec<TrainingCase>,
    pub validation: Vec<TrainingCase>,
    /// K, background included.
    pub classes: usize,
    /// Name of each class 0..K.
    pub class_names: Vec<String>,
    pub normalization: Option<CtNormalization>,
    /// The plan the cases were preprocessed with ([`load_planned_data`]); None on the cases'
    /// own grids. Stored in the run description, so `predict` applies the same preprocessing.
    pub plan: Option<Plan>,
}

/// Class names from nnU-Net's `dataset.json` `labels` (`{"background": 0, "liver": 1, …}`).
fn dataset_labels(path: &Path) -> Result<Option<Vec<String>>> {
    let json = if path.is_dir() {
        path.join("dataset.json")
    } else {
        path.to_path_buf()
    };
    if !json.exists() {
        return Ok(None);
    }
    let name = json.display().to_string();
    let text = std::fs::read_to_string(&json).map_err(|source| Error::Io {
        op: "load_training_data",
        path: name.clone(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::BadFile {
        op: "load_training_data",
        path: name.clone(),
        problem: e.to_string(),
    })?;
    let Some(labels) = value.get("labels").and_then(|l| l.as_object()) else {
        return Ok(None);
    };
    let mut pairs = Vec::new();
    for (k, v) in labels {
        // nnU-Net v2 maps name → index; v1 maps "index" → name.
        match (v.as_u64(), k.parse::<usize>(), v.as_str()) {
            (Some(i), _, _) => pairs.push((i as usize, k.clone())),
            (None, Ok(i), Some(n)) => pairs.push((i, n.to_string())),
            _ => {
                return Err(Error::BadFile {
                    op: "load_training_data",
                    path: name,
                    problem: format!(
                        "labels entry {k}: {v} is neither name → index nor index → name"
                    ),
                })
            }
        }
    }
    pairs.sort();
    if pairs.iter().enumerate().any(|(i, (c, _))| *c != i) {
        return Err(Error::BadFile {
            op: "load_training_data",
            path: name,
            problem: format!("labels {pairs:?} are not the classes 0..K"),
        });
    }
    Ok(Some(pairs.into_iter().map(|(_, n)| n).collect()))
}

/// Split off the last `fraction` of the slices along D (at least one, at most all but one).
fn split_slab(image: &Patch, label: &Patch, fraction: f64) -> Result<[(Patch, Patch); 2]> {
    let [d, h, w] = image.shape;
    if d < 2 {
        return Err(Error::invalid(
            "load_training_data",
            "a single case with at least 2 slices to hold a slab out for validation",
            format!("{d} slices"),
        ));
    }
    let held = ((d as f64 * fraction).round() as usize).clamp(1, d - 1);
    let cut = d - held;
    let part =
        |p: &Patch, start: usize, len: usize| crop_pad(p, [start as isize, 0, 0], [len, h, w], 0.0);
    Ok([
        (part(image, 0, cut), part(label, 0, cut)),
        (part(image, cut, held), part(label, cut, held)),
    ])
}

/// Read a dataset (nnU-Net folder or JSON manifest), normalise it and split it on the cases' own
/// grids (module docs).
pub fn load_training_data(path: &Path, validation_fraction: f64) -> Result<SegData> {
    let op = "load_training_data";
    let cases = if path.is_dir() {
        dataset_from_folder(path)?
    } else {
        dataset_from_manifest(path)?
    };
    let mut pairs = Vec::with_capacity(cases.len());
    for case in &cases {
        let (image, label) = load_case(case)?;
        let label = label.ok_or_else(|| {
            Error::invalid(
                op,
                "a labelmap for every training case",
                case.image.display(),
            )
        })?;
        pairs.push((Patch::from_volume(&image), Patch::from_volume(&label)));
    }
    let max_label = pairs
        .iter()
        .flat_map(|(_, l)| l.data.iter())
        .fold(0.0f32, |a, &b| a.max(b));
    let names = dataset_labels(path)?;
    let classes = match &names {
        Some(n) => n.len(),
        None => max_label as usize + 1,
    };
    if classes < 2 {
        return Err(Error::invalid(
            op,
            "at least one foreground class",
            "only background",
        ));
    }
    let class_names = names.unwrap_or_else(|| {
        (0..classes)
            .map(|c| {
                if c == 0 {
                    "background".into()
                } else {
                    format!("class_{c}")
                }
            })
            .collect()
    });
    let (train, val) = split(pairs, validation_fraction)?;
    let normalization = CtNormalization::from_foreground(&train)?;
    let build = |v: Vec<(Patch, Patch)>| -> Result<Vec<TrainingCase>> {
        v.into_iter()
            .map(|(mut i, l)| {
                normalization.apply(&mut i.data);
                TrainingCase::new(i, l, classes)
            })
            .collect()
    };
    Ok(SegData {
        train: build(train)?,
        validation: build(val)?,
        classes,
        class_names,
        normalization: Some(normalization),
        plan: None,
    })
}

type Pairs = Vec<(Patch, Patch)>;

/// Hold out the last `fraction` of the cases (at least one, at least one left), or with one case
/// the last `fraction` of its slices.
fn split(mut pairs: Pairs, fraction: f64) -> Result<(Pairs, Pairs)> {
    Ok(if pairs.len() == 1 {
        let [a, b] = split_slab(&pairs[0].0, &pairs[0].1, fraction)?;
        (vec![a], vec![b])
    } else {
        let held = ((pairs.len() as f64 * fraction).round() as usize).clamp(1, pairs.len() - 1);
        let val = pairs.split_off(pairs.len() - held);
        (pairs, val)
    })
}

/// What the preprocessed cache did for [`load_planned_data`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUse {
    /// Cases read back from the cache.
    pub reused: usize,
    /// Cases preprocessed from their files now (and written to the cache).
    pub built: usize,
}

/// The training cases of `dataset` preprocessed with `plan` through `cache` (see the module
/// docs), split, with the plan's classes and names. `on_case(id, reused)` sees every case as it
/// is served.
pub fn load_planned_data(
    dataset: &SegDataset,
    plan: &Plan,
    cache: &PreprocessCache,
    validation_fraction: f64,
    mut on_case: impl FnMut(&str, bool),
) -> Result<(SegData, CacheUse)> {
    const OP: &str = "load_planned_data";
    plan.validate(OP)?;
    if dataset.training.is_empty() {
        return Err(Error::invalid(OP, "at least one training case", 0));
    }
    let mut usage = CacheUse::default();
    let mut pairs = Vec::with_capacity(dataset.training.len());
    for case in &dataset.training {
        let (c, reused) = cache.get_or_build(case, plan)?;
        if reused {
            usage.reused += 1;
        } else {
            usage.built += 1;
        }
        on_case(&case.id, reused);
        let label = c
            .label
            .ok_or_else(|| Error::invalid(OP, "a label map for every training case", &case.id))?;
        pairs.push((c.image, label));
    }
    let (train, val) = split(pairs, validation_fraction)?;
    let classes = plan.classes();
    let build = |v: Pairs| -> Result<Vec<TrainingCase>> {
        v.into_iter()
            .map(|(i, l)| TrainingCase::new(i, l, classes))
            .collect()
    };
    let n = &plan.normalization;
    Ok((
        SegData {
            train: build(train)?,
            validation: build(val)?,
            classes,
            class_names: plan.labels.iter().map(|l| l.name.clone()).collect(),
            normalization: Some(CtNormalization {
                lo: n.clip_low as f32,
                hi: n.clip_high as f32,
                mean: n.mean as f32,
                std: n.std as f32,
            }),
            plan: Some(plan.clone()),
        },
        usage,
    ))
}
