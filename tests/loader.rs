//! Datasets (nnU-Net folder, JSON manifest), case loading checks, and the deterministic prefetcher.

#[path = "common/scratch.rs"]
mod scratch;
use scratch::ScratchDir;

use cads::data::loader::{
    dataset_from_folder, dataset_from_manifest, load_case, make_seg_batch, Prefetcher, SegCase,
    SegPatchConfig,
};
use cads::data::orientation::{orientation_code, reorient};
use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::preprocess::Patch;
use cads::data::write_nifti;
use cads::pretrain::cads_views::{CadsViewConfig, ParallelLineIntegral};
use cads::pretrain::{make_cads_batch, prepare_cads_volume, TilingConfig};
use cads::Error;

fn dir(name: &str) -> ScratchDir {
    let d = ScratchDir::new(&format!("loader-{name}"));
    std::fs::create_dir_all(d.join("imagesTr")).unwrap();
    std::fs::create_dir_all(d.join("labelsTr")).unwrap();
    d
}

#[test]
fn folder_and_manifest_datasets() {
    let root = dir("folder");
    for (i, seed) in [(1, 10u64), (2, 11)] {
        let (img, lab) = phantom(&PhantomConfig {
            dims: [24, 20, 16],
            spacing_mm: [2.0; 3],
            noise_hu: 5.0,
            seed,
        })
        .unwrap();
        // Store case 2 in LPS to check that loading reorients it back to RAS.
        let (img, lab) = if i == 2 {
            (
                reorient(&img, "LPS").unwrap().0,
                reorient(&lab, "LPS").unwrap().0,
            )
        } else {
            (img, lab)
        };
        write_nifti(
            root.join(format!("imagesTr/case{i}_0000.nii.gz")),
            &img,
            None,
        )
        .unwrap();
        write_nifti(root.join(format!("labelsTr/case{i}.nii.gz")), &lab, None).unwrap();
    }
    let cases = dataset_from_folder(&root).unwrap();
    assert_eq!(cases.len(), 2);
    assert!(cases[0].image.ends_with("imagesTr/case1_0000.nii.gz"));
    assert!(cases[1]
        .label
        .as_ref()
        .unwrap()
        .ends_with("labelsTr/case2.nii.gz"));
    let (img2, lab2) = load_case(&cases[1]).unwrap();
    assert_eq!(orientation_code(&img2.affine), "RAS");
    let (img1, _) = load_case(&cases[0]).unwrap();
    assert_eq!(img2.dims, img1.dims);
    assert!(lab2.unwrap().same_grid(&img2, 1e-6));

    std::fs::write(root.join("dataset.json"), r#"{"name": "x", "training": [{"image": "./imagesTr/case1_0000.nii.gz", "label": "./labelsTr/case1.nii.gz"}, {"image": "imagesTr/case2_0000.nii.gz"}]}"#).unwrap();
    let m = dataset_from_manifest(root.join("dataset.json")).unwrap();
    assert_eq!(m.len(), 2);
    assert!(m[1].label.is_none());
    assert!(load_case(&m[0]).is_ok());

    // A label on another grid is refused, naming the label file.
    let (small, _) = phantom(&PhantomConfig {
        dims: [10, 10, 10],
        spacing_mm: [2.0; 3],
        noise_hu: 0.0,
        seed: 1,
    })
    .unwrap();
    write_nifti(root.join("labelsTr/case1.nii.gz"), &small, None).unwrap();
    match load_case(&cases[0]) {
        Err(Error::BadFile { path, problem, .. }) => {
            assert!(path.ends_with("labelsTr/case1.nii.gz"));
            assert!(problem.contains("label grid does not match"));
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(root.join("bad.json"), r#"{"training": [{"label": "x"}]}"#).unwrap();
    assert!(matches!(
        dataset_from_manifest(root.join("bad.json")),
        Err(Error::BadFile { .. })
    ));
    std::fs::write(root.join("broken.json"), r#"{"training": [}"#).unwrap();
    let e = dataset_from_manifest(root.join("broken.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("invalid JSON") && e.contains("broken.json"),
        "{e}"
    );
    assert!(dataset_from_folder(root.join("nothing")).is_err());
}

/// A Decathlon task folder (its dataset.json lists the cases, images without `_0000`, macOS
/// `._` forks beside them), then the same as nnU-Net v1 (listed `CASE.nii.gz`, stored
/// `CASE_0000.nii.gz`), then an nnU-Net v2 folder with forks.
#[test]
fn decathlon_and_v1_folders_read_their_list_and_forks_are_not_cases() {
    let root = dir("decathlon");
    let (img, lab) = phantom(&PhantomConfig {
        dims: [12, 10, 8],
        spacing_mm: [2.0; 3],
        noise_hu: 0.0,
        seed: 3,
    })
    .unwrap();
    for id in ["lung_4", "lung_1"] {
        write_nifti(root.join(format!("imagesTr/{id}.nii.gz")), &img, None).unwrap();
        write_nifti(root.join(format!("labelsTr/{id}.nii.gz")), &lab, None).unwrap();
        std::fs::write(root.join(format!("imagesTr/._{id}.nii.gz")), b"Mac OS X").unwrap();
    }
    std::fs::write(root.join("dataset.json"), r#"{"modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"}, "numTraining": 2, "training": [{"image": "./imagesTr/lung_4.nii.gz", "label": "./labelsTr/lung_4.nii.gz"}, {"image": "./imagesTr/lung_1.nii.gz", "label": "./labelsTr/lung_1.nii.gz"}], "test": ["./imagesTs/lung_2.nii.gz"]}"#).unwrap();
    let cases = dataset_from_folder(&root).unwrap();
    assert_eq!(cases.len(), 2);
    assert!(cases[0].image.ends_with("imagesTr/lung_4.nii.gz"));
    assert!(cases[1]
        .label
        .as_ref()
        .unwrap()
        .ends_with("labelsTr/lung_1.nii.gz"));
    let (read, label) = load_case(&cases[1]).unwrap();
    assert_eq!(read.dims, img.dims);
    assert!(label.is_some());
    for id in ["lung_4", "lung_1"] {
        std::fs::rename(
            root.join(format!("imagesTr/{id}.nii.gz")),
            root.join(format!("imagesTr/{id}_0000.nii.gz")),
        )
        .unwrap();
    }
    let v1 = dataset_from_folder(&root).unwrap();
    assert!(v1[0].image.ends_with("imagesTr/lung_4_0000.nii.gz"));
    load_case(&v1[0]).unwrap();
    // A listed image with neither file keeps the listed path, which the read error names.
    std::fs::remove_file(root.join("imagesTr/lung_4_0000.nii.gz")).unwrap();
    let gone = dataset_from_folder(&root).unwrap();
    let e = load_case(&gone[0]).unwrap_err().to_string();
    assert!(e.contains("imagesTr/lung_4.nii.gz"), "{e}");
    // Without a list, the v2 scan; the fork of a channel-0 file is not a case.
    std::fs::write(
        root.join("dataset.json"),
        r#"{"labels": {"background": 0}}"#,
    )
    .unwrap();
    std::fs::write(root.join("imagesTr/._lung_1_0000.nii.gz"), b"Mac OS X").unwrap();
    let scanned = dataset_from_folder(&root).unwrap();
    assert_eq!(scanned.len(), 1);
    assert!(scanned[0].image.ends_with("imagesTr/lung_1_0000.nii.gz"));
    // A dataset.json that is not JSON is reported, not scanned past.
    std::fs::write(root.join("dataset.json"), "{\"training\": [").unwrap();
    let e = dataset_from_folder(&root).unwrap_err().to_string();
    assert!(
        e.contains("invalid JSON") && e.contains("dataset.json"),
        "{e}"
    );
}

#[test]
fn manifest_errors_name_the_file_and_the_problem() {
    let root = dir("manifest");
    let read = |name: &str, text: &str| {
        std::fs::write(root.join(name), text).unwrap();
        dataset_from_manifest(root.join(name))
    };
    // Escapes are decoded; keys other than "training" are ignored; a missing label is None.
    let cases = read(
        "escapes.json",
        r#" {"n": [1, -2.5e1, true, null], "training": [{"image": "x\"\u00e9.nii"}]} "#,
    )
    .unwrap();
    assert_eq!(cases[0].image, root.join("x\"é.nii"));
    assert_eq!(cases[0].label, None);
    let problem = |name: &str, text: &str| match read(name, text) {
        Err(Error::BadFile { path, problem, .. }) => {
            assert!(path.ends_with(name), "{path}");
            problem
        }
        other => panic!("{name}: {other:?}"),
    };
    for (name, text) in [
        ("empty_file.json", ""),
        ("open.json", "[1,"),
        ("colon.json", "{\"a\" 1}"),
        ("trailing.json", "{\"training\": []} x"),
        ("string.json", "\"abc"),
    ] {
        let p = problem(name, text);
        assert!(
            p.starts_with("invalid JSON") && p.contains("line 1"),
            "{name}: {p}"
        );
    }
    for (name, text, needle) in [
        (
            "no_training.json",
            "{\"name\": \"x\"}",
            "missing field `training`",
        ),
        (
            "number_image.json",
            r#"{"training": [{"image": 3}]}"#,
            "expected a string",
        ),
        ("array_top.json", "[]", "expected struct Manifest"),
    ] {
        let p = problem(name, text);
        assert!(
            p.starts_with("not a dataset manifest") && p.contains(needle),
            "{name}: {p}"
        );
    }
    assert_eq!(
        problem("empty_list.json", r#"{"training": []}"#),
        "empty \"training\" array"
    );
}

#[test]
fn prefetcher_is_deterministic_and_ordered() {
    let run = |workers| {
        Prefetcher::new(42, Some(20), workers, 3, |b, rng| Ok((b, rng.next_u64())))
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
    };
    let one = run(1);
    assert_eq!(one.len(), 20);
    assert!(one.iter().enumerate().all(|(i, (b, _))| *b == i));
    assert_eq!(one, run(4));
    // Errors come through in order; an endless prefetcher stops when dropped.
    let mut p = Prefetcher::new(1, Some(3), 2, 1, |b, _| {
        if b == 1 {
            Err(Error::invalid("t", "x", "y"))
        } else {
            Ok(b)
        }
    });
    assert!(p.next().unwrap().is_ok());
    assert!(p.next().unwrap().is_err());
    assert_eq!(p.next().unwrap().unwrap(), 2);
    assert!(p.next().is_none());
    let mut endless = Prefetcher::new(1, None, 2, 2, |b, _| Ok(b));
    assert_eq!(endless.nth(5).unwrap().unwrap(), 5);
    drop(endless);
}

#[test]
fn cads_and_segmentation_batches() {
    let (ct, lab) = phantom(&PhantomConfig {
        dims: [100, 90, 40],
        spacing_mm: [1.5, 1.5, 1.25],
        noise_hu: 10.0,
        seed: 2,
    })
    .unwrap();
    let vol = prepare_cads_volume(
        &ct,
        &TilingConfig::default(),
        &ParallelLineIntegral::default(),
    )
    .unwrap();
    assert_eq!(vol.tile(0).unwrap().shape, [24, 135, 150]);
    assert_eq!(vol.tile_count(), 3); // 50 slices at 1 mm: starts 0, 12, 24
    let vols = std::sync::Arc::new(vec![vol]);
    let cfg = CadsViewConfig::default();
    let v2 = vols.clone();
    let batches: Vec<_> = Prefetcher::new(7, Some(2), 2, 2, move |_, rng| {
        make_cads_batch(&v2, &cfg, 3, rng)
    })
    .map(|b| b.unwrap())
    .collect();
    assert_eq!(batches[0].x1.len(), 3 * 16 * 48 * 48);
    assert_eq!(batches[0].drr.len(), 3 * 96 * 96);
    assert_ne!(batches[0], batches[1]);
    let again = make_cads_batch(
        &vols,
        &CadsViewConfig::default(),
        3,
        &mut cads::util::Rng::new(7).fork(0),
    )
    .unwrap();
    assert_eq!(again, batches[0], "batch 0 is fixed by the seed");

    let cases = vec![SegCase::new(Patch::from_volume(&ct), Patch::from_volume(&lab)).unwrap()];
    let cfg = SegPatchConfig {
        patch: [16, 32, 32],
        rotation_p: 0.5,
        scale_p: 0.5,
        ..Default::default()
    };
    let b = make_seg_batch(&cases, &cfg, 2, &mut cads::util::Rng::new(3)).unwrap();
    assert_eq!(b.images.len(), 2 * 16 * 32 * 32);
    assert_eq!(
        b,
        make_seg_batch(&cases, &cfg, 2, &mut cads::util::Rng::new(3)).unwrap(),
        "seeded"
    );
    assert!(b
        .labels
        .iter()
        .all(|&l| l.fract() == 0.0 && (0.0..=7.0).contains(&l)));
}
