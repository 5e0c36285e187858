//! Absurd geometry (issue 15, item 4): non-finite spacing refused, every resampled size bounded
//! before allocating, and the error on every path from a file to a resampling — pretraining's
//! preprocessing, segmentation's preprocessing and prediction, `cads drr --cads` — names the file,
//! its spacing and the size it would need. An invalid `sform_code` is ignored, as nibabel does.

#[path = "common/hostile.rs"]
mod hostile;

use cads::data::nifti::decode_nifti;
use hostile::{assert_clean_error, cads, scratch, Craft};

// ---- 4. Absurd geometry -----------------------------------------------------------------------

#[test]
fn an_sform_with_infinite_spacing_is_refused() {
    let big = 3.0e38f32;
    let bytes = Craft {
        sform_code: 1,
        srow: [
            [big, 0.0, 0.0, 0.0],
            [big, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ],
        ..Default::default()
    }
    .bytes();
    let e = decode_nifti(&bytes, "inf.nii").unwrap_err().to_string();
    assert!(e.contains("inf.nii") && e.contains("voxel size"), "{e}");
}

#[test]
fn resampling_absurd_voxel_sizes_is_an_error_not_an_abort() {
    use cads::data::preprocess::{resample_to_spacing, Interp};
    for dx in [1e4f32, 3.4e38, 1e-40, 1e-30] {
        let bytes = Craft {
            pixdim: [1.0, dx, dx, dx],
            ..Default::default()
        }
        .bytes();
        let vol = match decode_nifti(&bytes, "absurd.nii") {
            Ok(v) => v,
            Err(e) => {
                // Refusing the file is fine too (a subnormal size), as long as it is an error.
                assert!(e.to_string().contains("absurd.nii"), "{e}");
                continue;
            }
        };
        match resample_to_spacing(&vol, [1.0; 3], Interp::Linear) {
            Ok(r) => assert!(r.data.len() <= 1 << 30),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("spacing") && e.contains("voxels"), "{e}");
            }
        }
    }
    // An explicit sample: 1e4 mm voxels at 1 mm need 4e4 × 3e4 × 2e4 voxels.
    let vol = decode_nifti(
        &Craft {
            pixdim: [1.0, 1e4, 1e4, 1e4],
            ..Default::default()
        }
        .bytes(),
        "big.nii",
    )
    .unwrap();
    let e = resample_to_spacing(&vol, [1.0; 3], Interp::Linear)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[10000.0, 10000.0, 10000.0]") && e.contains("2.400e13 voxels"),
        "{e}"
    );
}

#[test]
fn an_invalid_sform_code_is_ignored() {
    // sform_code 256 with a qform: the qform is used (the crafted sform would read 9 mm voxels).
    let bytes = Craft {
        pixdim: [1.0, 2.0, 2.0, 2.0],
        qform_code: 1,
        sform_code: 256,
        srow: [
            [-9.0, 0.0, 0.0, 0.0],
            [0.0, 9.0, 0.0, 0.0],
            [0.0, 0.0, 9.0, 0.0],
        ],
        ..Default::default()
    }
    .bytes();
    let v = decode_nifti(&bytes, "code.nii").unwrap();
    assert_eq!(v.spacing, [2.0, 2.0, 2.0]);
    assert_eq!(v.affine[0][0], 2.0);
}

// ---- 4. The resample-size error names the file ------------------------------------------------

/// A NIfTI whose 1e4 mm voxels would need 4e4 × 3e4 × 2e4 voxels at 1 mm.
fn absurd_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    Craft {
        pixdim: [1.0, 1e4, 1e4, 1e4],
        ..Default::default()
    }
    .write(&p);
    p
}

/// The message names the file, the file's spacing and the size the resampled grid would need.
fn assert_names_file_spacing_and_size(e: &str, file: &str) {
    assert!(e.contains(file), "no file name: {e}");
    assert!(e.contains("10000.0, 10000.0, 10000.0"), "no spacing: {e}");
    assert!(e.contains("voxels"), "no size: {e}");
}

#[test]
fn pretraining_preprocessing_names_the_file_it_cannot_resample() {
    use cads::pretrain::cache::{build_cache, CacheConfig, VolumeSource};
    use cads::pretrain::cads_views::ParallelLineIntegral;
    let dir = scratch("pretrain-absurd");
    let p = absurd_file(&dir, "absurd_ct.nii");
    let mut logged = Vec::new();
    let e = build_cache(
        &[VolumeSource::File(p)],
        &dir.join("cache"),
        &CacheConfig::default(),
        &ParallelLineIntegral::default(),
        |m| logged.push(m.to_string()),
    )
    .unwrap_err()
    .to_string();
    // "none of 1 input(s): NAME (WHY)": the reason itself names the file too (it did not).
    let why = &e[e.find(" (").expect("a reason in parentheses")..];
    assert_names_file_spacing_and_size(why, "absurd_ct.nii");
    assert!(why.contains("2.400e13"), "{why}");
}

#[test]
fn segmentation_preprocessing_names_the_file_it_cannot_resample() {
    use cads::segment::dataset::{DatasetCase, LabelName};
    use cads::segment::plan::{CtNormalization, LabelResampling, MemoryModel, Plan};
    use cads::segment::preprocess::PreprocessCache;
    let dir = scratch("segment-absurd");
    let p = absurd_file(&dir, "absurd_case_0000.nii");
    let plan = Plan {
        version: cads::segment::plan::PLAN_VERSION,
        target_spacing_mm: [1.0, 1.0, 1.0],
        median_shape: [32, 32, 32],
        patch: [16, 32, 32],
        batch: 1,
        total_stride: cads::segment::plan::TOTAL_STRIDE,
        labels: vec![LabelName {
            name: "background".into(),
            value: 0,
        }],
        normalization: CtNormalization {
            clip_low: -1000.0,
            clip_high: 1000.0,
            mean: 0.0,
            std: 100.0,
        },
        image_resampling: Default::default(),
        label_resampling: LabelResampling::Nearest,
        memory: MemoryModel {
            budget_bytes: 8 << 30,
            max_binding_bytes: 1 << 30,
            bytes_per_voxel: cads::segment::plan::BYTES_PER_VOXEL,
            fixed_bytes: cads::segment::plan::FIXED_BYTES,
            full_resolution_channels: cads::segment::plan::FULL_RESOLUTION_CHANNELS,
        },
    };
    let case = DatasetCase {
        id: "absurd_case".into(),
        image: p,
        label: None,
    };
    let e = PreprocessCache::new(dir.join("cache"), &plan)
        .get_or_make(&case, &plan)
        .unwrap_err()
        .to_string();
    assert_names_file_spacing_and_size(&e, "absurd_case_0000.nii");
}

#[test]
fn drr_of_an_absurd_spacing_names_the_file_and_the_size() {
    let dir = scratch("drr-absurd");
    let p = dir.join("absurd_drr.nii");
    Craft {
        pixdim: [1.0, 1e5, 1e5, 1e5],
        ..Default::default()
    }
    .write(&p);
    let out = cads(&[
        "drr",
        p.to_str().unwrap(),
        "--cads",
        "-o",
        dir.join("x.png").to_str().unwrap(),
    ]);
    // The detector it would need (4e5 columns at 1 mm) is over the bound; the error names the
    // file, its voxel size and that size.
    assert_clean_error(
        &out,
        &[
            "absurd_drr.nii",
            "[100000.0, 100000.0, 100000.0] mm",
            "detector columns",
            "400000",
        ],
    );
}
