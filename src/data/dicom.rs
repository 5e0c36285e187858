//! DICOM series reading: a folder of single-frame slices (CT, MR) into one [`Volume`] with a RAS+
//! affine, values rescaled to modality units (HU for CT).
//!
//! Parsing is dicom-rs (`dicom-object`); the geometry and pixel decoding are here.
//!
//! Geometry, in DICOM's patient frame (LPS: x → Left, y → Posterior, z → Superior, mm):
//! - `ImageOrientationPatient` = (r, c): r is the direction of increasing column index (along a
//!   row), c of increasing row index; the slice normal is `n = r × c`.
//! - `PixelSpacing` = (Δrow, Δcol): the distance between rows (along c), then between columns
//!   (along r).
//! - `ImagePositionPatient` P is the centre of the first pixel of a slice, so pixel (column i,
//!   row j) of slice k lies at `P_k + i·Δcol·r + j·Δrow·c`.
//! - Slices are sorted by `s_k = n · P_k` (their position along the normal), never by file name or
//!   instance number; the volume's k axis then runs along +n, and the step between slices is the
//!   mean gap `(P_last − P_0)/(N − 1)`, taken from positions, not from `SliceThickness`.
//! - The grid is only regular if every gap equals that step and every P_k − P_0 lies along n. A
//!   gap that is a whole multiple of the usual one is reported as missing slices, another uneven
//!   gap as non-uniform spacing, positions off the normal as a sheared grid (gantry tilt), two
//!   slices at one position as duplicates: all errors, never a silently wrong grid.
//! - LPS → RAS (NIfTI's frame): negate the first two rows, `A_RAS = diag(−1, −1, 1, 1) · A_LPS`.
//!
//! Values: the stored integer (BitsAllocated 8/16/32, the low BitsStored bits, two's complement
//! when PixelRepresentation = 1) times `RescaleSlope` plus `RescaleIntercept`, per slice.
//! Pixel data: native (implicit or explicit VR little endian, explicit big endian, deflated) is
//! decoded here; encapsulated RLE lossless and JPEG (baseline, extended, lossless) through
//! dicom-pixeldata's pure-Rust codecs; other codecs (JPEG 2000, JPEG-LS, …) get an error naming
//! the transfer syntax.

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::dicom_volume::assemble;
use super::volume::Volume;
use crate::error::{Error, Result};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use std::path::{Path, PathBuf};

const OP: &str = "read_dicom";

pub(super) fn bad(path: impl std::fmt::Display, problem: impl Into<String>) -> Error {
    Error::BadFile {
        op: OP,
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// One series found in a folder.
#[derive(Clone, Debug, PartialEq)]
pub struct DicomSeriesInfo {
    pub series_uid: String,
    pub modality: String,
    pub description: String,
    /// Number of files (slices) of the series.
    pub slices: usize,
}

impl std::fmt::Display for DicomSeriesInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {} slices{})",
            self.series_uid,
            if self.modality.is_empty() {
                "modality unstated"
            } else {
                &self.modality
            },
            self.slices,
            if self.description.is_empty() {
                String::new()
            } else {
                format!(", \"{}\"", self.description)
            }
        )
    }
}

/// Whether a file starts with the DICOM Part 10 preamble: 128 bytes, then "DICM".
fn has_dicm_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut b = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
        && &b[128..132] == b"DICM"
}

/// The candidate files of a folder, sorted by path (for stable messages only: slice order comes
/// from positions). Hidden files and DICOMDIR are skipped, and so is every file without the
/// Part 10 magic (notes, thumbnails), unless it is named like a DICOM file (`.dcm`): that one
/// stays so that a truncated slice is reported rather than dropped. A folder with no DICOM file
/// of its own (a patient or study export, `study/series/*.dcm`) is searched below, up to
/// [`MAX_DEPTH`] levels; its series are then picked by UID like those of one folder.
fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (mut out, subdirs) = files_in(dir)?;
    if out.is_empty() {
        let mut stack: Vec<(PathBuf, usize)> = subdirs.into_iter().map(|d| (d, 1)).collect();
        while let Some((d, depth)) = stack.pop() {
            let (files, subs) = files_in(&d)?;
            out.extend(files);
            if depth < MAX_DEPTH {
                stack.extend(subs.into_iter().map(|s| (s, depth + 1)));
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(bad(
            dir.display(),
            format!("no DICOM files in this folder or the folders below it (up to {MAX_DEPTH} levels): none named *.dcm or starting with the DICM preamble"),
        ));
    }
    Ok(out)
}

/// How deep [`dicom_files`] looks below a folder without DICOM files of its own.
const MAX_DEPTH: usize = 4;

/// The DICOM candidates directly in `dir`, and its visible subfolders.
fn files_in(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let io = |source| Error::Io {
        op: OP,
        path: dir.display().to_string(),
        source,
    };
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        let fname = p
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        if fname.starts_with('.') || fname.eq_ignore_ascii_case("DICOMDIR") {
            continue;
        }
        if p.is_dir() {
            dirs.push(p);
        } else if p.is_file()
            && (fname.to_ascii_lowercase().ends_with(".dcm") || has_dicm_magic(&p))
        {
            files.push(p);
        }
    }
    Ok((files, dirs))
}

pub(super) fn open(path: &Path, header_only: bool) -> Result<DefaultDicomObject> {
    let opts = OpenFileOptions::new();
    let opts = if header_only {
        opts.read_until(tags::PIXEL_DATA)
    } else {
        opts
    };
    opts.open_file(path).map_err(|e| {
        bad(
            path.display(),
            format!("not a readable DICOM file (truncated or corrupt?): {e}"),
        )
    })
}

fn get_str(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let s = e.to_str().ok()?;
    Some(
        s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string(),
    )
}

fn get_f64s(obj: &DefaultDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok().flatten()?;
    e.to_multi_float64().ok().filter(|v| !v.is_empty())
}

fn get_f64(obj: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    get_f64s(obj, tag).and_then(|v| v.first().copied())
}

fn get_int(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    let e = obj.element_opt(tag).ok().flatten()?;
    e.to_int::<i64>().ok()
}

/// The header fields of one slice that the volume needs.
#[derive(Clone, Debug)]
pub(super) struct Slice {
    pub(super) path: PathBuf,
    pub(super) series_uid: String,
    pub(super) modality: String,
    pub(super) description: String,
    pub(super) instance: Option<i64>,
    pub(super) position: [f64; 3],
    pub(super) orientation: [f64; 6],
    pub(super) pixel_spacing: [f64; 2],
    pub(super) rows: usize,
    pub(super) columns: usize,
    pub(super) bits_allocated: usize,
    pub(super) bits_stored: usize,
    pub(super) signed: bool,
    pub(super) slope: f64,
    pub(super) intercept: f64,
    pub(super) tilt_deg: Option<f64>,
    pub(super) thickness: Option<f64>,
    pub(super) spacing_between: Option<f64>,
    pub(super) transfer_syntax: String,
}

impl Slice {
    pub(super) fn name(&self) -> String {
        let f = self.path.display();
        match self.instance {
            Some(i) => format!("{f} (instance {i})"),
            None => f.to_string(),
        }
    }
}

fn slice_header(path: &Path) -> Result<Slice> {
    let obj = open(path, true)?;
    let name = path.display();
    let need = |tag: Tag, what: &str| bad(&name, format!("missing or unreadable {what} {tag}"));
    let series_uid = get_str(&obj, tags::SERIES_INSTANCE_UID)
        .ok_or_else(|| need(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID"))?;
    let vec_n = |tag: Tag, what: &str, n: usize| -> Result<Vec<f64>> {
        let v = get_f64s(&obj, tag).ok_or_else(|| need(tag, what))?;
        if v.len() != n || v.iter().any(|x| !x.is_finite()) {
            return Err(bad(
                &name,
                format!("{what} {tag}: expected {n} finite numbers, got {v:?}"),
            ));
        }
        Ok(v)
    };
    let p = vec_n(
        tags::IMAGE_POSITION_PATIENT,
        "ImagePositionPatient (a slice without a position cannot be placed)",
        3,
    )?;
    let o = vec_n(
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient",
        6,
    )?;
    let ps = vec_n(tags::PIXEL_SPACING, "PixelSpacing", 2)?;
    if ps.iter().any(|&v| v <= 0.0) {
        return Err(bad(&name, format!("PixelSpacing {ps:?}: must be positive")));
    }
    let uint = |tag: Tag, what: &str| -> Result<usize> {
        let v = get_int(&obj, tag).ok_or_else(|| need(tag, what))?;
        usize::try_from(v).map_err(|_| bad(&name, format!("{what} {tag} = {v}: must be ≥ 0")))
    };
    let rows = uint(tags::ROWS, "Rows")?;
    let columns = uint(tags::COLUMNS, "Columns")?;
    let bits_allocated = uint(tags::BITS_ALLOCATED, "BitsAllocated")?;
    let bits_stored = match get_int(&obj, tags::BITS_STORED) {
        Some(b) => usize::try_from(b).unwrap_or(0),
        None => bits_allocated,
    };
    let pixel_rep = get_int(&obj, tags::PIXEL_REPRESENTATION).unwrap_or(0);
    let samples = get_int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let frames = get_int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    if samples != 1 {
        return Err(bad(
            &name,
            format!("SamplesPerPixel {samples}: only single-channel (grey-scale) images make a CT volume"),
        ));
    }
    if frames != 1 {
        return Err(bad(
            &name,
            format!("NumberOfFrames {frames}: multi-frame (enhanced) DICOM is not supported; only series of single-frame slices"),
        ));
    }
    if rows == 0 || columns == 0 {
        return Err(bad(
            &name,
            format!("empty image: Rows {rows}, Columns {columns}"),
        ));
    }
    if ![8, 16, 32].contains(&bits_allocated) || bits_stored == 0 || bits_stored > bits_allocated {
        return Err(bad(
            &name,
            format!("BitsAllocated {bits_allocated}, BitsStored {bits_stored}: expected 8, 16 or 32 bits allocated and 1..=BitsAllocated stored"),
        ));
    }
    let slope = get_f64(&obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = get_f64(&obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    if !(slope.is_finite() && slope != 0.0 && intercept.is_finite()) {
        return Err(bad(
            &name,
            format!("RescaleSlope {slope}, RescaleIntercept {intercept}: expected a finite non-zero slope and a finite intercept"),
        ));
    }
    Ok(Slice {
        path: path.to_path_buf(),
        series_uid,
        modality: get_str(&obj, tags::MODALITY).unwrap_or_default(),
        description: get_str(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        instance: get_int(&obj, tags::INSTANCE_NUMBER),
        position: [p[0], p[1], p[2]],
        orientation: [o[0], o[1], o[2], o[3], o[4], o[5]],
        pixel_spacing: [ps[0], ps[1]],
        rows,
        columns,
        bits_allocated,
        bits_stored,
        signed: pixel_rep == 1,
        slope,
        intercept,
        tilt_deg: get_f64(&obj, tags::GANTRY_DETECTOR_TILT),
        thickness: get_f64(&obj, tags::SLICE_THICKNESS),
        spacing_between: get_f64(&obj, tags::SPACING_BETWEEN_SLICES),
        transfer_syntax: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches(['\0', ' '])
            .to_string(),
    })
}

/// The series in a folder (one entry per SeriesInstanceUID, sorted by UID).
pub fn list_dicom_series(dir: impl AsRef<Path>) -> Result<Vec<DicomSeriesInfo>> {
    let files = dicom_files(dir.as_ref())?;
    let slices = files
        .iter()
        .map(|f| slice_header(f))
        .collect::<Result<Vec<_>>>()?;
    Ok(series_of(&slices))
}

fn series_of(slices: &[Slice]) -> Vec<DicomSeriesInfo> {
    let mut out: Vec<DicomSeriesInfo> = Vec::new();
    for s in slices {
        match out.iter_mut().find(|i| i.series_uid == s.series_uid) {
            Some(i) => i.slices += 1,
            None => out.push(DicomSeriesInfo {
                series_uid: s.series_uid.clone(),
                modality: s.modality.clone(),
                description: s.description.clone(),
                slices: 1,
            }),
        }
    }
    out.sort_by(|a, b| a.series_uid.cmp(&b.series_uid));
    out
}

/// Read a DICOM series into a volume. `path` is a folder, or one file of the series (then the
/// series that file belongs to is read from its folder). `series_uid` picks one series of a
/// folder holding several; without it such a folder is an error that lists them.
pub fn read_dicom_series(path: impl AsRef<Path>, series_uid: Option<&str>) -> Result<Volume> {
    let path = path.as_ref();
    let (dir, wanted) = if path.is_dir() {
        (path.to_path_buf(), series_uid.map(str::to_string))
    } else if path.is_file() {
        let own = slice_header(path)?.series_uid;
        if let Some(u) = series_uid.filter(|u| *u != own) {
            return Err(bad(
                path.display(),
                format!("series {u} was asked for, but this file belongs to series {own}"),
            ));
        }
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            Some(own),
        )
    } else {
        return Err(Error::Io {
            op: OP,
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file or folder (expected a DICOM series folder or one of its files)",
            ),
        });
    };
    let files = dicom_files(&dir)?;
    let all = files
        .iter()
        .map(|f| slice_header(f))
        .collect::<Result<Vec<_>>>()?;
    let series = series_of(&all);
    let list = || {
        series
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let uid = match wanted {
        Some(u) => {
            if !series.iter().any(|s| s.series_uid == u) {
                return Err(bad(
                    dir.display(),
                    format!("no series {u} in this folder; it holds:\n{}", list()),
                ));
            }
            u
        }
        None if series.len() == 1 => series[0].series_uid.clone(),
        None => {
            return Err(bad(
                dir.display(),
                format!(
                "{} series in this folder; pick one by SeriesInstanceUID (cads: --series UID):\n{}",
                series.len(),
                list()
            ),
            ))
        }
    };
    let slices: Vec<Slice> = all.into_iter().filter(|s| s.series_uid == uid).collect();
    assemble(slices, &dir.display().to_string())
}
