//! Helpers shared by the hostile-input tests (issue 15): crafted NIfTI-1 files, a scratch
//! folder, the `cads` binary run without an adapter, and the clean-error check. Included with
//! `#[path = "common/hostile.rs"] mod hostile;` (not through `common/mod.rs`, whose GPU helpers
//! these host-only tests do not need).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

#[path = "scratch.rs"]
mod scratch_dir;
pub use scratch_dir::ScratchDir;

/// A fresh scratch folder for one test, removed when dropped.
pub fn scratch(name: &str) -> ScratchDir {
    ScratchDir::new(&format!("hostile-{name}"))
}

/// The header fields a crafted NIfTI-1 file sets; the rest are zero (a valid single-file header).
#[derive(Clone)]
pub struct Craft {
    pub dims: [i16; 3],
    /// pixdim[0..4]: qfac, dx, dy, dz.
    pub pixdim: [f32; 4],
    pub qform_code: i16,
    pub sform_code: i16,
    /// quatern_b, c, d, qoffset_x, y, z.
    pub quatern: [f32; 6],
    pub srow: [[f32; 4]; 3],
    /// scl_slope, scl_inter (0, 0: no scaling).
    pub scl: [f32; 2],
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
            scl: [0.0, 0.0],
        }
    }
}

impl Craft {
    /// An int16 NIfTI-1 file (little-endian) whose voxels are `value(i)`.
    pub fn bytes_with(&self, value: impl Fn(usize) -> i16) -> Vec<u8> {
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
        put(&mut h, 112, &self.scl[0].to_le_bytes());
        put(&mut h, 116, &self.scl[1].to_le_bytes());
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

    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_with(|i| (i as i16) * 10 - 1000)
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

pub fn cads(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cads"))
        .args(args)
        // No adapter: every check these tests exercise must run before one is requested.
        .env("VK_ICD_FILENAMES", "/nonexistent")
        .env("VK_DRIVER_FILES", "/nonexistent")
        .output()
        .unwrap()
}

/// Exit status 1 with an `error:` line containing every `needles` (not a panic: that is 101).
pub fn assert_clean_error(out: &Output, needles: &[&str]) {
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

/// gzip-compressed bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}
