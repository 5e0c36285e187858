//! Hostile and broken input (issue 15): crafted NIfTI files and misuse of the CLI and of the
//! library get typed errors — no panic, no abort, no silent flip, nothing lost. Each test failed
//! before its fix. The CLI tests need no GPU: every check runs before an adapter is requested.

use cads::data::nifti::{decode_nifti, decode_nifti_with_limit, MAX_BYTES_ENV};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cads-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The header fields a crafted NIfTI-1 file sets; the rest are zero (a valid single-file header).
#[derive(Clone)]
struct Craft {
    dims: [i16; 3],
    /// pixdim[0..4]: qfac, dx, dy, dz.
    pixdim: [f32; 4],
    qform_code: i16,
    sform_code: i16,
    /// quatern_b, c, d, qoffset_x, y, z.
    quatern: [f32; 6],
    srow: [[f32; 4]; 3],
}

impl Default for Craft {
    fn default() -> Self {
        Craft {
            dims: [4, 3, 2],
            pixdim: [1.0, 1.0, 1.0, 1.0],
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 6],
            srow: [[0.0; 4]; 3],
        }
    }
}

impl Craft {
    /// An int16 NIfTI-1 file (little-endian) whose voxels are `value(i)`.
    fn bytes_with(&self, value: impl Fn(usize) -> i16) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        let put = |h: &mut Vec<u8>, at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
        put(&mut h, 0, &348i32.to_le_bytes());
        let dim = [3i16, self.dims[0], self.dims[1], self.dims[2], 1, 1, 1, 1];
        for (i, d) in dim.iter().enumerate() {
            put(&mut h, 40 + 2 * i, &d.to_le_bytes());
        }
        put(&mut h, 70, &4i16.to_le_bytes()); // int16
        put(&mut h, 72, &16i16.to_le_bytes());
        for (i, v) in self.pixdim.iter().enumerate() {
            put(&mut h, 76 + 4 * i, &v.to_le_bytes());
        }
        put(&mut h, 108, &352f32.to_le_bytes());
        put(&mut h, 252, &self.qform_code.to_le_bytes());
        put(&mut h, 254, &self.sform_code.to_le_bytes());
        for (i, v) in self.quatern.iter().enumerate() {
            put(&mut h, 256 + 4 * i, &v.to_le_bytes());
        }
        for (r, row) in self.srow.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                put(&mut h, 280 + 16 * r + 4 * c, &v.to_le_bytes());
            }
        }
        put(&mut h, 344, b"n+1\0");
        let n: usize = self.dims.iter().map(|&d| d as usize).product();
        for i in 0..n {
            h.extend_from_slice(&value(i).to_le_bytes());
        }
        h
    }

    fn bytes(&self) -> Vec<u8> {
        self.bytes_with(|i| (i as i16) * 10 - 1000)
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

fn cads(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cads"))
        .args(args)
        // No adapter: every check these tests exercise must run before one is requested.
        .env("VK_ICD_FILENAMES", "/nonexistent")
        .env("VK_DRIVER_FILES", "/nonexistent")
        .output()
        .unwrap()
}

/// Exit status 1 with an `error:` line containing every `needles` (not a panic: that is 101).
fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean error, got {:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

// ---- 1. Wrapping size arithmetic -------------------------------------------------------------

#[test]
fn drr_cads_view_of_a_huge_extent_is_an_error_not_an_out_of_bounds_panic() {
    let dir = scratch("drr-extent");
    let p = dir.join("huge.nii");
    // 3.4e38 mm voxels: the detector covering the volume at 1 mm would need ~1e39 pixels a side.
    Craft {
        pixdim: [1.0, 3.0e38, 3.0e38, 3.0e38],
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
    assert_clean_error(&out, &["huge.nii", "detector"]);
    assert!(!dir.join("x.png").exists());
}

#[test]
fn drr_detector_of_usize_max_pixels_is_refused() {
    let dir = scratch("drr-det");
    let p = dir.join("ct.nii");
    Craft::default().write(&p);
    let max = usize::MAX.to_string();
    let png = dir.join("x.png");
    for (h, w) in [
        (max.as_str(), max.as_str()),
        ("4294967296", "4294967296"),
        ("70000", "1"),
    ] {
        let out = cads(&[
            "drr",
            p.to_str().unwrap(),
            "-o",
            png.to_str().unwrap(),
            "--height",
            h,
            "--width",
            w,
        ]);
        assert_clean_error(&out, &["detector", "pixels"]);
    }
}

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

// ---- 5. Broken pipe ---------------------------------------------------------------------------

#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    let dir = scratch("pipe");
    let p = dir.join("ct.nii");
    Craft::default().write(&p);
    // The pipe's read end is closed before the child writes: every write gets EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_cads"))
        .args(["inspect", p.to_str().unwrap()])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

// ---- 6. Unbounded work and geometry options ---------------------------------------------------

#[test]
fn drr_options_are_validated_before_any_work() {
    let dir = scratch("drr-opts");
    let p = dir.join("ct.nii");
    Craft::default().write(&p);
    let (f, png) = (p.to_str().unwrap(), dir.join("x.png"));
    let o = png.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--projector", "trilinear", "--step-mm", "1e-6"],
            &["samples per ray"],
        ),
        (&["--projector", "trilinear", "--step-mm", "0"], &["step"]),
        (&["--projector", "trilinear", "--step-mm", "NaN"], &["step"]),
        (&["--sid-mm", "2000"], &["--sid-mm"]),
        (&["--sid-mm=-5"], &["--sid-mm"]),
        (&["--sdd-mm", "inf"], &["--sdd-mm"]),
        (&["--pixel-mm", "0"], &["pixel"]),
        (&["--pixel-mm", "NaN"], &["pixel"]),
        (&["--window", "5,5"], &["--window"]),
        (&["--window", "9,1"], &["--window"]),
        (&["--window", "0,inf"], &["--window"]),
        (&["--rotation-deg", "0,NaN,0"], &["finite"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["drr", f, "-o", o];
        args.extend_from_slice(flags);
        let out = cads(&args);
        assert_clean_error(&out, needles);
    }
    assert!(!png.exists());
}

// ---- 10. Quiet misuse -------------------------------------------------------------------------

#[test]
fn drr_of_a_label_map_warns() {
    let dir = scratch("drr-label");
    let p = dir.join("labels.nii");
    std::fs::write(&p, Craft::default().bytes_with(|i| (i % 3) as i16)).unwrap();
    let out = cads(&[
        "drr",
        p.to_str().unwrap(),
        "-o",
        dir.join("x.png").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("label map"),
        "{err}"
    );
    // A CT (negative HU present) does not warn.
    let p = dir.join("ct.nii");
    Craft::default().write(&p);
    let out = cads(&[
        "drr",
        p.to_str().unwrap(),
        "-o",
        dir.join("y.png").to_str().unwrap(),
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("label map"));
}

// ---- 2. Decompression bombs ------------------------------------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_header_declaring_more_than_the_limit_is_refused_before_inflating() {
    // 1024 × 1024 × 512 int16 = 1 GiB declared; the stream holds the header and one slice only.
    let mut bytes = Craft {
        dims: [1024, 1024, 512],
        ..Default::default()
    }
    .bytes_with(|_| 0)[..352]
        .to_vec();
    bytes.extend(std::iter::repeat_n(0u8, 1 << 16));
    let gz = gzip(&bytes);
    let e = decode_nifti_with_limit(&gz, "bomb.nii.gz", 64 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bomb.nii.gz")
            && e.contains("exceeds the reading limit")
            && e.contains(MAX_BYTES_ENV),
        "{e}"
    );
    // The same through the CLI, with the limit from the environment.
    let dir = scratch("bomb");
    let p = dir.join("bomb.nii.gz");
    std::fs::write(&p, &gz).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cads"))
        .args(["inspect", p.to_str().unwrap()])
        .env(MAX_BYTES_ENV, (64u64 << 20).to_string())
        .output()
        .unwrap();
    assert_clean_error(&out, &["exceeds the reading limit", MAX_BYTES_ENV]);
}

#[test]
fn only_the_declared_bytes_are_inflated() {
    // A tiny image followed by 64 MiB of trailing zeros (a 64 KB file): the trailing data is
    // never inflated, so a 4 KiB limit suffices, and the values are those of the image.
    let craft = Craft::default();
    let mut bytes = craft.bytes();
    bytes.extend(std::iter::repeat_n(0u8, 64 << 20));
    let gz = gzip(&bytes);
    assert!(gz.len() < 1 << 20);
    let v = decode_nifti_with_limit(&gz, "trailing.nii.gz", 4096).unwrap();
    assert_eq!(v.dims, [4, 3, 2]);
    assert_eq!(v.data[5], 5.0 * 10.0 - 1000.0);
    // And a truncated stream is still an error, not a short volume.
    let cut = &gzip(&craft.bytes())[..60];
    assert!(decode_nifti_with_limit(cut, "cut.nii.gz", 4096).is_err());
    let short = &craft.bytes()[..360];
    let e = decode_nifti(short, "short.nii").unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}

// ---- 3. Orientation as nibabel reads it -------------------------------------------------------

#[test]
fn qform_and_sform_read_as_nibabel_reads_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nibabel");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let vol = cads::data::read_nifti(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for r in 0..4 {
            for c in 0..4 {
                let want = case["affine"][r][c].as_f64().unwrap();
                let got = vol.affine[r][c];
                assert!(
                    (want - got).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{file}: affine[{r}][{c}] = {got}, nibabel reads {want}\n{:?}",
                    vol.affine
                );
            }
        }
    }
    // The negative pixdim[1] case reads RAS, as nibabel does (it used to read LAS).
    let vol = cads::data::read_nifti(dir.join("qform_neg_pixdim1.nii")).unwrap();
    assert_eq!(
        cads::data::orientation::orientation_code(&vol.affine),
        "RAS"
    );
}

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

// ---- Deterministic mutation test of the NIfTI reader and the manifest parser -------------------

/// Bounded by count and by time (CI runs it in every test pass): byte flips, header-field
/// overwrites with extreme values, truncations and gzip wrapping of a valid file, and of a
/// manifest. Every result must be a value or an error; a panic fails the test.
#[test]
fn mutated_niftis_and_manifests_never_panic() {
    let mut rng = cads::util::Rng::new(15);
    let base = Craft {
        qform_code: 1,
        sform_code: 1,
        srow: [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ],
        ..Default::default()
    }
    .bytes();
    let extremes: [[u8; 4]; 10] = [
        0i32.to_le_bytes(),
        (-1i32).to_le_bytes(),
        i32::MAX.to_le_bytes(),
        i32::MIN.to_le_bytes(),
        0x7fffi32.to_le_bytes(),
        f32::NAN.to_le_bytes(),
        f32::INFINITY.to_le_bytes(),
        3.4e38f32.to_le_bytes(),
        1e-40f32.to_le_bytes(),
        (-2.0f32).to_le_bytes(),
    ];
    // CADS_MUTATION_SECS=600 runs a longer search (no count bound); the default is CI's.
    let long: Option<u64> = std::env::var("CADS_MUTATION_SECS")
        .ok()
        .and_then(|v| v.parse().ok());
    let (max_n, secs) = match long {
        Some(secs) => (usize::MAX, secs),
        None => (20_000, 10),
    };
    let start = std::time::Instant::now();
    let mut n = 0;
    while n < max_n && start.elapsed().as_secs() < secs {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 if !b.is_empty() => {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                1 => {
                    // An extreme value over a header field (fields are 2- or 4-byte aligned).
                    let at = 2 * rng.below(350 / 2 - 2);
                    let v = extremes[rng.below(extremes.len())];
                    let w = if rng.below(2) == 0 { 2 } else { 4 };
                    if at + w <= b.len() {
                        b[at..at + w].copy_from_slice(&v[..w]);
                    }
                }
                2 => b.truncate(rng.below(b.len() + 1)),
                0 => {}
                _ => b.extend(std::iter::repeat_n(0xff, rng.below(64))),
            }
        }
        let bytes = if rng.below(4) == 0 { gzip(&b) } else { b };
        let _ = cads::data::nifti::decode_nifti_with_limit(&bytes, "mutant.nii", 1 << 20);
        n += 1;
    }
    assert!(n >= 1000, "only {n} mutants in the time bound");
    // Manifests: mutate a valid one character by character.
    let manifest = "\u{feff}{\"training\": [{\"image\": \"a.nii\", \"label\": \"b.nii\"}, {\"image\": \"../c.nii.gz\"}]}";
    let chars: Vec<char> = manifest.chars().collect();
    let pool = [
        '{', '}', '[', ']', '"', ':', ',', '\\', '\0', '\u{feff}', 'x', '/', '.', ' ',
    ];
    for _ in 0..5_000 {
        let mut c = chars.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(c.len());
            match rng.below(3) {
                0 => c[i] = pool[rng.below(pool.len())],
                1 => {
                    c.remove(i);
                }
                _ => c.insert(i, pool[rng.below(pool.len())]),
            }
        }
        let text: String = c.into_iter().collect();
        let _ = cads::data::loader::parse_manifest(&text, Path::new("/tmp/m/dataset.json"));
    }
}
