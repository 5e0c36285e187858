//! Prediction: a label map on the input's OWN grid.
//!
//! Pipeline for one image (any orientation: LAS, LPS, RAS, oblique):
//! 1. reorient to canonical RAS ([`to_canonical`], exact), normalise and resample to the plan's
//!    spacing ([`preprocess_volumes`]);
//! 2. sliding window ([`sliding_window`]): Gaussian-weighted mean logits `[D, H, W, K]` on the
//!    plan grid;
//! 3. resample the logits back to the canonical grid of the input (trilinear, the exact inverse of
//!    the preprocessing map: canonical voxel n ↔ plan-grid coordinate `n · spacing / target`),
//!    then softmax and argmax per voxel (nnU-Net's order: resample logits, then the nonlinearity);
//! 4. class k → label value `plan.labels[k].value`, and undo the reorientation
//!    ([`from_canonical`]). The result has the input's dims and the input's affine, bit for bit
//!    (the reoriented affine is checked to agree within 1e-6 mm and then replaced by the input's),
//!    so [`write_nifti`] stores it as the sform and its rigid part as the qform: the label map
//!    opens aligned over the image in 3D Slicer and ITK-SNAP. (An input whose qform disagrees with
//!    its sform gets the qform of its sform, which is what those viewers display anyway.)
//!
//! Probabilities (optional) are the softmax on the input's grid, one f32 volume per class.

use super::dataset::case_id_of;
use super::fingerprint::{dhw_shape, dhw_spacing};
use super::plan::Plan;
use super::preprocess::{preprocess_volumes, resample_channels};
use super::sliding_window::{
    sliding_window, softmax_channels_last, HostForward, SlidingWindowConfig,
};
use crate::data::nifti::{read_nifti, write_nifti};
use crate::data::orientation::{from_canonical, to_canonical};
use crate::data::{Datatype, Volume};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A prediction on the input's grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Label values (`plan.labels`), the input's dims and affine.
    pub labels: Volume,
    /// Per class (plan order) the probability volume, when asked for.
    pub probabilities: Option<Vec<Volume>>,
}

/// The smallest integer datatype holding every label value of the plan.
fn label_datatype(plan: &Plan) -> Datatype {
    match plan.labels.iter().map(|l| l.value).max().unwrap_or(0) {
        0..=255 => Datatype::Uint8,
        256..=65535 => Datatype::Uint16,
        _ => Datatype::Int32,
    }
}

/// Predict the label map of `image` (see the module docs).
pub fn predict_volume(
    image: &Volume,
    plan: &Plan,
    window: &SlidingWindowConfig,
    probabilities: bool,
    forward: &mut HostForward,
) -> Result<Prediction> {
    const OP: &str = "predict_volume";
    plan.validate(OP)?;
    let (canon, reorientation) = to_canonical(image)?;
    let pre = preprocess_volumes("input", image, None, plan)?;
    let k = plan.classes();
    let logits = sliding_window(&pre.image, k, window, forward)?;
    let shape = dhw_shape(&canon);
    let spacing = dhw_spacing(&canon);
    let scale: [f64; 3] = std::array::from_fn(|a| spacing[a] / plan.target_spacing_mm[a]);
    let mut probs = resample_channels(&logits.data, logits.shape, k, shape, scale)?;
    softmax_channels_last(&mut probs, k)?;
    let values: Vec<f32> = plan.labels.iter().map(|l| l.value as f32).collect();
    let classes: Vec<f32> = probs
        .chunks_exact(k)
        .map(|row| {
            let mut best = 0;
            for c in 1..k {
                if row[c] > row[best] {
                    best = c;
                }
            }
            values[best]
        })
        .collect();
    let back = |data: Vec<f32>, datatype: Datatype| -> Result<Volume> {
        let v = Volume::new(data, canon.dims, canon.affine, datatype)?;
        let mut v = from_canonical(&v, &reorientation)?;
        let drift = (0..3)
            .flat_map(|r| (0..4).map(move |c| (r, c)))
            .map(|(r, c)| (v.affine[r][c] - image.affine[r][c]).abs())
            .fold(0.0, f64::max);
        if v.dims != image.dims || drift > 1e-6 {
            return Err(Error::invalid(
                OP,
                format!("the input grid {:?} {:?}", image.dims, image.affine),
                format!(
                    "{:?} {:?} after undoing the reorientation",
                    v.dims, v.affine
                ),
            ));
        }
        v.affine = image.affine;
        v.spacing = image.spacing;
        Ok(v)
    };
    let labels = back(classes, label_datatype(plan))?;
    let probabilities = if probabilities {
        let n = probs.len() / k;
        Some(
            (0..k)
                .map(|c| {
                    back(
                        (0..n).map(|i| probs[i * k + c]).collect(),
                        Datatype::Float32,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
        )
    } else {
        None
    };
    Ok(Prediction {
        labels,
        probabilities,
    })
}

/// Predict one file and write `<output_dir>/<case>.nii.gz` (case = the input name without its
/// ending and `_0000`), plus `<output_dir>/<case>_prob_<label>.nii.gz` per class when
/// `probabilities`. Returns the label map's path.
pub fn predict_file(
    input: &Path,
    output_dir: &Path,
    plan: &Plan,
    window: &SlidingWindowConfig,
    probabilities: bool,
    forward: &mut HostForward,
) -> Result<PathBuf> {
    let image = read_nifti(input)?;
    let p = predict_volume(&image, plan, window, probabilities, forward)
        .map_err(|e| e.in_input_file("predict_file", input.display()))?;
    std::fs::create_dir_all(output_dir).map_err(|source| Error::Io {
        op: "predict_file",
        path: output_dir.display().to_string(),
        source,
    })?;
    let id = case_id_of(&input.display().to_string());
    let out = output_dir.join(format!("{id}.nii.gz"));
    write_nifti(&out, &p.labels, None)?;
    if let Some(probs) = &p.probabilities {
        for (v, l) in probs.iter().zip(&plan.labels) {
            write_nifti(
                output_dir.join(format!("{id}_prob_{}.nii.gz", l.name)),
                v,
                None,
            )?;
        }
    }
    Ok(out)
}

/// The NIfTI files (`.nii`, `.nii.gz`) of a folder, sorted; names starting with `.` left out
/// (macOS's `._NAME.nii.gz` resource forks beside each file of an unpacked archive, as in the
/// Decathlon's `imagesTs/` and `labelsTr/`, are not volumes).
pub fn nifti_files(dir: &Path, op: &'static str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        op,
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| {
            let n = p.to_string_lossy();
            p.is_file() && (n.ends_with(".nii.gz") || n.ends_with(".nii"))
        })
        .collect();
    files.sort();
    Ok(files)
}
