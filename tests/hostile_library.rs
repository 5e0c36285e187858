//! Hostile use of the library (issue 15, items 1, 7, 8 and 10): size arithmetic that would wrap,
//! output never renamed over a device, loader failures propagated, and manifests with a BOM and
//! relative paths.

#[path = "common/hostile.rs"]
mod hostile;

use hostile::{scratch, Craft};
use std::path::Path;

// ---- 1. Wrapping size arithmetic (library) ---------------------------------------------------

#[test]
fn library_geometry_products_are_checked() {
    use cads::drr::{preset, Geometry, VolumeGrid};
    assert!(Geometry::cone(usize::MAX, usize::MAX, 1.0, 1000.0, 500.0).is_err());
    assert!(Geometry::cone(1 << 32, 1 << 32, 1.0, 1000.0, 500.0).is_err());
    assert!(Geometry::cone(200, 200, 1.0, 1000.0, 500.0).is_ok());
    let grid = VolumeGrid::centred([2, 2, 2], [1e30, 1e30, 1e30]);
    assert!(preset::frontal_parallel(&grid, 1.0).is_err());
    let grid = VolumeGrid::centred([2, 2, 2], [1.0, 1.0, 1.0]);
    assert!(preset::frontal_parallel(&grid, 1.0).is_ok());
    // h·w wraps to 1 in release builds: this used to pass the length check and index past the end.
    let half = 1usize << (usize::BITS / 2);
    assert!(preset::resize_bilinear(&[0.0], half, half, 4, 4).is_err());
    assert!(preset::resize_bilinear(&[0.0], usize::MAX, usize::MAX, 4, 4).is_err());
}

#[test]
fn conv_geometry_with_padding_near_usize_max_is_an_error() {
    use cads::ops::conv3d::conv3d_output_shape;
    use cads::ops::{Conv3dConfig, ConvTranspose3dConfig, Pool3dConfig};
    let x = [1, 4, 4, 4, 1];
    let w = [3, 3, 3, 1, 1];
    let cfg = Conv3dConfig::cube(3, 1, 0).padding([usize::MAX / 4; 3]);
    assert!(conv3d_output_shape(&x, &w, &cfg).is_err());
    let cfg = Conv3dConfig::cube(3, 1, 0).dilation([usize::MAX / 2; 3]);
    assert!(conv3d_output_shape(&x, &w, &cfg).is_err());
    assert!(conv3d_output_shape(&x, &w, &Conv3dConfig::cube(3, 1, 1)).is_ok());
    let mut t = ConvTranspose3dConfig::up2();
    t.stride = [usize::MAX / 2; 3];
    assert!(t.output_dims("conv_transpose3d", [4, 4, 4]).is_err());
    let mut pool = Pool3dConfig::cube(2);
    pool.padding = [usize::MAX / 2; 3];
    pool.kernel = [usize::MAX; 3];
    assert!(pool.output_dims("max_pool3d", [4, 4, 4]).is_err());
}

#[test]
fn tensor_numel_saturates_instead_of_wrapping() {
    assert_eq!(cads::tensor::numel(&[1 << 32, 1 << 32]), usize::MAX);
    assert_eq!(cads::tensor::numel(&[1 << 32, 1 << 32, 0]), 0);
    assert!(cads::util::size::checked_numel("t", &[1 << 32, 1 << 32]).is_err());
}

// ---- 7. Writing output ------------------------------------------------------------------------

#[test]
fn output_is_never_renamed_over_a_device_and_failed_writes_leave_nothing() {
    use cads::util::file::{write_atomically, write_atomically_with};
    let dir = scratch("write");
    // /dev/full: written in place, the ENOSPC reported; the node stays a device.
    if Path::new("/dev/full").exists() {
        let e = write_atomically("t", "/dev/full", &[0u8; 100_000])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/full"), "{e}");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device());
    }
    // A directory is refused, not replaced.
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert!(write_atomically("t", &sub, b"x").is_err());
    assert!(sub.is_dir());
    // A failing writer leaves the old file and no temporary file.
    let f = dir.join("out.bin");
    std::fs::write(&f, b"old").unwrap();
    let e = write_atomically_with("t", &f, |w| {
        w.write_all(b"half")?;
        Err(std::io::Error::other("encoder failed"))
    });
    assert!(e.is_err());
    assert_eq!(std::fs::read(&f).unwrap(), b"old");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // A symlink to a regular file keeps the link and replaces the target.
    let link = dir.join("link.bin");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    write_atomically("t", &link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&f).unwrap(), b"new");
    // The NIfTI and PNG writers go through it.
    let vol = cads::data::Volume::new(
        vec![0.0; 8],
        [2, 2, 2],
        cads::data::volume::IDENTITY,
        cads::data::Datatype::Uint8,
    )
    .unwrap();
    if Path::new("/dev/full").exists() {
        assert!(cads::data::write_nifti("/dev/full", &vol, None).is_err());
        assert!(cads::drr::io::write_png(
            "/dev/full",
            &vec![0.5; 256 * 256],
            256,
            256,
            Some((0.0, 1.0))
        )
        .is_err());
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device());
    }
}

// ---- 8. Loader failures -----------------------------------------------------------------------

#[test]
fn a_panicking_worker_is_an_error_for_its_batch_known_or_unknown_length() {
    use cads::data::loader::Prefetcher;
    for count in [Some(6), None] {
        let batches = Prefetcher::new(7, count, 2, 2, |b, _rng| {
            if b == 3 {
                panic!("worker fault at batch 3");
            }
            Ok(b)
        });
        let got: Vec<_> = batches.take(6).collect();
        assert_eq!(got.len(), 6, "count {count:?}");
        for (b, item) in got.iter().enumerate() {
            match item {
                Ok(v) => assert_eq!(*v, b),
                Err(e) => {
                    assert_eq!(b, 3);
                    assert!(e.to_string().contains("worker fault at batch 3"), "{e}");
                }
            }
        }
        assert!(got[3].is_err());
    }
}

#[test]
fn a_zero_size_patch_is_an_error_not_an_empty_batch() {
    use cads::data::loader::{make_seg_batch, SegCase, SegPatchConfig};
    use cads::data::preprocess::Patch;
    let case = SegCase::new(Patch::filled([4, 4, 4], 0.0), Patch::filled([4, 4, 4], 1.0)).unwrap();
    let mut rng = cads::util::Rng::new(0);
    for patch in [[0, 4, 4], [4, 0, 4], [4, 4, 0]] {
        let cfg = SegPatchConfig {
            patch,
            ..SegPatchConfig::default()
        };
        assert!(make_seg_batch(std::slice::from_ref(&case), &cfg, 2, &mut rng).is_err());
    }
    let cfg = SegPatchConfig {
        patch: [2, 2, 2],
        ..SegPatchConfig::default()
    };
    assert!(make_seg_batch(std::slice::from_ref(&case), &cfg, 0, &mut rng).is_err());
    assert_eq!(
        make_seg_batch(&[case], &cfg, 2, &mut rng)
            .unwrap()
            .images
            .len(),
        16
    );
}

// ---- 10. Manifests ----------------------------------------------------------------------------

#[test]
fn manifests_accept_a_bom_and_show_resolved_paths() {
    use cads::data::loader::{dataset_from_manifest, load_case};
    let dir = scratch("manifest");
    let sub = dir.join("sets");
    std::fs::create_dir_all(&sub).unwrap();
    let img = dir.join("img.nii");
    Craft::default().write(&img);
    let m = sub.join("dataset.json");
    let text = format!(
        "\u{feff}{{\"training\": [{{\"image\": \"../img.nii\"}}, {{\"image\": \"{}\"}}, {{\"image\": \"../missing/./x.nii\"}}]}}",
        img.display()
    );
    std::fs::write(&m, text).unwrap();
    let cases = dataset_from_manifest(&m).unwrap();
    assert_eq!(cases.len(), 3);
    let canonical = std::fs::canonicalize(&img).unwrap();
    assert_eq!(cases[0].image, canonical);
    assert_eq!(cases[1].image, canonical);
    load_case(&cases[0]).unwrap();
    // A missing file's error shows where it was looked for, without `..` or `.`.
    let e = load_case(&cases[2]).unwrap_err().to_string();
    let want = dir.join("missing/x.nii");
    assert!(e.contains(&want.display().to_string()), "{e}");
}
