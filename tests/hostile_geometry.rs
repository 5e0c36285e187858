//! Absurd geometry (issue 15, item 4): non-finite spacing refused, every resampled size bounded
//! before allocating. An invalid `sform_code` is ignored, as nibabel does.

#[path = "common/hostile.rs"]
mod hostile;

use cads::data::nifti::decode_nifti;
use hostile::Craft;

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
