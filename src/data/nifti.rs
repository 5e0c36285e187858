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

use super::nifti_sink::{F32Sink, TypedSink, VoxelSink};
use super::typed_volume::TypedVolume;
use super::volume::{spacing_of, Affine, Datatype, Volume};

pub use super::nifti_write::{
    affine_to_quaternion, encode_nifti, encode_typed_nifti, write_nifti, write_typed_nifti,
};
use crate::error::{Error, Result};
use std::io::Read;

pub(super) const OP_READ: &str = "read_nifti";

pub(super) fn bad(op: &'static str, path: &str, problem: impl Into<String>) -> Error {
    Error::BadFile {
        op,
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// The default bound on what reading one NIfTI (or NRRD) file may hold in memory: 2 GiB, for the
/// (decompressed) voxel bytes the header declares — all a typed read ([`read_nifti_typed`])
/// holds — and, for an f32 read ([`read_nifti`]), for the f32 volume they become too. The
/// environment variable [`MAX_BYTES_ENV`] overrides it (bytes); [`read_nifti_with_limit`] takes
/// it as an argument.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// The environment variable that sets the reading limit in bytes (e.g. `CADS_MAX_NIFTI_BYTES=8e9`
/// is not accepted; write `8000000000`).
pub const MAX_BYTES_ENV: &str = "CADS_MAX_NIFTI_BYTES";

/// The reading limit in bytes: [`MAX_BYTES_ENV`] when set to a whole number, else
/// [`DEFAULT_MAX_BYTES`].
pub fn max_bytes() -> u64 {
    std::env::var(MAX_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// Read a NIfTI-1 or NIfTI-2 file (`.nii` or gzip-compressed `.nii.gz`, detected by content),
/// holding at most [`max_bytes`] bytes.
pub fn read_nifti(path: impl AsRef<std::path::Path>) -> Result<Volume> {
    read_nifti_with_limit(path, max_bytes())
}

/// [`read_nifti`] with an explicit memory limit (bytes) instead of the environment's.
///
/// Decompression is bounded by the header: the header is inflated first, the size it declares
/// (`vox_offset` + voxels × bytes per voxel) is checked against `max_bytes`, and then exactly that
/// many bytes are inflated — never the rest of the stream. A 1 MB file that inflates to 1 GiB is
/// therefore refused (its header declares too much) or read in the size it declares (trailing
/// data is never inflated), and the voxels are converted to f32 as they are read, with no wider
/// intermediate copy (so the f32 volume must fit the limit too).
pub fn read_nifti_with_limit(path: impl AsRef<std::path::Path>, max_bytes: u64) -> Result<Volume> {
    read_with(path.as_ref(), max_bytes, F32Sink::default())
}

/// Read a NIfTI file in the datatype it stores, with its scaling, holding at most [`max_bytes`]
/// bytes (the declared voxel bytes: an int16 file needs 2 bytes per voxel, not the 4 of f32).
pub fn read_nifti_typed(path: impl AsRef<std::path::Path>) -> Result<TypedVolume> {
    read_nifti_typed_with_limit(path, max_bytes())
}

/// [`read_nifti_typed`] with an explicit memory limit (bytes).
pub fn read_nifti_typed_with_limit(
    path: impl AsRef<std::path::Path>,
    max_bytes: u64,
) -> Result<TypedVolume> {
    read_with(path.as_ref(), max_bytes, TypedSink::default())
}

fn read_with<S: VoxelSink>(p: &std::path::Path, max_bytes: u64, sink: S) -> Result<S::Out> {
    let name = p.display().to_string();
    let io = |source| Error::Io {
        op: OP_READ,
        path: name.clone(),
        source,
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(p).map_err(io)?);
    let magic = std::io::BufRead::fill_buf(&mut file).map_err(io)?;
    if magic.len() >= 2 && magic[0] == 0x1f && magic[1] == 0x8b {
        decode_stream(
            flate2::bufread::MultiGzDecoder::new(file),
            true,
            &name,
            max_bytes,
            sink,
        )
    } else {
        decode_stream(file, false, &name, max_bytes, sink)
    }
}

/// Decode NIfTI bytes (gzip or not); `name` is used in errors. Limit: [`max_bytes`].
pub fn decode_nifti(raw: &[u8], name: &str) -> Result<Volume> {
    decode_nifti_with_limit(raw, name, max_bytes())
}

/// [`decode_nifti`] with an explicit memory limit (bytes).
pub fn decode_nifti_with_limit(raw: &[u8], name: &str, max_bytes: u64) -> Result<Volume> {
    decode_raw(raw, name, max_bytes, F32Sink::default())
}

/// [`decode_nifti`] in the stored datatype (see [`read_nifti_typed`]).
pub fn decode_nifti_typed(raw: &[u8], name: &str) -> Result<TypedVolume> {
    decode_nifti_typed_with_limit(raw, name, max_bytes())
}

/// [`decode_nifti_typed`] with an explicit memory limit (bytes).
pub fn decode_nifti_typed_with_limit(
    raw: &[u8],
    name: &str,
    max_bytes: u64,
) -> Result<TypedVolume> {
    decode_raw(raw, name, max_bytes, TypedSink::default())
}

fn decode_raw<S: VoxelSink>(raw: &[u8], name: &str, max_bytes: u64, sink: S) -> Result<S::Out> {
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        decode_stream(
            flate2::read::MultiGzDecoder::new(raw),
            true,
            name,
            max_bytes,
            sink,
        )
    } else {
        decode_stream(raw, false, name, max_bytes, sink)
    }
}

/// Read up to `buf.len()` bytes, stopping early only at the end of the stream.
fn read_full(r: &mut impl Read, buf: &mut [u8], gz: bool, name: &str) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let what = if !gz {
                    format!("read error: {e}")
                } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "truncated gzip stream (the file ends before the compressed data does)".into()
                } else {
                    format!("corrupt gzip stream: {e}")
                };
                return Err(bad(OP_READ, name, what));
            }
        }
    }
    Ok(got)
}

/// Header first, then exactly the bytes it declares, handed to `sink` chunk by chunk.
fn decode_stream<S: VoxelSink>(
    mut r: impl Read,
    gz: bool,
    name: &str,
    max_bytes: u64,
    mut sink: S,
) -> Result<S::Out> {
    // 544 bytes: the largest header (NIfTI-2, 540) plus the 4-byte extension flag.
    let mut head = vec![0u8; 544];
    let got = read_full(&mut r, &mut head, gz, name)?;
    head.truncate(got);
    let header = Header::parse(&head, name)?;
    let layout = header.layout(name)?;
    let want = |what: &str, bytes: u64| {
        if bytes > max_bytes {
            return Err(bad(
                OP_READ,
                name,
                format!(
                    "{what} of {bytes} bytes (dims {:?}, {}) exceeds the reading limit of {max_bytes} bytes; set {MAX_BYTES_ENV} to raise it",
                    layout.dims, layout.datatype
                ),
            ));
        }
        Ok(())
    };
    let end = (layout.start as u64).saturating_add(layout.nbytes as u64);
    want("the declared image (offset + voxel data)", end)?;
    if let Some((what, bytes)) = sink.extra_bytes(&layout)? {
        want(what, bytes)?;
    }
    // Skip from the end of what was read to vox_offset (extensions), then read the voxels.
    let mut pos = head.len();
    if layout.start < pos {
        head.drain(..layout.start);
    } else {
        let skip = (layout.start - pos) as u64;
        let skipped = std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())
            .map_err(|e| bad(OP_READ, name, format!("read error: {e}")))?;
        pos += skipped as usize;
        head.clear();
        if pos < layout.start {
            return Err(truncated(&layout, pos, name));
        }
    }
    sink.reserve(&layout);
    let mut chunk = head;
    let mut done_bytes = 0usize;
    const CHUNK: usize = 1 << 20;
    while done_bytes < layout.nbytes {
        // `chunk` holds a whole number of voxels once topped up (CHUNK is a multiple of 8).
        let target = (layout.nbytes - done_bytes).min(CHUNK.max(chunk.len()));
        let have = chunk.len().min(target);
        chunk.truncate(have);
        chunk.resize(target, 0);
        let got = have + read_full(&mut r, &mut chunk[have..], gz, name)?;
        if got < target {
            return Err(truncated(&layout, layout.start + done_bytes + got, name));
        }
        sink.take(&chunk, &header, &layout, name)?;
        done_bytes += target;
        chunk.clear();
    }
    sink.finish(&header, layout)
}

fn truncated(layout: &Layout, got: usize, name: &str) -> Error {
    bad(
        OP_READ,
        name,
        format!(
            "data truncated or wrong vox_offset: {} bytes of {} {:?} from offset {} need {} bytes, the (decompressed) file has {got}",
            layout.nbytes,
            layout.datatype,
            layout.dims,
            layout.start,
            layout.start.saturating_add(layout.nbytes),
        ),
    )
}

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
    fn layout(&self, name: &str) -> Result<Layout> {
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
