//! Level 0 (no adapter): the training data of `cads segment train` comes from the plan through
//! the preprocessed cache. The first load preprocesses every case; a second load with the same
//! plan reads the cache (it returns the cached values even after the source files changed); an
//! edited plan (image resampling, target spacing) gets a new cache key and is preprocessed again
//! from the files. Label values (0, 1, 5) become the plan's classes (0, 1, 2). An nnU-Net
//! dataset.json without numTraining / file_ending / channel_names still opens.

use cads::data::{write_nifti, Affine, Datatype, Volume};
use cads::segment::dataset::SegDataset;
use cads::segment::fingerprint::fingerprint;
use cads::segment::plan::{DeviceBudget, ImageResampling, Plan};
use cads::segment::preprocess::PreprocessCache;
use cads::segment::train::{load_planned_data, CacheUse};
use std::path::{Path, PathBuf};

const LPS: Affine = [
    [-0.8, 0.0, 0.0, 30.0],
    [0.0, -0.8, 0.0, 40.0],
    [0.0, 0.0, 2.0, -10.0],
    [0.0, 0.0, 0.0, 1.0],
];
const DIMS: [usize; 3] = [12, 10, 6];

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cads-seg-plan-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(d.join("imagesTr")).unwrap();
    std::fs::create_dir_all(d.join("labelsTr")).unwrap();
    d
}

/// Case c: HU ramp + `shift`; organ (1) in a box, tumour (5) in one corner column.
fn write_case(root: &Path, c: usize, shift: f32) {
    let (mut img, mut lab) = (Vec::new(), Vec::new());
    for k in 0..DIMS[2] {
        for j in 0..DIMS[1] {
            for i in 0..DIMS[0] {
                img.push(-300.0 + 13.0 * (i + 2 * j + 3 * k + c) as f32 + shift);
                let organ = (3..9).contains(&i) && (2..7).contains(&j) && (1..5).contains(&k);
                lab.push(if organ {
                    1.0
                } else if i == 0 && j == 0 {
                    5.0
                } else {
                    0.0
                });
            }
        }
    }
    let v = |d, t| Volume::new(d, DIMS, LPS, t).unwrap();
    write_nifti(
        root.join(format!("imagesTr/c{c}_0000.nii.gz")),
        &v(img, Datatype::Int16),
        None,
    )
    .unwrap();
    write_nifti(
        root.join(format!("labelsTr/c{c}.nii.gz")),
        &v(lab, Datatype::Uint8),
        None,
    )
    .unwrap();
}

#[test]
fn training_data_is_preprocessed_once_reused_and_rebuilt_when_the_plan_changes() {
    let root = temp("cache");
    for c in 0..3 {
        write_case(&root, c, 0.0);
    }
    // No numTraining, file_ending or channel_names: accepted (one CT channel, .nii.gz).
    std::fs::write(
        root.join("dataset.json"),
        r#"{"labels": {"background": 0, "organ": 1, "tumour": 5}}"#,
    )
    .unwrap();
    let ds = SegDataset::open(&root).unwrap();
    assert_eq!(ds.training.len(), 3);
    let fp = fingerprint(&ds, 1000).unwrap();
    let budget = DeviceBudget {
        memory_bytes: 8 << 30,
        max_binding_bytes: 1 << 27,
    };
    let plan = Plan::from_fingerprint(&fp, &ds.labels, budget).unwrap();
    assert_eq!(plan.image_resampling, ImageResampling::Cubic);
    let cache_root = root.join("preprocessed");
    let load = |plan: &Plan| {
        let cache = PreprocessCache::new(&cache_root, plan);
        let mut seen = Vec::new();
        let (data, usage) = load_planned_data(&ds, plan, &cache, 0.34, |id, reused| {
            seen.push((id.to_string(), reused))
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        (data, usage, cache)
    };

    let (first, usage, cache) = load(&plan);
    assert_eq!(
        usage,
        CacheUse {
            reused: 0,
            built: 3
        }
    );
    assert_eq!((first.train.len(), first.validation.len()), (2, 1));
    assert_eq!(first.classes, 3);
    assert_eq!(first.class_names, ["background", "organ", "tumour"]);
    assert_eq!(first.plan.as_ref(), Some(&plan));
    // Value 5 is class 2.
    let classes: std::collections::BTreeSet<u32> = first.train[0]
        .label
        .data
        .iter()
        .map(|&v| v as u32)
        .collect();
    assert_eq!(classes.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    assert!(cache.dir().join("c0.image.f32").exists());

    // Same plan: served from the cache, even though the files changed meanwhile.
    for c in 0..3 {
        write_case(&root, c, 150.0);
    }
    let (second, usage, _) = load(&plan);
    assert_eq!(
        usage,
        CacheUse {
            reused: 3,
            built: 0
        }
    );
    assert_eq!(second.train[0].image, first.train[0].image);
    assert_eq!(second.validation[0].image, first.validation[0].image);

    // Edited plan (linear instead of cubic): a new key, preprocessed from the (changed) files.
    let mut linear = plan.clone();
    linear.image_resampling = ImageResampling::Linear;
    let (third, usage, other) = load(&linear);
    assert_eq!(
        usage,
        CacheUse {
            reused: 0,
            built: 3
        }
    );
    assert_ne!(other.dir(), cache.dir());
    assert_eq!(third.train[0].image.shape, first.train[0].image.shape);
    assert_ne!(third.train[0].image, first.train[0].image);
    // A cache refuses a plan it was not made for.
    let e = cache
        .get_or_build(&ds.training[0], &linear)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&linear.preprocessing_key()), "{e}");

    // Edited target spacing: new grid, [D, H, W] = [6, 10, 12] at 2 × 0.8 × 0.8 mm → half in H, W.
    let mut coarse = plan.clone();
    coarse.target_spacing_mm = [2.0, 1.6, 1.6];
    let (fourth, usage, _) = load(&coarse);
    assert_eq!(
        usage,
        CacheUse {
            reused: 0,
            built: 3
        }
    );
    assert_eq!(first.train[0].image.shape, [6, 10, 12]);
    assert_eq!(fourth.train[0].image.shape, [6, 5, 6]);
    // Three plans, three folders.
    assert_eq!(std::fs::read_dir(&cache_root).unwrap().count(), 3);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn one_case_is_split_into_slabs_on_the_plan_grid() {
    let root = temp("slab");
    write_case(&root, 0, 0.0);
    std::fs::write(
        root.join("dataset.json"),
        r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "tumour": 5}, "numTraining": 1, "file_ending": ".nii.gz"}"#,
    )
    .unwrap();
    let ds = SegDataset::open(&root).unwrap();
    let fp = fingerprint(&ds, 1000).unwrap();
    let budget = DeviceBudget {
        memory_bytes: 8 << 30,
        max_binding_bytes: 1 << 27,
    };
    let plan = Plan::from_fingerprint(&fp, &ds.labels, budget).unwrap();
    let cache = PreprocessCache::new(root.join("preprocessed"), &plan);
    let (data, _) = load_planned_data(&ds, &plan, &cache, 0.5, |_, _| {}).unwrap();
    // 6 slices along D (S-I): 3 train, 3 held out.
    assert_eq!(data.train[0].image.shape, [3, 10, 12]);
    assert_eq!(data.validation[0].image.shape, [3, 10, 12]);
    std::fs::remove_dir_all(&root).ok();
}
