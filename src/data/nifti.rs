//! NIfTI-1 and NIfTI-2 reading (`.nii`, `.nii.gz`, either byte order) and NIfTI-1 writing.
//!
//! The header is parsed here by hand (not with the `nifti` crate) so that every malformed field gets
//! its own error naming the file and the problem, and so NIfTI-2 is covered.
//!
//! Affine, in the standard's order of preference:
//! 1. `sform_code > 0`: the rows `srow_x, srow_y, srow_z`.
//! 2. `qform_code > 0`: `R(b, c, d) · diag(dx, dy, qfac·dz)` plus `(qoffset_x, y, z)`, where
//!    `a = √(1 − b² − c² − d²)` and `qfac = pixdim[0]` (−1 flips the third axis; 0 counts as 1).
//! 3. neither: `diag(dx, dy, dz)` with zero offset (the standard's "method 1").
//!
//! Values: `stored · scl_slope + scl_inter` when `scl_slope` is finite and non-zero.

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::volume::{spacing_of, Affine, Datatype, Volume};

pub use super::nifti_write::{affine_to_quaternion, encode_nifti, write_nifti};
use crate::error::{Error, Result};
use std::io::Read;

const OP_READ: &str = "read_nifti";

pub(super) fn bad(op: &'static str, path: &str, problem: impl Into<String>) -> Error {
    Error::BadFile {
        op,
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// Read a NIfTI-1 or NIfTI-2 file (`.nii` or gzip-compressed `.nii.gz`, detected by content).
pub fn read_nifti(path: impl AsRef<std::path::Path>) -> Result<Volume> {
    let p = path.as_ref();
    let name = p.display().to_string();
    let raw = std::fs::read(p).map_err(|source| Error::Io {
        op: OP_READ,
        path: name.clone(),
        source,
    })?;
    decode_nifti(&raw, &name)
}

/// Decode NIfTI bytes (gzip or not); `name` is used in errors.
pub fn decode_nifti(raw: &[u8], name: &str) -> Result<Volume> {
    let bytes = if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 2);
        flate2::read::MultiGzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| {
                let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "truncated gzip stream (the file ends before the compressed data does)"
                        .to_string()
                } else {
                    format!("corrupt gzip stream: {e}")
                };
                bad(OP_READ, name, what)
            })?;
        out
    } else {
        raw.to_vec()
    };
    let header = Header::parse(&bytes, name)?;
    header.read_volume(&bytes, name)
}

/// Reads little- or big-endian scalars at byte offsets of the header.
struct Reader<'a> {
    b: &'a [u8],
    big: bool,
}

impl Reader<'_> {
    fn arr<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[at..at + N]);
        if self.big {
            a.reverse();
        }
        a
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.arr(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.arr(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.arr(at))
    }
    fn f32(&self, at: usize) -> f64 {
        f32::from_le_bytes(self.arr(at)) as f64
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.arr(at))
    }
}

/// The header fields the reader uses, widened to the NIfTI-2 types.
#[derive(Debug)]
struct Header {
    version: u8,
    big_endian: bool,
    dim: [i64; 8],
    datatype_code: i64,
    bitpix: i64,
    pixdim: [f64; 8],
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i64,
    sform_code: i64,
    quatern: [f64; 6],
    srow: [[f64; 4]; 3],
}

impl Header {
    fn parse(b: &[u8], name: &str) -> Result<Header> {
        if b.len() < 4 {
            return Err(bad(
                OP_READ,
                name,
                format!("file of {} bytes is too short for a NIfTI header", b.len()),
            ));
        }
        let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let (version, big) = match (le, be) {
            (348, _) => (1u8, false),
            (_, 348) => (1, true),
            (540, _) => (2, false),
            (_, 540) => (2, true),
            _ => {
                return Err(bad(
                    OP_READ,
                    name,
                    format!("bad magic: sizeof_hdr is {le} (little-endian) / {be} (big-endian), expected 348 (NIfTI-1) or 540 (NIfTI-2); not a NIfTI file"),
                ))
            }
        };
        let hsize = if version == 1 { 348 } else { 540 };
        if b.len() < hsize {
            return Err(bad(
                OP_READ,
                name,
                format!(
                    "truncated header: {} bytes, NIfTI-{version} needs {hsize}",
                    b.len()
                ),
            ));
        }
        let r = Reader { b, big };
        let h = if version == 1 {
            let magic = &b[344..348];
            if magic == b"ni1\0" {
                return Err(bad(OP_READ, name, "two-file NIfTI-1 (.hdr/.img, magic 'ni1') is not supported; convert it to a single .nii"));
            }
            if magic != b"n+1\0" {
                return Err(bad(
                    OP_READ,
                    name,
                    format!(
                        "bad magic {:?}, expected \"n+1\\0\"",
                        String::from_utf8_lossy(magic)
                    ),
                ));
            }
            let mut dim = [0i64; 8];
            let mut pixdim = [0f64; 8];
            for i in 0..8 {
                dim[i] = r.i16(40 + 2 * i) as i64;
                pixdim[i] = r.f32(76 + 4 * i);
            }
            let mut srow = [[0f64; 4]; 3];
            for (row, s) in srow.iter_mut().enumerate() {
                for (c, v) in s.iter_mut().enumerate() {
                    *v = r.f32(280 + 16 * row + 4 * c);
                }
            }
            let mut quatern = [0f64; 6];
            for (i, q) in quatern.iter_mut().enumerate() {
                *q = r.f32(256 + 4 * i);
            }
            Header {
                version,
                big_endian: big,
                dim,
                datatype_code: r.i16(70) as i64,
                bitpix: r.i16(72) as i64,
                pixdim,
                vox_offset: r.f32(108),
                scl_slope: r.f32(112),
                scl_inter: r.f32(116),
                qform_code: r.i16(252) as i64,
                sform_code: r.i16(254) as i64,
                quatern,
                srow,
            }
        } else {
            let magic = &b[4..12];
            if magic != b"n+2\0\r\n\x1a\n" {
                return Err(bad(
                    OP_READ,
                    name,
                    format!("bad magic {magic:?}, expected \"n+2\\0\\r\\n\\x1a\\n\""),
                ));
            }
            let mut dim = [0i64; 8];
            let mut pixdim = [0f64; 8];
            for i in 0..8 {
                dim[i] = r.i64(16 + 8 * i);
                pixdim[i] = r.f64(104 + 8 * i);
            }
            let mut srow = [[0f64; 4]; 3];
            for (row, s) in srow.iter_mut().enumerate() {
                for (c, v) in s.iter_mut().enumerate() {
                    *v = r.f64(400 + 32 * row + 8 * c);
                }
            }
            let mut quatern = [0f64; 6];
            for (i, q) in quatern.iter_mut().enumerate() {
                *q = r.f64(352 + 8 * i);
            }
            Header {
                version,
                big_endian: big,
                dim,
                datatype_code: r.i16(12) as i64,
                bitpix: r.i16(14) as i64,
                pixdim,
                vox_offset: r.i64(168) as f64,
                scl_slope: r.f64(176),
                scl_inter: r.f64(184),
                qform_code: r.i32(344) as i64,
                sform_code: r.i32(348) as i64,
                quatern,
                srow,
            }
        };
        Ok(h)
    }

    /// `[X, Y, Z]`, refusing what is not a single 3-D scalar volume.
    fn dims3(&self, name: &str) -> Result<[usize; 3]> {
        let nd = self.dim[0];
        if !(1..=7).contains(&nd) {
            return Err(bad(
                OP_READ,
                name,
                format!("dim[0] = {nd}, expected 1..7 (corrupt header)"),
            ));
        }
        let nd = nd as usize;
        for a in 1..=nd {
            if self.dim[a] <= 0 {
                return Err(bad(
                    OP_READ,
                    name,
                    format!(
                        "zero-size dimension: dim[{a}] = {} in dim {:?}",
                        self.dim[a],
                        &self.dim[..=nd]
                    ),
                ));
            }
        }
        if let Some(a) = (4..=nd).find(|&a| self.dim[a] > 1) {
            return Err(bad(
                OP_READ,
                name,
                format!(
                    "{}-D image (dim {:?}, dim[{a}] = {}) is not supported; only single 3-D volumes are",
                    nd,
                    &self.dim[1..=nd],
                    self.dim[a]
                ),
            ));
        }
        let d = |a: usize| if a <= nd { self.dim[a] as usize } else { 1 };
        Ok([d(1), d(2), d(3)])
    }

    fn affine(&self) -> Affine {
        let mut a = super::volume::IDENTITY;
        if self.sform_code > 0 {
            a[..3].copy_from_slice(&self.srow);
        } else if self.qform_code > 0 {
            let [mut b, mut c, mut d, qx, qy, qz] = self.quatern;
            // nifti1_io's rule: b, c, d are stored as f32, so when a² = 1 − b² − c² − d² is below
            // f32 rounding, a is 0 and (b, c, d) is renormalised to a unit quaternion.
            let a2 = 1.0 - (b * b + c * c + d * d);
            let aa = if a2 < 1e-7 {
                let n = (b * b + c * c + d * d).sqrt().max(f64::MIN_POSITIVE);
                b /= n;
                c /= n;
                d /= n;
                0.0
            } else {
                a2.sqrt()
            };
            let rot = [
                [
                    aa * aa + b * b - c * c - d * d,
                    2.0 * (b * c - aa * d),
                    2.0 * (b * d + aa * c),
                ],
                [
                    2.0 * (b * c + aa * d),
                    aa * aa + c * c - b * b - d * d,
                    2.0 * (c * d - aa * b),
                ],
                [
                    2.0 * (b * d - aa * c),
                    2.0 * (c * d + aa * b),
                    aa * aa + d * d - c * c - b * b,
                ],
            ];
            let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let s = [self.pixdim[1], self.pixdim[2], qfac * self.pixdim[3]];
            for r in 0..3 {
                for c in 0..3 {
                    a[r][c] = rot[r][c] * s[c];
                }
            }
            a[0][3] = qx;
            a[1][3] = qy;
            a[2][3] = qz;
        } else {
            for c in 0..3 {
                a[c][c] = self.pixdim[c + 1];
            }
        }
        a
    }

    fn read_volume(&self, b: &[u8], name: &str) -> Result<Volume> {
        let dims = self.dims3(name)?;
        let dt = Datatype::from_code(self.datatype_code).map_err(|m| bad(OP_READ, name, m))?;
        if self.bitpix != 8 * dt.size() as i64 {
            return Err(bad(
                OP_READ,
                name,
                format!(
                    "bitpix {} does not match datatype {dt} ({} bits)",
                    self.bitpix,
                    8 * dt.size()
                ),
            ));
        }
        let affine = self.affine();
        if affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(bad(OP_READ, name, format!("non-finite affine {affine:?}")));
        }
        let spacing = spacing_of(&affine);
        if let Some(a) = (0..3).find(|&a| spacing[a] <= 0.0) {
            return Err(bad(
                OP_READ,
                name,
                format!(
                    "zero voxel size along axis {a}: affine {affine:?}, pixdim {:?}",
                    self.pixdim
                ),
            ));
        }
        let min_off = if self.version == 1 { 352.0 } else { 544.0 };
        let vo = self.vox_offset;
        if !vo.is_finite() || vo < min_off || vo.fract() != 0.0 {
            return Err(bad(OP_READ, name, format!("wrong vox_offset {vo}: must be a whole number ≥ {min_off} for a single-file NIfTI-{}", self.version)));
        }
        let n: usize = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(OP_READ, name, format!("dims {dims:?} overflow")))?;
        let nbytes = n
            .checked_mul(dt.size())
            .ok_or_else(|| bad(OP_READ, name, format!("dims {dims:?} overflow")))?;
        let start = vo as usize;
        if start.checked_add(nbytes).is_none_or(|end| end > b.len()) {
            return Err(bad(
                OP_READ,
                name,
                format!(
                    "data truncated or wrong vox_offset: {nbytes} bytes of {dt} {dims:?} from offset {start} need {} bytes, the (decompressed) file has {}",
                    start.saturating_add(nbytes),
                    b.len()
                ),
            ));
        }
        let data = decode_values(&b[start..start + nbytes], dt, self.big_endian);
        let (slope, inter) = if self.scl_slope.is_finite() && self.scl_slope != 0.0 {
            (
                self.scl_slope,
                if self.scl_inter.is_finite() {
                    self.scl_inter
                } else {
                    0.0
                },
            )
        } else {
            (1.0, 0.0)
        };
        let mut data = data;
        if slope != 1.0 || inter != 0.0 {
            for v in data.iter_mut() {
                *v = (*v * slope + inter) as f32 as f64;
            }
        }
        if let Some(first) = data.iter().position(|v| !v.is_finite()) {
            let count = data.iter().filter(|v| !v.is_finite()).count();
            let (i, j, k) = (
                first % dims[0],
                (first / dims[0]) % dims[1],
                first / (dims[0] * dims[1]),
            );
            return Err(bad(
                OP_READ,
                name,
                format!("{count} NaN/Inf voxels (first at voxel [{i}, {j}, {k}])"),
            ));
        }
        let data: Vec<f32> = data.into_iter().map(|v| v as f32).collect();
        if let Some(first) = data.iter().position(|v| !v.is_finite()) {
            return Err(bad(
                OP_READ,
                name,
                format!("value at flat voxel {first} overflows f32"),
            ));
        }
        Ok(Volume {
            data,
            dims,
            spacing,
            affine,
            datatype: dt,
        })
    }
}

fn decode_values(b: &[u8], dt: Datatype, big: bool) -> Vec<f64> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    (if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64
                })
                .collect()
        };
    }
    match dt {
        Datatype::Uint8 => b.iter().map(|&v| v as f64).collect(),
        Datatype::Int8 => b.iter().map(|&v| v as i8 as f64).collect(),
        Datatype::Int16 => conv!(i16, 2),
        Datatype::Uint16 => conv!(u16, 2),
        Datatype::Int32 => conv!(i32, 4),
        Datatype::Float32 => conv!(f32, 4),
        Datatype::Float64 => conv!(f64, 8),
    }
}
