//! The NIfTI-1/NIfTI-2 header, parsed by hand (src/data/nifti.rs says why) in either byte
//! order, and the voxel layout and affine it implies, validated field by field.

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::nifti::{bad, OP_READ};
use super::volume::{spacing_of, Affine, Datatype};
use crate::error::Result;

/// What the header says about the voxels, validated: where they start, how many, their type
/// and their placement.
pub(super) struct Layout {
    pub(super) dims: [usize; 3],
    pub(super) datatype: Datatype,
    pub(super) n: usize,
    pub(super) nbytes: usize,
    pub(super) start: usize,
    pub(super) affine: Affine,
    pub(super) spacing: [f64; 3],
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
pub(super) struct Header {
    pub(super) version: u8,
    pub(super) big_endian: bool,
    pub(super) dim: [i64; 8],
    pub(super) datatype_code: i64,
    pub(super) bitpix: i64,
    pub(super) pixdim: [f64; 8],
    pub(super) vox_offset: f64,
    pub(super) scl_slope: f64,
    pub(super) scl_inter: f64,
    pub(super) qform_code: i64,
    pub(super) sform_code: i64,
    pub(super) quatern: [f64; 6],
    pub(super) srow: [[f64; 4]; 3],
}

impl Header {
    pub(super) fn parse(b: &[u8], name: &str) -> Result<Header> {
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

    /// NIfTI's xform codes are 0..=4 (unknown, scanner, aligned, Talairach, MNI); another value
    /// is a corrupt field, ignored with a warning as nibabel does.
    fn xform_code(&self, which: &str, code: i64, name: &str) -> i64 {
        if (0..=4).contains(&code) {
            code
        } else {
            eprintln!("warning: {name}: invalid {which}_code {code} (expected 0..4); ignoring the {which}");
            0
        }
    }

    fn affine(&self, name: &str) -> Affine {
        let mut a = super::volume::IDENTITY;
        let sform_code = self.xform_code("sform", self.sform_code, name);
        let qform_code = self.xform_code("qform", self.qform_code, name);
        if sform_code > 0 {
            a[..3].copy_from_slice(&self.srow);
        } else if qform_code > 0 {
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
            // The standard (and nifti1_io, and nibabel) take the voxel sizes' magnitudes here:
            // the handedness comes from qfac = pixdim[0] alone. A negative pixdim[1] used to
            // flip x (LAS where every other reader sees RAS): a silent left-right flip.
            let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let s = [
                self.pixdim[1].abs(),
                self.pixdim[2].abs(),
                qfac * self.pixdim[3].abs(),
            ];
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

    /// Validate the header and resolve where the voxels are, how many, and their placement.
    pub(super) fn layout(&self, name: &str) -> Result<Layout> {
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
        let affine = self.affine(name);
        if affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(bad(OP_READ, name, format!("non-finite affine {affine:?}")));
        }
        // A finite affine can still give an infinite column norm (entries near 3.4e38 square to
        // inf): every later size computed from the spacing would be absurd.
        let spacing = spacing_of(&affine);
        // The header stores f32: a voxel size beyond f32's range is infinite as nifti1_io computes
        // it, and is refused here too.
        let finite = |v: f64| v.is_finite() && (v as f32).is_finite();
        if let Some(a) = (0..3).find(|&a| !(finite(spacing[a]) && spacing[a] > 0.0)) {
            return Err(bad(
                OP_READ,
                name,
                format!(
                    "voxel size {} mm along axis {a} (expected positive and finite): affine {affine:?}, pixdim {:?}",
                    spacing[a], self.pixdim
                ),
            ));
        }
        let min_off = if self.version == 1 { 352.0 } else { 544.0 };
        let vo = self.vox_offset;
        if !vo.is_finite() || vo < min_off || vo.fract() != 0.0 || vo > u32::MAX as f64 {
            return Err(bad(OP_READ, name, format!("wrong vox_offset {vo}: must be a whole number ≥ {min_off} (and below 2^32) for a single-file NIfTI-{}", self.version)));
        }
        let n = crate::util::size::checked_numel(OP_READ, &dims)
            .map_err(|_| bad(OP_READ, name, format!("dims {dims:?} overflow")))?;
        let nbytes = n
            .checked_mul(dt.size())
            .ok_or_else(|| bad(OP_READ, name, format!("dims {dims:?} overflow")))?;
        let start = vo as usize;
        if start.checked_add(nbytes).is_none() {
            return Err(bad(OP_READ, name, format!("dims {dims:?} overflow")));
        }
        Ok(Layout {
            dims,
            datatype: dt,
            n,
            nbytes,
            start,
            affine,
            spacing,
        })
    }

    /// The scaling `stored · slope + inter` to apply, or None for the identity.
    pub(super) fn scaling(&self) -> Option<(f64, f64)> {
        if self.scl_slope.is_finite() && self.scl_slope != 0.0 {
            let inter = if self.scl_inter.is_finite() {
                self.scl_inter
            } else {
                0.0
            };
            (self.scl_slope != 1.0 || inter != 0.0).then_some((self.scl_slope, inter))
        } else {
            None
        }
    }
}
