//! Segmentation datasets: nnU-Net's raw layout and a JSON list.
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
//! **JSON list**: `{"labels": {"background": 0, "liver": 1}, "training": [{"image": "a.nii.gz",
//! "label": "a_seg.nii.gz"}], "test": [{"image": "b.nii.gz"}]}`, paths relative to the file's
//! folder; a case id is `id` when given, else the image file name without its ending. `labels`
//! may be omitted (classes then come from the label maps when planning).
//!
//! [`load_case`] reads a case and checks that its label map lies on the image's grid; a mismatch is
//! an error naming both files and both grids.

use crate::data::read_volume;
use crate::data::Volume;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
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

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct NnunetJson {
    #[serde(rename = "channel_names", default)]
    channel_names: BTreeMap<String, String>,
    labels: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    num_training: Option<usize>,
    #[serde(rename = "file_ending", default = "default_file_ending")]
    file_ending: String,
}

fn default_file_ending() -> String {
    ".nii.gz".into()
}

#[derive(serde::Deserialize)]
struct JsonList {
    #[serde(default)]
    labels: Option<BTreeMap<String, serde_json::Value>>,
    training: Vec<JsonCase>,
    #[serde(default)]
    test: Vec<JsonCase>,
}

#[derive(serde::Deserialize)]
struct JsonCase {
    #[serde(default)]
    id: Option<String>,
    image: String,
    #[serde(default)]
    label: Option<String>,
}

fn bad(op: &'static str, path: &Path, problem: impl Into<String>) -> Error {
    Error::BadFile {
        op,
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    op: &'static str,
    path: &Path,
    form: &str,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    })?;
    // Syntax first, so a typo is never reported as a wrong shape.
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| bad(op, path, format!("invalid JSON: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(op, path, format!("not {form}: {e}")))
}

/// `{"name": value}` → labels sorted by value; values must be distinct non-negative integers.
fn parse_labels(
    op: &'static str,
    path: &Path,
    raw: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<LabelName>> {
    let mut labels = Vec::new();
    for (name, v) in raw {
        let value = v.as_u64().filter(|&x| x <= u32::MAX as u64).ok_or_else(|| {
            bad(
                op,
                path,
                format!(
                    "label \"{name}\": expected a non-negative integer value (region-based labels are not supported), got {v}"
                ),
            )
        })?;
        labels.push(LabelName {
            name: name.clone(),
            value: value as u32,
        });
    }
    labels.sort_by_key(|l| l.value);
    if let Some(w) = labels.windows(2).find(|w| w[0].value == w[1].value) {
        return Err(bad(
            op,
            path,
            format!(
                "labels \"{}\" and \"{}\" share the value {}",
                w[0].name, w[1].name, w[0].value
            ),
        ));
    }
    Ok(labels)
}

/// Case ids of the files `<id>_0000<ending>` in `dir`, sorted.
fn channel0_ids(op: &'static str, dir: &Path, ending: &str) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        op,
        path: dir.display().to_string(),
        source,
    })?;
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            n.strip_suffix(ending)?
                .strip_suffix("_0000")
                .map(str::to_string)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

impl SegDataset {
    /// A folder (nnU-Net raw layout) or a `.json` file (JSON list).
    pub fn open(path: impl AsRef<Path>) -> Result<SegDataset> {
        let p = path.as_ref();
        if p.is_dir() {
            SegDataset::from_nnunet(p)
        } else {
            SegDataset::from_json_list(p)
        }
    }

    /// Read an nnU-Net raw dataset folder (see the module docs).
    pub fn from_nnunet(root: impl AsRef<Path>) -> Result<SegDataset> {
        const OP: &str = "SegDataset::from_nnunet";
        let root = root.as_ref();
        let json_path = root.join("dataset.json");
        let meta: NnunetJson = read_json(
            OP,
            &json_path,
            "an nnU-Net dataset.json (channel_names, labels, numTraining, file_ending)",
        )?;
        if meta.channel_names.len() > 1 {
            return Err(bad(
                OP,
                &json_path,
                format!(
                    "expected one input channel (CT), got channel_names {:?}",
                    meta.channel_names
                ),
            ));
        }
        let labels = parse_labels(OP, &json_path, &meta.labels)?;
        if labels.first().map(|l| l.value) != Some(0) {
            return Err(bad(
                OP,
                &json_path,
                "labels must include the background with value 0",
            ));
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

    /// Read a JSON list (see the module docs).
    pub fn from_json_list(path: impl AsRef<Path>) -> Result<SegDataset> {
        const OP: &str = "SegDataset::from_json_list";
        let path = path.as_ref();
        let list: JsonList = read_json(
            OP,
            path,
            "a dataset list ({\"training\": [{\"image\": \"...\", \"label\": \"...\"}]})",
        )?;
        if list.training.is_empty() {
            return Err(bad(OP, path, "empty \"training\" array"));
        }
        let labels = match &list.labels {
            Some(raw) => parse_labels(OP, path, raw)?,
            None => Vec::new(),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let convert = |c: JsonCase, need_label: bool| -> Result<DatasetCase> {
            if need_label && c.label.is_none() {
                return Err(bad(
                    OP,
                    path,
                    format!("training case {} has no \"label\"", c.image),
                ));
            }
            let id = c.id.unwrap_or_else(|| case_id_of(&c.image));
            Ok(DatasetCase {
                id,
                image: dir.join(&c.image),
                label: c.label.map(|l| dir.join(l)),
            })
        };
        let training = list
            .training
            .into_iter()
            .map(|c| convert(c, true))
            .collect::<Result<Vec<_>>>()?;
        let test = list
            .test
            .into_iter()
            .map(|c| convert(c, false))
            .collect::<Result<Vec<_>>>()?;
        let mut ids: Vec<&str> = training.iter().map(|c| c.id.as_str()).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(
                OP,
                path,
                format!("two training cases have the id \"{}\"", w[0]),
            ));
        }
        Ok(SegDataset {
            labels,
            training,
            test,
        })
    }
}

/// A case id from a file name: the name without `.nii.gz` / `.nii` and without a `_0000` channel
/// suffix.
pub fn case_id_of(file: &str) -> String {
    let name = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string());
    let stem = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
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
