//! The JSON files that describe a segmentation dataset, as read (dataset.rs turns them into
//! cases). Three forms are in use, and one reader takes them all:
//!
//! - **nnU-Net v2** `dataset.json`: `labels` name → value (`{"background": 0, "liver": 1}`),
//!   `channel_names`, `numTraining`, `file_ending`; no case list (the folder is scanned).
//! - **Medical Segmentation Decathlon** / **nnU-Net v1** `dataset.json`: `labels` value → name
//!   (`{"0": "background", "1": "liver"}`), `modality` (`{"0": "CT"}`), `numTraining`, a
//!   `training` list of `{"image", "label"}` and a `test` list of image paths (bare strings).
//! - **Our JSON list**: any of those keys, `training` required, entries may carry an `id`.
//!
//! A UTF-8 byte-order mark, which some editors write, is accepted.

use super::dataset::LabelName;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Every key any of the three forms has that we read; the rest are ignored.
#[derive(serde::Deserialize)]
pub(super) struct DatasetJson {
    /// nnU-Net v2's input channels.
    #[serde(default)]
    pub channel_names: BTreeMap<String, serde_json::Value>,
    /// The Decathlon's and nnU-Net v1's input channels.
    #[serde(default)]
    pub modality: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "numTraining", default)]
    pub num_training: Option<usize>,
    #[serde(default = "default_file_ending")]
    pub file_ending: String,
    #[serde(default)]
    pub training: Option<Vec<ListEntry>>,
    #[serde(default)]
    pub test: Vec<ListEntry>,
}

fn default_file_ending() -> String {
    ".nii.gz".into()
}

/// One listed case: an object, or (the Decathlon's `test` list) a bare image path.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(super) enum ListEntry {
    Path(String),
    Case {
        #[serde(default)]
        id: Option<String>,
        image: String,
        #[serde(default)]
        label: Option<String>,
    },
}

impl ListEntry {
    /// (id, image, label) as listed.
    pub fn parts(self) -> (Option<String>, String, Option<String>) {
        match self {
            ListEntry::Path(image) => (None, image, None),
            ListEntry::Case { id, image, label } => (id, image, label),
        }
    }
}

pub(super) fn bad(op: &'static str, path: &Path, problem: impl Into<String>) -> Error {
    Error::BadFile {
        op,
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// Read and parse `path`; `form` says what was expected when the shape is wrong.
pub(super) fn read_dataset_json(op: &'static str, path: &Path, form: &str) -> Result<DatasetJson> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    // Syntax first, so a typo is never reported as a wrong shape.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| bad(op, path, format!("invalid JSON: {e}")))?;
    serde_json::from_str(text).map_err(|e| bad(op, path, format!("not {form}: {e}")))
}

/// One input channel (CT): `channel_names` (v2) or `modality` (Decathlon, v1) may name at most
/// one. A multi-modal task (the Decathlon's brain tumours: FLAIR, T1w, T1gd, T2w) is refused here,
/// before any 4D image is read.
pub(super) fn check_one_channel(op: &'static str, path: &Path, meta: &DatasetJson) -> Result<()> {
    for (key, channels) in [
        ("channel_names", &meta.channel_names),
        ("modality", &meta.modality),
    ] {
        if channels.len() > 1 {
            return Err(bad(
                op,
                path,
                format!("expected one input channel (CT), got {key} {channels:?}"),
            ));
        }
    }
    Ok(())
}

/// Labels sorted by value, from either orientation: `{"name": value}` (nnU-Net v2, our lists)
/// or `{"value": "name"}` (the Decathlon, nnU-Net v1), told apart by the whole map: the second
/// when every key is a non-negative integer and every value a string. Values must be distinct.
pub(super) fn parse_labels(
    op: &'static str,
    path: &Path,
    raw: &BTreeMap<String, serde_json::Value>,
) -> Result<Vec<LabelName>> {
    let value_keyed: Option<Vec<LabelName>> = raw
        .iter()
        .map(|(key, v)| {
            Some(LabelName {
                name: v.as_str()?.to_string(),
                value: key.trim().parse::<u32>().ok()?,
            })
        })
        .collect();
    let mut labels = match value_keyed.filter(|l| !l.is_empty()) {
        Some(labels) => labels,
        None => raw
            .iter()
            .map(|(name, v)| {
                let value = v
                    .as_u64()
                    .filter(|&x| x <= u32::MAX as u64)
                    .ok_or_else(|| {
                        bad(
                            op,
                            path,
                            format!(
                                "label \"{name}\": expected a non-negative integer value \
                             ({{\"name\": value}}, as nnU-Net v2 writes) or every label as \
                             {{\"value\": \"name\"}} (as the Decathlon writes); region-based \
                             labels are not supported; got {v}"
                            ),
                        )
                    })?;
                Ok(LabelName {
                    name: name.clone(),
                    value: value as u32,
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
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
