//! NIfTI-1 and NIfTI-2 reading (`.nii`, `.nii.gz`, either byte order) and NIfTI-1 writing.
//!
//! The header is parsed by hand (src/data/nifti_header.rs, not with the `nifti` crate) so that
//! every malformed field gets its own error naming the file and the problem, and so NIfTI-2 is
//! covered.
//!
//! Affine, in the standard's order of preference:
//! 1. `sform_code > 0`: the rows `srow_x, srow_y, srow_z`.
//! 2. `qform_code > 0`: `R(b, c, d) · diag(dx, dy, qfac·dz)` plus `(qoffset_x, y, z)`, where
//!    `a = √(1 − b² − c² − d²)` and `qfac = pixdim[0]` (−1 flips the third axis; 0 counts as 1).
//! 3. neither: `diag(dx, dy, dz)` with zero offset (the standard's "method 1").
//!
//! Values: `stored · scl_slope + scl_inter` when `scl_slope` is finite and non-zero.

pub(super) use super::nifti_header::{Header, Layout};
use super::nifti_sink::{F32Sink, TypedSink, VoxelSink};
use super::typed_volume::TypedVolume;
use super::volume::Volume;

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
