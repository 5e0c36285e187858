//! Hostile and broken input (issue 15): crafted NIfTI files and misuse of the CLI and of the
//! library get typed errors — no panic, no abort, no silent flip, nothing lost. Each test failed
//! before its fix. The CLI tests need no GPU: every check runs before an adapter is requested.

use cads::data::nifti::decode_nifti;
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
    assert_eq!(out.status.code(), Some(1), "expected a clean error, got {:?}: {err}", out.status);
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
    let out = cads(&["drr", p.to_str().unwrap(), "--cads", "-o", dir.join("x.png").to_str().unwrap()]);
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
    for (h, w) in [(max.as_str(), max.as_str()), ("4294967296", "4294967296"), ("70000", "1")] {
        let out = cads(&["drr", p.to_str().unwrap(), "-o", png.to_str().unwrap(), "--height", h, "--width", w]);
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
        (&["--projector", "trilinear", "--step-mm", "1e-6"], &["samples per ray"]),
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
    let out = cads(&["drr", p.to_str().unwrap(), "-o", dir.join("x.png").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning") && err.contains("label map"), "{err}");
    // A CT (negative HU present) does not warn.
    let p = dir.join("ct.nii");
    Craft::default().write(&p);
    let out = cads(&["drr", p.to_str().unwrap(), "-o", dir.join("y.png").to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("label map"));
}

#[allow(dead_code)]
fn decode(bytes: &[u8]) -> cads::Result<cads::data::Volume> {
    decode_nifti(bytes, "crafted.nii")
}
