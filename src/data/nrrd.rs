//! NRRD reading (`.nrrd` with attached data, `.nhdr` with a detached data file): raw, gzip and
//! ascii encodings, either byte order, int8 … float64, into the same [`Volume`] (RAS+ affine) the
//! NIfTI reader returns.
//!
//! Geometry. NRRD gives, per voxel axis a, the vector `space directions[a]` (the step in world mm
//! from voxel a to a+1) and `space origin` (the world position of voxel (0, 0, 0)), in the frame
//! named by `space`. So in that frame `p = origin + Σ_a idx_a · dir_a`, i.e. the 3×3 part of the
//! affine has the directions as **columns**. NIfTI's frame is RAS (x → Right, y → Anterior,
//! z → Superior); a frame whose letter on world axis w is the opposite one (L, P or I) has that
//! row negated: `A_RAS = diag(s) · A_space`, e.g. `s = (−1, −1, 1)` for left-posterior-superior
//! (LPS, what ITK, DICOM and most CT NRRDs use).
//!
//! Without `space directions`, `spacings` gives a diagonal affine with zero origin (and 1 mm when
//! both are absent), as teem does. A header with `space dimension` but no `space` is taken as LPS,
//! ITK's convention for such files.
//!
//! Size. The data must hold exactly `sizes[0]·sizes[1]·sizes[2]·sizeof(type)` bytes after
//! `byte skip`: a header that lies about its size (data shorter or longer) is an error, and gzip
//! decompression stops one byte past the declared size, so a lying header cannot make the reader
//! inflate an unbounded stream. (`byte skip: -1`, teem's "the data is the last bytes of the file",
//! is honoured for raw data.)

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::nrrd_header::{nrrd_affine, parse_header};
use super::typed_volume::{TypedVolume, Voxels};
use super::volume::{Affine, Datatype, Volume};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

const OP: &str = "read_nrrd";

pub(super) fn bad(path: &str, problem: impl Into<String>) -> Error {
    Error::BadFile {
        op: OP,
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// Element types NRRD files store, each kept as the same [`Datatype`] by the typed reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NrrdType {
    Int8,
    Uint8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Float32,
    Float64,
}

impl NrrdType {
    /// The NRRD type names (teem's `airEnum` for `nrrdType`, with all its synonyms).
    fn parse(s: &str) -> Option<NrrdType> {
        Some(match s.trim() {
            "signed char" | "int8" | "int8_t" => NrrdType::Int8,
            "uchar" | "unsigned char" | "uint8" | "uint8_t" => NrrdType::Uint8,
            "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
                NrrdType::Int16
            }
            "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => {
                NrrdType::Uint16
            }
            "int" | "signed int" | "int32" | "int32_t" => NrrdType::Int32,
            "uint" | "unsigned int" | "uint32" | "uint32_t" => NrrdType::Uint32,
            "float" => NrrdType::Float32,
            "double" => NrrdType::Float64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            NrrdType::Int8 | NrrdType::Uint8 => 1,
            NrrdType::Int16 | NrrdType::Uint16 => 2,
            NrrdType::Int32 | NrrdType::Uint32 | NrrdType::Float32 => 4,
            NrrdType::Float64 => 8,
        }
    }

    fn datatype(self) -> Datatype {
        match self {
            NrrdType::Int8 => Datatype::Int8,
            NrrdType::Uint8 => Datatype::Uint8,
            NrrdType::Int16 => Datatype::Int16,
            NrrdType::Uint16 => Datatype::Uint16,
            NrrdType::Int32 => Datatype::Int32,
            NrrdType::Uint32 => Datatype::Uint32,
            NrrdType::Float32 => Datatype::Float32,
            NrrdType::Float64 => Datatype::Float64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Raw,
    Gzip,
    Ascii,
}

/// Read a NRRD volume: `.nrrd` with attached data or a `.nhdr` header naming its data file.
pub fn read_nrrd(path: impl AsRef<Path>) -> Result<Volume> {
    let p = path.as_ref();
    read_nrrd_typed(p)?
        .into_f32_volume()
        .map_err(|e| e.in_file(OP, p.display()))
}

/// [`read_nrrd`] in the datatype the file stores (no conversion).
pub fn read_nrrd_typed(path: impl AsRef<Path>) -> Result<TypedVolume> {
    let p = path.as_ref();
    let name = p.display().to_string();
    let bytes = std::fs::read(p).map_err(|source| Error::Io {
        op: OP,
        path: name.clone(),
        source,
    })?;
    decode_nrrd_typed(&bytes, &name, p.parent())
}

/// Decode NRRD bytes; `dir` is where a detached data file is looked up (the header's folder).
pub fn decode_nrrd(bytes: &[u8], name: &str, dir: Option<&Path>) -> Result<Volume> {
    decode_nrrd_typed(bytes, name, dir)?
        .into_f32_volume()
        .map_err(|e| e.in_file(OP, name))
}

/// [`decode_nrrd`] in the datatype the file stores (no conversion).
pub fn decode_nrrd_typed(bytes: &[u8], name: &str, dir: Option<&Path>) -> Result<TypedVolume> {
    let h = parse_header(bytes, name)?;
    let field = |k: &str| {
        h.get(k)
            .ok_or_else(|| bad(name, format!("missing required field \"{k}\"")))
    };

    let dimension: usize = field("dimension")?.parse().map_err(|_| {
        bad(
            name,
            format!("dimension {:?} is not a whole number", h.get("dimension")),
        )
    })?;
    let sizes: Vec<usize> = field("sizes")?
        .split_whitespace()
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            bad(
                name,
                format!("sizes {:?} are not whole numbers", h.get("sizes")),
            )
        })?;
    if sizes.len() != dimension {
        return Err(bad(
            name,
            format!(
                "sizes {sizes:?} has {} entries, dimension is {dimension}",
                sizes.len()
            ),
        ));
    }
    if dimension != 3 {
        return Err(bad(
            name,
            format!("dimension {dimension} (sizes {sizes:?}) is not supported; only single 3-D scalar volumes are"),
        ));
    }
    if let Some(a) = sizes.iter().position(|&s| s == 0) {
        return Err(bad(
            name,
            format!("zero size along axis {a}: sizes {sizes:?}"),
        ));
    }
    if let Some(kinds) = h.get("kinds") {
        let spatial = ["domain", "space", "???", "none"];
        for (a, k) in kinds.split_whitespace().enumerate() {
            if !spatial.contains(&k) {
                return Err(bad(
                    name,
                    format!("axis {a} has kind {k:?} (kinds {kinds:?}): only scalar volumes with three domain/space axes are supported"),
                ));
            }
        }
    }
    let ty_s = field("type")?;
    let ty = NrrdType::parse(ty_s).ok_or_else(|| {
        bad(
            name,
            format!("type {ty_s:?} is not supported; supported: int8, uint8, int16, uint16, int32, uint32, float, double"),
        )
    })?;
    let enc_s = field("encoding")?;
    let encoding = match enc_s {
        "raw" => Encoding::Raw,
        "gzip" | "gz" => Encoding::Gzip,
        "ascii" | "text" | "txt" => Encoding::Ascii,
        other => {
            return Err(bad(
                name,
                format!("encoding {other:?} is not supported; supported: raw, gzip, ascii"),
            ))
        }
    };
    let big = match h.get("endian") {
        Some("little") => false,
        Some("big") => true,
        None if ty.size() == 1 || encoding == Encoding::Ascii => false,
        None => {
            return Err(bad(
                name,
                format!("missing field \"endian\" (required for {ty_s} data in {enc_s} encoding)"),
            ))
        }
        Some(other) => {
            return Err(bad(
                name,
                format!("endian {other:?}, expected little or big"),
            ))
        }
    };
    let dims = [sizes[0], sizes[1], sizes[2]];
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(name, format!("sizes {dims:?} overflow")))?;
    let nbytes = n
        .checked_mul(ty.size())
        .ok_or_else(|| bad(name, format!("sizes {dims:?} overflow")))?;
    // The same bound as NIfTI's, on the voxels the header declares (what the typed volume holds),
    // checked before any data is read or inflated.
    let limit = super::nifti::max_bytes();
    if nbytes as u64 > limit {
        return Err(bad(
            name,
            format!(
                "the declared voxel data of {nbytes} bytes (sizes {dims:?}, {ty_s}) exceeds the reading limit of {limit} bytes; set {} to raise it",
                super::nifti::MAX_BYTES_ENV
            ),
        ));
    }

    let affine = nrrd_affine(&h, name)?;

    // The data bytes: attached after the header, or in the detached file.
    let detached = h.get("data file").or_else(|| h.get("datafile"));
    let (data_bytes, data_name): (std::borrow::Cow<[u8]>, String) = match detached {
        None => {
            if h.data_offset >= bytes.len() && n > 0 {
                return Err(bad(
                    name,
                    "no data: the header has no \"data file\" field and no data follows it (a .nhdr needs \"data file: NAME\")",
                ));
            }
            (
                std::borrow::Cow::Borrowed(&bytes[h.data_offset..]),
                name.to_string(),
            )
        }
        Some(f) => {
            if f.starts_with("LIST") || f.split_whitespace().count() > 1 {
                return Err(bad(
                    name,
                    format!("data file {f:?}: only a single detached data file is supported"),
                ));
            }
            let fp = Path::new(f);
            let full: PathBuf = if fp.is_absolute() {
                fp.to_path_buf()
            } else {
                dir.unwrap_or(Path::new(".")).join(fp)
            };
            let dn = full.display().to_string();
            let b = std::fs::read(&full).map_err(|source| Error::Io {
                op: OP,
                path: format!("{dn} (the data file named by {name})"),
                source,
            })?;
            // `line skip`: lines of the data file before the data (detached files only).
            let lines: usize = match h.get("line skip").or_else(|| h.get("lineskip")) {
                None => 0,
                Some(s) => s.parse().map_err(|_| {
                    bad(
                        name,
                        format!("line skip {s:?} is not a non-negative whole number"),
                    )
                })?,
            };
            let mut start = 0usize;
            for _ in 0..lines {
                let nl = b[start..].iter().position(|&c| c == b'\n').ok_or_else(|| {
                    bad(
                        &dn,
                        format!("line skip {lines}: the data file has fewer lines"),
                    )
                })?;
                start += nl + 1;
            }
            (std::borrow::Cow::Owned(b[start..].to_vec()), dn)
        }
    };
    let skip: i64 = match h.get("byte skip").or_else(|| h.get("byteskip")) {
        None => 0,
        Some(s) => s.parse().ok().filter(|&v: &i64| v >= -1).ok_or_else(|| {
            bad(
                name,
                format!("byte skip {s:?}, expected -1 or a non-negative whole number"),
            )
        })?,
    };

    let payload: Vec<u8> = match encoding {
        Encoding::Raw => {
            let d: &[u8] = &data_bytes;
            let body = if skip == -1 {
                // teem: the data is the last nbytes of the file.
                if d.len() < nbytes {
                    return Err(bad(
                        &data_name,
                        format!(
                            "data too short: sizes {dims:?} of {ty_s} need {nbytes} bytes, the data has {}",
                            d.len()
                        ),
                    ));
                }
                &d[d.len() - nbytes..]
            } else {
                let s = skip as usize;
                if s > d.len() {
                    return Err(bad(
                        &data_name,
                        format!(
                            "byte skip {s} is past the end of the data ({} bytes)",
                            d.len()
                        ),
                    ));
                }
                &d[s..]
            };
            check_len(body.len(), nbytes, dims, ty_s, &data_name, "")?;
            body.to_vec()
        }
        Encoding::Gzip => {
            if skip < 0 {
                return Err(bad(name, "byte skip -1 is only defined for raw encoding"));
            }
            let s = skip as usize;
            // Inflate at most skip + nbytes + 1 bytes: one byte past the declared size is enough
            // to tell that the header lies, and a lying header cannot make us inflate a bomb.
            let want = s
                .checked_add(nbytes)
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| bad(name, format!("sizes {dims:?} overflow")))?;
            // Grow from a modest start: a tiny file declaring a huge size must not reserve it.
            let mut out = Vec::with_capacity(want.min(64 << 20));
            flate2::read::MultiGzDecoder::new(&data_bytes[..])
                .take(want as u64)
                .read_to_end(&mut out)
                .map_err(|e| {
                    let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "truncated gzip stream (the data ends before the compressed stream does)"
                            .to_string()
                    } else {
                        format!("corrupt gzip stream: {e}")
                    };
                    bad(&data_name, what)
                })?;
            if out.len() < s {
                return Err(bad(
                    &data_name,
                    format!(
                        "byte skip {s} is past the end of the decompressed data ({} bytes)",
                        out.len()
                    ),
                ));
            }
            check_len(
                out.len() - s,
                nbytes,
                dims,
                ty_s,
                &data_name,
                " decompressed",
            )?;
            out.drain(..s);
            out
        }
        Encoding::Ascii => {
            let text = std::str::from_utf8(&data_bytes)
                .map_err(|_| bad(&data_name, "ascii encoding but the data is not text"))?;
            let mut vals = Voxels::with_capacity(ty.datatype(), n);
            for tok in text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
            {
                if vals.len() == n {
                    return Err(bad(
                        &data_name,
                        format!(
                            "data too long: sizes {dims:?} declare {n} values, the text has more"
                        ),
                    ));
                }
                let v: f64 = tok
                    .parse()
                    .map_err(|_| bad(&data_name, format!("ascii value {tok:?} is not a number")))?;
                // Floats take the nearest value; integer types only whole values in range.
                let pushed = match &mut vals {
                    Voxels::F32(f) => {
                        f.push(v as f32);
                        true
                    }
                    other => other.push_exact(v),
                };
                if !pushed {
                    return Err(bad(
                        &data_name,
                        format!("ascii value {tok:?} is not a {ty_s} value"),
                    ));
                }
            }
            if vals.len() != n {
                return Err(bad(
                    &data_name,
                    format!(
                        "data too short: sizes {dims:?} declare {n} values, the text has {}",
                        vals.len()
                    ),
                ));
            }
            return finish(vals, dims, affine, name);
        }
    };
    let mut voxels = Voxels::with_capacity(ty.datatype(), n);
    voxels.extend_from_bytes(&payload, big);
    drop(payload);
    finish(voxels, dims, affine, name)
}

fn check_len(
    got: usize,
    want: usize,
    dims: [usize; 3],
    ty: &str,
    name: &str,
    what: &str,
) -> Result<()> {
    if got != want {
        let kind = if got < want { "too short" } else { "too long" };
        let has = if got > want {
            format!("more than {want}")
        } else {
            got.to_string()
        };
        return Err(bad(
            name,
            format!(
                "data {kind}: sizes {dims:?} of {ty} need exactly {want} bytes, the{what} data has {has} \
                 (the header does not describe this data)"
            ),
        ));
    }
    Ok(())
}

fn finish(voxels: Voxels, dims: [usize; 3], affine: Affine, name: &str) -> Result<TypedVolume> {
    let (mut count, mut first) = (0usize, None);
    let mut index = 0usize;
    voxels.for_each_stored(|v| {
        if !v.is_finite() {
            count += 1;
            first.get_or_insert(index);
        }
        index += 1;
    });
    if let Some(first) = first {
        return Err(bad(
            name,
            format!("{count} NaN/Inf voxels (first at flat voxel {first})"),
        ));
    }
    TypedVolume::new(voxels, dims, affine, None).map_err(|e| e.in_file(OP, name))
}
