//! Segmentation datasets: nnU-Net's raw layout, the Medical Segmentation Decathlon's task folders
//! and a JSON list (the JSON forms as read: dataset_json.rs).
//!
//! **nnU-Net raw layout** (v2): a folder with
//! - `dataset.json`: `{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
//!   "numTraining": 2, "file_ending": ".nii.gz"}` (other keys are ignored);
//! - `imagesTr/CASE_0000.nii.gz` (channel 0000), `labelsTr/CASE.nii.gz`, `imagesTs/CASE_0000.nii.gz`.
//!
//! The number of training cases found must equal `numTraining`; each training case needs its
//! label. One input channel (CT) is supported. nnU-Net requires `channel_names`, `numTraining`
//! and `file_ending`; here they may be left out (one channel, no count check, `.nii.gz`), as
//! `cads segment train` accepted such folders before it read them through this module.
//!
//! **Decathlon task folder** (`Task09_Spleen/`, also nnU-Net v1's raw folders): a `dataset.json`
//! that lists the cases, `{"modality": {"0": "CT"}, "labels": {"0": "background", "1":
//! "spleen"}, "numTraining": 41, "training": [{"image": "./imagesTr/spleen_2.nii.gz", "label":
//! "./labelsTr/spleen_2.nii.gz"}], "test": ["./imagesTs/spleen_1.nii.gz"]}`, paths relative to
//! the folder. A folder is read this way whenever its dataset.json has a `training` list; the
//! list must hold `numTraining` cases. nnU-Net v1 lists `imagesTr/CASE.nii.gz` for the file
//! `imagesTr/CASE_0000.nii.gz`: a listed image that does not exist is taken from that twin
//! ([`crate::data::loader::resolve_listed_image`]).
//!
//! **JSON list**: `{"labels": {"background": 0, "liver": 1}, "training": [{"image": "a.nii.gz",
//! "label": "a_seg.nii.gz"}], "test": [{"image": "b.nii.gz"}]}`, paths relative to the file's
//! folder; a case id is `id` when given, else the image file name without its ending. `labels`
//! may be omitted (classes then come from the label maps when planning). A Decathlon
//! dataset.json given as a file is such a list.
//!
//! In either orientation of `labels` the background must have value 0 in a folder's
//! dataset.json. Names starting with `.` are never cases (macOS writes `._CASE.nii.gz` resource
//! forks beside each file of an archive it unpacks, as in the Decathlon's tarballs).
//!
//! [`load_case`] reads a case and checks that its label map lies on the image's grid; a mismatch is
//! an error naming both files and both grids.

use super::dataset_json::{
    bad, check_one_channel, parse_labels, read_dataset_json, DatasetJson, ListEntry,
};
use crate::data::loader::resolve_listed_image;
use crate::data::read_volume;
use crate::data::Volume;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One case of a segmentation dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetCase {
    pub id: String,
    pub image: PathBuf,
    pub label: Option<PathBuf>,
}

/// A label: its name and the value it has in label maps.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelName {
    pub name: String,
    pub value: u32,
}

/// A dataset: labels, training cases (with labels), test cases (images only).
#[derive(Clone, Debug, PartialEq)]
pub struct SegDataset {
    /// Sorted by value, background (0) first; empty when the source named none.
    pub labels: Vec<LabelName>,
    pub training: Vec<DatasetCase>,
    pub test: Vec<DatasetCase>,
}

/// Case ids of the files `<id>_0000<ending>` in `dir`, sorted (names starting with `.` skipped).
fn channel0_ids(op: &'static str, dir: &Path, ending: &str) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        op,
        path: dir.display().to_string(),
        source,
    })?;
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .filter_map(|n| {
            n.strip_suffix(ending)?
                .strip_suffix("_0000")
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// The cases of a list, paths relative to `dir`; training entries need a label.
fn listed_cases(
    op: &'static str,
    path: &Path,
    dir: &Path,
    entries: Vec<ListEntry>,
    training: bool,
) -> Result<Vec<DatasetCase>> {
    let cases = entries
        .into_iter()
        .map(|entry| {
            let (id, image, label) = entry.parts();
            if image.is_empty() || label.as_deref() == Some("") {
                return Err(bad(op, path, format!("case {image:?}: an empty path")));
            }
            if training && label.is_none() {
                return Err(bad(
                    op,
                    path,
                    format!("training case {image} has no \"label\""),
                ));
            }
            Ok(DatasetCase {
                id: id.unwrap_or_else(|| case_id_of(&image)),
                image: resolve_listed_image(dir, &image),
                label: label.map(|l| dir.join(l)),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(
            op,
            path,
            format!(
                "two {} cases have the id \"{}\"",
                if training { "training" } else { "test" },
                w[0]
            ),
        ));
    }
    Ok(cases)
}

impl SegDataset {
    /// A folder (nnU-Net raw layout or Decathlon task) or a `.json` file (JSON list).
    pub fn open(path: impl AsRef<Path>) -> Result<SegDataset> {
        let p = path.as_ref();
        if p.is_dir() {
            SegDataset::from_nnunet(p)
        } else {
            SegDataset::from_json_list(p)
        }
    }

    /// Read a dataset folder: nnU-Net's raw layout, or a Decathlon task when its dataset.json
    /// lists the cases (see the module docs).
    pub fn from_nnunet(root: impl AsRef<Path>) -> Result<SegDataset> {
        const OP: &str = "SegDataset::from_nnunet";
        let root = root.as_ref();
        let json_path = root.join("dataset.json");
        let meta = read_dataset_json(
            OP,
            &json_path,
            "a dataset.json (nnU-Net's: channel_names, labels, numTraining, file_ending; or the \
             Decathlon's: modality, labels, numTraining, training, test)",
        )?;
        check_one_channel(OP, &json_path, &meta)?;
        let raw_labels = meta
            .labels
            .as_ref()
            .ok_or_else(|| bad(OP, &json_path, "no \"labels\""))?;
        let labels = parse_labels(OP, &json_path, raw_labels)?;
        if labels.first().map(|l| l.value) != Some(0) {
            return Err(bad(
                OP,
                &json_path,
                "labels must include the background with value 0",
            ));
        }
        if meta.training.is_some() {
            let (training, test) = Self::listed(OP, &json_path, root, meta)?;
            return Ok(SegDataset {
                labels,
                training,
                test,
            });
        }
        let ending = meta.file_ending.as_str();
        let images_tr = root.join("imagesTr");
        let mut training = Vec::new();
        for id in channel0_ids(OP, &images_tr, ending)? {
            let label = root.join("labelsTr").join(format!("{id}{ending}"));
            if !label.exists() {
                return Err(bad(
                    OP,
                    &label,
                    format!("training case \"{id}\" has no label map (expected this file)"),
                ));
            }
            training.push(DatasetCase {
                image: images_tr.join(format!("{id}_0000{ending}")),
                label: Some(label),
                id,
            });
        }
        if let Some(expected) = meta.num_training.filter(|&n| n != training.len()) {
            return Err(bad(
                OP,
                &json_path,
                format!(
                    "numTraining is {expected}, but imagesTr holds {} cases *_0000{ending}",
                    training.len()
                ),
            ));
        }
        if training.is_empty() {
            return Err(bad(
                OP,
                &images_tr,
                format!("no training images *_0000{ending}"),
            ));
        }
        let images_ts = root.join("imagesTs");
        let test = if images_ts.is_dir() {
            channel0_ids(OP, &images_ts, ending)?
                .into_iter()
                .map(|id| DatasetCase {
                    image: images_ts.join(format!("{id}_0000{ending}")),
                    label: None,
                    id,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(SegDataset {
            labels,
            training,
            test,
        })
    }

    /// The training and test cases a dataset.json or JSON list names, paths relative to `dir`;
    /// `numTraining`, when given, must count the training list.
    fn listed(
        op: &'static str,
        path: &Path,
        dir: &Path,
        meta: DatasetJson,
    ) -> Result<(Vec<DatasetCase>, Vec<DatasetCase>)> {
        let entries = meta.training.unwrap_or_default();
        if entries.is_empty() {
            return Err(bad(op, path, "empty \"training\" array"));
        }
        if let Some(expected) = meta.num_training.filter(|&n| n != entries.len()) {
            return Err(bad(
                op,
                path,
                format!(
                    "numTraining is {expected}, but \"training\" lists {} cases",
                    entries.len()
                ),
            ));
        }
        let training = listed_cases(op, path, dir, entries, true)?;
        let test = listed_cases(op, path, dir, meta.test, false)?;
        Ok((training, test))
    }

    /// Read a JSON list (see the module docs).
    pub fn from_json_list(path: impl AsRef<Path>) -> Result<SegDataset> {
        const OP: &str = "SegDataset::from_json_list";
        let path = path.as_ref();
        let meta = read_dataset_json(
            OP,
            path,
            "a dataset list ({\"training\": [{\"image\": \"...\", \"label\": \"...\"}]})",
        )?;
        if meta.training.is_none() {
            return Err(bad(
                OP,
                path,
                "no \"training\" array ({\"training\": [{\"image\": \"...\", \"label\": \"...\"}]})",
            ));
        }
        check_one_channel(OP, path, &meta)?;
        let labels = match &meta.labels {
            Some(raw) => parse_labels(OP, path, raw)?,
            None => Vec::new(),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let (training, test) = Self::listed(OP, path, dir, meta)?;
        Ok(SegDataset {
            labels,
            training,
            test,
        })
    }
}

/// A case id from a file name: the name without its volume ending (`.nii.gz`, `.nii`, `.nrrd`,
/// `.nhdr`) and without a `_0000` channel suffix.
pub fn case_id_of(file: &str) -> String {
    let name = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string());
    let stem = [".nii.gz", ".nii", ".nrrd", ".nhdr"]
        .iter()
        .find_map(|e| name.strip_suffix(e))
        .unwrap_or(&name);
    stem.strip_suffix("_0000").unwrap_or(stem).to_string()
}

/// Check that `label` lies on the grid of `image` (same dims, affine within 1e-3 mm per entry);
/// the error names both files and both grids.
pub fn check_grids(
    image: &Volume,
    image_path: &Path,
    label: &Volume,
    label_path: &Path,
) -> Result<()> {
    if !image.same_grid(label, 1e-3) {
        return Err(Error::BadFile {
            op: "segment::check_grids",
            path: label_path.display().to_string(),
            problem: format!(
                "label grid does not match its image {}: label dims {:?} spacing {:?} affine {:?}; image dims {:?} spacing {:?} affine {:?}",
                image_path.display(),
                label.dims,
                label.spacing,
                label.affine,
                image.dims,
                image.spacing,
                image.affine
            ),
        });
    }
    Ok(())
}

/// Read a case's image and (when it has one) label map, on the files' own grid (no reorientation;
/// [`crate::segment::preprocess`] does that), the label checked against the image grid.
pub fn load_case(case: &DatasetCase) -> Result<(Volume, Option<Volume>)> {
    let image = read_volume(&case.image)?;
    let label = match &case.label {
        Some(p) => {
            let l = read_volume(p)?;
            check_grids(&image, &case.image, &l, p)?;
            Some(l)
        }
        None => None,
    };
    Ok((image, label))
}
