//! Level 0 (no adapter): nnU-Net folders and JSON lists, label-grid checks, the fingerprint, the
//! plan (nnU-Net's spacing rules, stride-divisible patch, memory fit, plan.json round trip and
//! edited-plan errors), CT normalisation, resampling and the preprocessed cache.

use cads::data::{write_nifti, Affine, Datatype, Volume};
use cads::segment::dataset::{load_case, LabelName, SegDataset};
use cads::segment::fingerprint::{fingerprint, IntensityStats};
use cads::segment::plan::{target_spacing, DeviceBudget, Plan, TOTAL_STRIDE};
use cads::segment::preprocess::{
    normalize_ct, preprocess_volumes, resample_channels, PreprocessCache,
};
use std::path::{Path, PathBuf};

const LAS: Affine = [
    [-0.7, 0.0, 0.0, 100.0],
    [0.0, 0.7, 0.0, -50.0],
    [0.0, 0.0, 2.5, 20.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cads-seg-data-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Image: HU ramp; label: 1 in a box, 2 in a corner.
fn case_volumes(dims: [usize; 3], affine: Affine) -> (Volume, Volume) {
    let mut img = Vec::new();
    let mut lab = Vec::new();
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                img.push(-500.0 + 10.0 * (i + j + k) as f32);
                let inside = (2..6).contains(&i) && (1..5).contains(&j) && (1..3).contains(&k);
                lab.push(if inside {
                    1.0
                } else if i == 0 && j == 0 {
                    2.0
                } else {
                    0.0
                });
            }
        }
    }
    (
        Volume::new(img, dims, affine, Datatype::Int16).unwrap(),
        Volume::new(lab, dims, affine, Datatype::Uint8).unwrap(),
    )
}

fn write_nnunet(root: &Path, num_training: usize) {
    for d in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("dataset.json"),
        format!(r#"{{"channel_names": {{"0": "CT"}}, "labels": {{"background": 0, "organ": 1, "corner": 2}}, "numTraining": {num_training}, "file_ending": ".nii.gz"}}"#),
    )
    .unwrap();
    for (id, dims) in [("case_a", [8, 7, 4]), ("case_b", [9, 6, 5])] {
        let (img, lab) = case_volumes(dims, LAS);
        write_nifti(root.join(format!("imagesTr/{id}_0000.nii.gz")), &img, None).unwrap();
        write_nifti(root.join(format!("labelsTr/{id}.nii.gz")), &lab, None).unwrap();
    }
    let (img, _) = case_volumes([5, 5, 3], LAS);
    write_nifti(root.join("imagesTs/case_t_0000.nii.gz"), &img, None).unwrap();
}

#[test]
fn nnunet_folder_and_json_list() {
    let root = temp("nnunet");
    write_nnunet(&root, 2);
    let ds = SegDataset::open(&root).unwrap();
    assert_eq!(
        ds.labels
            .iter()
            .map(|l| (l.name.as_str(), l.value))
            .collect::<Vec<_>>(),
        [("background", 0), ("organ", 1), ("corner", 2)]
    );
    assert_eq!(
        ds.training
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["case_a", "case_b"]
    );
    assert_eq!(ds.test.len(), 1);
    assert_eq!(ds.test[0].id, "case_t");
    assert!(ds.training[0]
        .label
        .as_ref()
        .unwrap()
        .ends_with("labelsTr/case_a.nii.gz"));
    // numTraining must match.
    write_nnunet(&root, 3);
    let e = SegDataset::open(&root).unwrap_err().to_string();
    assert!(
        e.contains("numTraining is 3") && e.contains("2 cases"),
        "{e}"
    );
    // JSON list.
    let list = root.join("list.json");
    std::fs::write(&list, r#"{"labels": {"background": 0, "organ": 1}, "training": [{"image": "imagesTr/case_a_0000.nii.gz", "label": "labelsTr/case_a.nii.gz"}], "test": [{"id": "t", "image": "imagesTs/case_t_0000.nii.gz"}]}"#).unwrap();
    let ds = SegDataset::open(&list).unwrap();
    assert_eq!(ds.training[0].id, "case_a");
    assert_eq!(ds.test[0].id, "t");
    let (img, lab) = load_case(&ds.training[0]).unwrap();
    assert_eq!(img.dims, lab.unwrap().dims);
    std::fs::write(&list, r#"{"training": [{"image": "a.nii.gz"}]}"#).unwrap();
    assert!(SegDataset::open(&list)
        .unwrap_err()
        .to_string()
        .contains("no \"label\""));
    std::fs::write(&list, r#"{"training": [ }"#).unwrap();
    assert!(SegDataset::open(&list)
        .unwrap_err()
        .to_string()
        .contains("invalid JSON"));
    std::fs::remove_dir_all(&root).ok();
}

/// A Decathlon task folder as its tarball unpacks on macOS: images without a channel suffix,
/// labels keyed by value, `modality`, a `test` list of bare paths, `._` resource forks.
fn write_decathlon(root: &Path, num_training: usize) {
    for d in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("dataset.json"),
        format!(
            r#"{{"name": "Spleen", "modality": {{"0": "CT"}}, "labels": {{"0": "background", "1": "spleen", "2": "corner"}}, "numTraining": {num_training}, "numTest": 1, "training": [{{"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"}}, {{"image": "./imagesTr/spleen_10.nii.gz", "label": "./labelsTr/spleen_10.nii.gz"}}], "test": ["./imagesTs/spleen_1.nii.gz"]}}"#
        ),
    )
    .unwrap();
    for (id, dims) in [("spleen_2", [8, 7, 4]), ("spleen_10", [9, 6, 5])] {
        let (img, lab) = case_volumes(dims, LAS);
        write_nifti(root.join(format!("imagesTr/{id}.nii.gz")), &img, None).unwrap();
        write_nifti(root.join(format!("labelsTr/{id}.nii.gz")), &lab, None).unwrap();
        std::fs::write(root.join(format!("imagesTr/._{id}.nii.gz")), b"Mac OS X").unwrap();
    }
    let (img, _) = case_volumes([5, 5, 3], LAS);
    write_nifti(root.join("imagesTs/spleen_1.nii.gz"), &img, None).unwrap();
}

#[test]
fn decathlon_task_folders_and_nnunet_v1_lists() {
    let root = temp("decathlon");
    write_decathlon(&root, 2);
    let ds = SegDataset::open(&root).unwrap();
    let labels: Vec<(&str, u32)> = ds
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value))
        .collect();
    assert_eq!(labels, [("background", 0), ("spleen", 1), ("corner", 2)]);
    // The list's order, not the folder's; ids from the listed file names.
    let ids: Vec<&str> = ds.training.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["spleen_2", "spleen_10"]);
    assert!(ds.training[1].image.ends_with("imagesTr/spleen_10.nii.gz"));
    assert!(ds.training[1]
        .label
        .as_ref()
        .unwrap()
        .ends_with("labelsTr/spleen_10.nii.gz"));
    assert_eq!(ds.test.len(), 1);
    assert_eq!(ds.test[0].id, "spleen_1");
    assert!(ds.test[0].label.is_none());
    let (img, lab) = load_case(&ds.training[1]).unwrap();
    assert_eq!(img.dims, [9, 6, 5]);
    assert_eq!(lab.unwrap().dims, [9, 6, 5]);

    // The same dataset.json given as a file reads the same.
    let as_list = SegDataset::open(root.join("dataset.json")).unwrap();
    assert_eq!(as_list, ds);

    // numTraining counts the list.
    write_decathlon(&root, 3);
    let e = SegDataset::open(&root).unwrap_err().to_string();
    assert!(
        e.contains("numTraining is 3") && e.contains("lists 2 cases"),
        "{e}"
    );

    // nnU-Net v1: the list names CASE.nii.gz, the folder holds CASE_0000.nii.gz.
    write_decathlon(&root, 2);
    for id in ["spleen_2", "spleen_10"] {
        std::fs::rename(
            root.join(format!("imagesTr/{id}.nii.gz")),
            root.join(format!("imagesTr/{id}_0000.nii.gz")),
        )
        .unwrap();
    }
    let v1 = SegDataset::open(&root).unwrap();
    assert!(v1.training[0]
        .image
        .ends_with("imagesTr/spleen_2_0000.nii.gz"));
    assert_eq!(v1.training[0].id, "spleen_2");
    load_case(&v1.training[0]).unwrap();

    // A multi-modal task is refused before any image is read.
    let json = root.join("dataset.json");
    let text = std::fs::read_to_string(&json).unwrap().replace(
        r#""modality": {"0": "CT"}"#,
        r#""modality": {"0": "FLAIR", "1": "T1w"}"#,
    );
    std::fs::write(&json, text).unwrap();
    let e = SegDataset::open(&root).unwrap_err().to_string();
    assert!(
        e.contains("one input channel") && e.contains("FLAIR"),
        "{e}"
    );

    // Labels in neither orientation (a name keyed by value beside a value keyed by name).
    write_decathlon(&root, 2);
    let text = std::fs::read_to_string(&json)
        .unwrap()
        .replace(r#""2": "corner""#, r#""corner": 2, "3": "kidney""#);
    std::fs::write(&json, text).unwrap();
    let e = SegDataset::open(&root).unwrap_err().to_string();
    assert!(e.contains(r#"label "0""#) && e.contains("Decathlon"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn resource_forks_are_not_cases_of_an_nnunet_folder() {
    let root = temp("forks");
    write_nnunet(&root, 2);
    std::fs::write(root.join("imagesTr/._case_a_0000.nii.gz"), b"Mac OS X").unwrap();
    let ds = SegDataset::open(&root).unwrap();
    let ids: Vec<&str> = ds.training.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["case_a", "case_b"]);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_label_on_another_grid_names_both_files_and_grids() {
    let root = temp("grid");
    write_nnunet(&root, 2);
    let (_, lab) = case_volumes([8, 7, 5], LAS);
    write_nifti(root.join("labelsTr/case_a.nii.gz"), &lab, None).unwrap();
    let ds = SegDataset::open(&root).unwrap();
    let e = load_case(&ds.training[0]).unwrap_err().to_string();
    assert!(
        e.contains("labelsTr/case_a.nii.gz") && e.contains("imagesTr/case_a_0000.nii.gz"),
        "{e}"
    );
    assert!(e.contains("[8, 7, 5]") && e.contains("[8, 7, 4]"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn target_spacing_follows_nnunet_rules() {
    // Isotropic-ish: the median per axis.
    let t = target_spacing(
        &[[1.0, 0.8, 0.8], [2.0, 0.7, 0.9], [1.5, 0.9, 0.7]],
        &[[100, 200, 200]; 3],
    )
    .unwrap();
    assert_eq!(t, [1.5, 0.8, 0.8]);
    // Anisotropic (5 > 3·0.8 and 30·3 < 512): the 10th percentile of the coarse axis,
    // {3, 5, 5, 5} at position 0.3 → 3.6.
    let sp = [
        [5.0, 0.8, 0.8],
        [5.0, 0.7, 0.7],
        [3.0, 0.75, 0.75],
        [5.0, 0.8, 0.8],
    ];
    let t = target_spacing(&sp, &[[30, 512, 512]; 4]).unwrap();
    assert!((t[0] - 3.6).abs() < 1e-12 && t[1] == 0.775, "{t:?}");
    // Thick spacing but many slices: not anisotropic by the voxel rule, the median stays.
    let t = target_spacing(&sp, &[[300, 512, 512]; 4]).unwrap();
    assert_eq!(t[0], 5.0);
}

#[test]
fn fingerprint_plan_and_plan_json() {
    let root = temp("plan");
    write_nnunet(&root, 2);
    let ds = SegDataset::open(&root).unwrap();
    let fp = fingerprint(&ds, 1000).unwrap();
    // Canonical [D, H, W]: LAS [X, Y, Z] dims [8, 7, 4] → [4, 7, 8], spacing [2.5, 0.7, 0.7].
    assert_eq!(fp.cases[0].shape, [4, 7, 8]);
    assert!((fp.cases[0].spacing_mm[0] - 2.5).abs() < 1e-6);
    assert_eq!(fp.label_values, [0, 1, 2]);
    // Fewer foreground voxels than samples per case: as many draws as voxels (36 + 37).
    assert_eq!(fp.foreground.samples, 73);
    assert!(
        fp.foreground.percentile_00_5 <= fp.foreground.mean
            && fp.foreground.mean <= fp.foreground.percentile_99_5
    );
    let budget = DeviceBudget {
        memory_bytes: 8 << 30,
        max_binding_bytes: 1 << 30,
    };
    let plan = Plan::from_fingerprint(&fp, &ds.labels, budget).unwrap();
    for (p, s) in plan.patch.iter().zip(TOTAL_STRIDE) {
        assert_eq!(p % s, 0);
    }
    assert!(plan.batch >= 2);
    assert!(
        plan.memory.training_bytes(plan.patch, plan.batch) <= budget.memory_bytes
            || plan.batch == 2
    );
    let path = root.join("plan.json");
    plan.save(&path).unwrap();
    assert_eq!(Plan::load(&path).unwrap(), plan);
    // An edited patch that the stride does not divide names the nearest valid size.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["patch"] = serde_json::json!([60, 160, 160]);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let e = Plan::load(&path).unwrap_err().to_string();
    assert!(e.contains("nearest valid size is 64"), "{e}");
    // A device that cannot hold two minimum patches is an error.
    let tiny = DeviceBudget {
        memory_bytes: 1 << 20,
        max_binding_bytes: 1 << 20,
    };
    assert!(Plan::from_fingerprint(&fp, &ds.labels, tiny).is_err());
    // Large median shapes are shrunk to the budget.
    let mut big = fp.clone();
    for c in &mut big.cases {
        c.shape = [400, 512, 512];
        c.spacing_mm = [1.0, 1.0, 1.0];
    }
    let small = DeviceBudget {
        memory_bytes: 4 << 30,
        max_binding_bytes: 1 << 30,
    };
    let p = Plan::from_fingerprint(&big, &ds.labels, small).unwrap();
    assert!(
        p.memory.training_bytes(p.patch, 2) <= small.memory_bytes,
        "{:?}",
        p.patch
    );
    assert!(p.memory.largest_tensor_bytes(p.patch, p.batch) <= small.max_binding_bytes);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn intensity_statistics() {
    let s = IntensityStats::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!((s.mean, s.min, s.max), (2.5, 1.0, 4.0));
    assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
    assert!((s.percentile_00_5 - 1.015).abs() < 1e-12 && (s.percentile_99_5 - 3.985).abs() < 1e-12);
    assert!(IntensityStats::of(&[]).is_err());
}

#[test]
fn normalisation_resampling_and_cache() {
    let root = temp("cache");
    write_nnunet(&root, 2);
    let ds = SegDataset::open(&root).unwrap();
    let fp = fingerprint(&ds, 1000).unwrap();
    let budget = DeviceBudget {
        memory_bytes: 8 << 30,
        max_binding_bytes: 1 << 30,
    };
    let mut plan = Plan::from_fingerprint(&fp, &ds.labels, budget).unwrap();
    // Normalisation: clip then z-score.
    let mut x = vec![-2000.0, 0.0, 50.0, 3000.0];
    let n = cads::segment::plan::CtNormalization {
        clip_low: -100.0,
        clip_high: 100.0,
        mean: 10.0,
        std: 20.0,
    };
    normalize_ct(&mut x, &n).unwrap();
    assert_eq!(x, [-5.5, -0.5, 2.0, 4.5]);
    // Resampling to 1.4 × 1.4 × 2.5 mm halves H and W.
    plan.target_spacing_mm = [2.5, 1.4, 1.4];
    let (img, lab) = case_volumes([8, 6, 4], LAS);
    let c = preprocess_volumes("a", &img, Some(&lab), &plan).unwrap();
    assert_eq!(c.image.shape, [4, 3, 4]);
    assert_eq!(c.spacing_mm, plan.target_spacing_mm);
    let l = c.label.as_ref().unwrap();
    assert!(l.data.iter().all(|&v| v == 0.0 || v == 1.0 || v == 2.0));
    assert!(l.data.contains(&1.0));
    // resample_channels: an identity scale copies; a constant field stays constant.
    let data: Vec<f32> = (0..2 * 3 * 4 * 2).map(|v| v as f32).collect();
    assert_eq!(
        resample_channels(&data, [2, 3, 4], 2, [2, 3, 4], [1.0; 3]).unwrap(),
        data
    );
    let ones = vec![1.0f32; 2 * 3 * 4];
    assert!(
        resample_channels(&ones, [2, 3, 4], 1, [5, 7, 9], [0.3, 0.4, 0.45])
            .unwrap()
            .iter()
            .all(|&v| (v - 1.0).abs() < 1e-6)
    );
    // Cache: miss, make, hit with the same contents.
    let cache = PreprocessCache::new(root.join("cache"), &plan);
    assert!(cache.get("case_a").unwrap().is_none());
    let made = cache.get_or_make(&ds.training[0], &plan).unwrap();
    let hit = cache.get("case_a").unwrap().unwrap();
    assert_eq!(
        (&made.id, &made.image, &made.label),
        (&hit.id, &hit.image, &hit.label)
    );
    assert!((0..3).all(|a| (made.spacing_mm[a] - hit.spacing_mm[a]).abs() < 1e-12));
    // An edited plan gets another folder.
    let mut edited = plan.clone();
    edited.normalization.mean += 1.0;
    assert_ne!(
        PreprocessCache::new(root.join("cache"), &edited).dir(),
        cache.dir()
    );
    // A truncated data file is an error naming it.
    let f = cache.dir().join("case_a.image.f32");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 4]).unwrap();
    let e = cache.get("case_a").unwrap_err().to_string();
    assert!(
        e.contains("case_a.image.f32") && e.contains("rebuild"),
        "{e}"
    );
    let _ = LabelName {
        name: String::new(),
        value: 0,
    };
    std::fs::remove_dir_all(&root).ok();
}
