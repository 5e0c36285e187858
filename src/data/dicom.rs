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

use super::volume::{Affine, Datatype, Volume, IDENTITY};
use crate::error::{Error, Result};
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use std::path::{Path, PathBuf};

const OP: &str = "read_dicom";

fn bad(path: impl std::fmt::Display, problem: impl Into<String>) -> Error {
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

/// The candidate files of a folder, sorted by name (for stable messages only: slice order comes
/// from positions). Hidden files and DICOMDIR are skipped, and so is every file without the
/// Part 10 magic (notes, thumbnails), unless it is named like a DICOM file (`.dcm`): that one
/// stays so that a truncated slice is reported rather than dropped.
fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        op: OP,
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        if !p.is_file() {
            continue;
        }
        let fname = p
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        if fname.starts_with('.') || fname.eq_ignore_ascii_case("DICOMDIR") {
            continue;
        }
        let named_dicom = fname.to_ascii_lowercase().ends_with(".dcm");
        if named_dicom || has_dicm_magic(&p) {
            out.push(p);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(bad(
            dir.display(),
            "no DICOM files in this folder (none named *.dcm or starting with the DICM preamble)",
        ));
    }
    Ok(out)
}

fn open(path: &Path, header_only: bool) -> Result<DefaultDicomObject> {
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
struct Slice {
    path: PathBuf,
    series_uid: String,
    modality: String,
    description: String,
    instance: Option<i64>,
    position: [f64; 3],
    orientation: [f64; 6],
    pixel_spacing: [f64; 2],
    rows: usize,
    columns: usize,
    bits_allocated: usize,
    bits_stored: usize,
    signed: bool,
    slope: f64,
    intercept: f64,
    tilt_deg: Option<f64>,
    thickness: Option<f64>,
    spacing_between: Option<f64>,
    transfer_syntax: String,
}

impl Slice {
    fn name(&self) -> String {
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

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Check the slices form one regular grid, then decode them into a volume.
fn assemble(mut slices: Vec<Slice>, dir: &str) -> Result<Volume> {
    let first = slices[0].clone();
    // Every slice must share orientation, pixel grid and pixel format.
    for s in &slices[1..] {
        let same_orient = (0..6).all(|i| (s.orientation[i] - first.orientation[i]).abs() <= 1e-4);
        let same_spacing = (0..2).all(|i| {
            (s.pixel_spacing[i] - first.pixel_spacing[i]).abs() <= 1e-4 * first.pixel_spacing[i]
        });
        if !same_orient || !same_spacing || s.rows != first.rows || s.columns != first.columns {
            return Err(bad(
                dir,
                format!(
                    "slices of series {} disagree: {} has orientation {:?}, pixel spacing {:?}, {}×{} pixels; {} has {:?}, {:?}, {}×{} (several stacks in one series are not one volume)",
                    first.series_uid, first.name(), first.orientation, first.pixel_spacing, first.rows, first.columns,
                    s.name(), s.orientation, s.pixel_spacing, s.rows, s.columns
                ),
            ));
        }
    }
    let o = first.orientation;
    let r = [o[0], o[1], o[2]];
    let c = [o[3], o[4], o[5]];
    if (norm(r) - 1.0).abs() > 1e-3 || (norm(c) - 1.0).abs() > 1e-3 || dot(r, c).abs() > 1e-3 {
        return Err(bad(
            first.path.display(),
            format!("ImageOrientationPatient {o:?}: the row and column directions must be orthogonal unit vectors"),
        ));
    }
    let (rn, cn) = (norm(r), norm(c));
    let r = [r[0] / rn, r[1] / rn, r[2] / rn];
    let c = [c[0] / cn, c[1] / cn, c[2] / cn];
    let n = cross(r, c);

    // Sort along the normal: s_k = n · P_k.
    slices.sort_by(|a, b| dot(n, a.position).total_cmp(&dot(n, b.position)));
    let s: Vec<f64> = slices.iter().map(|x| dot(n, x.position)).collect();
    let count = slices.len();

    // Positions off the normal: the slices are sheared (gantry tilt), not stacked.
    let p0 = slices[0].position;
    for x in &slices[1..] {
        let d = sub(x.position, p0);
        let along = dot(d, n);
        let off = norm(sub(d, [along * n[0], along * n[1], along * n[2]]));
        if off > 0.01 + 1e-3 * norm(d) {
            let angle = off.atan2(along.abs()).to_degrees();
            let tag = match first.tilt_deg {
                Some(t) if t != 0.0 => format!("; GantryDetectorTilt says {t}°"),
                _ => String::new(),
            };
            return Err(bad(
                dir,
                format!(
                    "slice positions do not lie along the slice normal: {} is {off:.3} mm off it, {along:.3} mm along it (a sheared grid, gantry tilt ≈ {angle:.2}°{tag}); tilted series need resampling, which cads does not do",
                    x.name()
                ),
            ));
        }
    }

    // Gaps between neighbours along the normal.
    let step_vec: [f64; 3] = if count > 1 {
        let gaps: Vec<f64> = s.windows(2).map(|w| w[1] - w[0]).collect();
        if let Some(k) = gaps.iter().position(|&g| g < 1e-3) {
            return Err(bad(
                dir,
                format!(
                    "two slices at the same position ({:.3} mm along the normal): {} and {} (duplicates, or several acquisitions in one series)",
                    s[k],
                    slices[k].name(),
                    slices[k + 1].name()
                ),
            ));
        }
        let mut sorted = gaps.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted[sorted.len() / 2];
        let tol = 1e-3 + 1e-2 * median;
        for (k, &g) in gaps.iter().enumerate() {
            if (g - median).abs() <= tol {
                continue;
            }
            let ratio = (g / median).round();
            let between = format!(
                "between {} at {:.3} mm and {} at {:.3} mm",
                slices[k].name(),
                s[k],
                slices[k + 1].name(),
                s[k + 1]
            );
            let problem = if ratio >= 2.0 && (g - ratio * median).abs() <= tol * ratio {
                format!(
                    "{} missing slice(s) {between}: gap {g:.3} mm where the series' slice spacing is {median:.3} mm",
                    ratio as usize - 1
                )
            } else {
                format!(
                    "non-uniform slice spacing: gap {g:.3} mm {between}, where most gaps are {median:.3} mm (smallest {:.3}, largest {:.3})",
                    sorted[0],
                    sorted[sorted.len() - 1]
                )
            };
            return Err(bad(dir, problem));
        }
        let last = slices[count - 1].position;
        let m = (count - 1) as f64;
        [
            (last[0] - p0[0]) / m,
            (last[1] - p0[1]) / m,
            (last[2] - p0[2]) / m,
        ]
    } else {
        // One slice: the slab thickness is the best spacing there is.
        let t = first
            .spacing_between
            .filter(|v| v.is_finite() && *v > 0.0)
            .or(first.thickness.filter(|v| v.is_finite() && *v > 0.0))
            .unwrap_or(1.0);
        [t * n[0], t * n[1], t * n[2]]
    };

    // A_LPS columns: i → Δcol·r, j → Δrow·c, k → step; origin P_0. Then LPS → RAS.
    let (drow, dcol) = (first.pixel_spacing[0], first.pixel_spacing[1]);
    let mut a: Affine = IDENTITY;
    for w in 0..3 {
        let sign = if w < 2 { -1.0 } else { 1.0 };
        // `+ 0.0` turns the −0.0 of a negated zero into 0.0 (printed affines stay clean).
        a[w][0] = sign * dcol * r[w] + 0.0;
        a[w][1] = sign * drow * c[w] + 0.0;
        a[w][2] = sign * step_vec[w] + 0.0;
        a[w][3] = sign * p0[w] + 0.0;
    }

    let plane = first
        .rows
        .checked_mul(first.columns)
        .ok_or_else(|| bad(dir, "Rows × Columns overflows"))?;
    let total = plane
        .checked_mul(count)
        .ok_or_else(|| bad(dir, "Rows × Columns × slices overflows"))?;
    let mut data = Vec::with_capacity(total);
    for x in &slices {
        decode_slice(x, plane, &mut data)?;
    }
    let integral = data
        .iter()
        .all(|&v| v.fract() == 0.0 && (-32768.0..=32767.0).contains(&v));
    let datatype = if integral {
        Datatype::Int16
    } else {
        Datatype::Float32
    };
    Volume::new(data, [first.columns, first.rows, count], a, datatype)
}

/// Decode the pixels of one slice (row-major: column index fastest, as the volume's i axis) into
/// rescaled values appended to `out`.
fn decode_slice(x: &Slice, plane: usize, out: &mut Vec<f32>) -> Result<()> {
    let name = x.name();
    let obj = open(&x.path, false)?;
    let elem = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| bad(&name, "no PixelData (7FE0,0010): truncated file?"))?;
    // Little-endian bytes of the pixel data, whatever VR the parser gave it (it already decoded the
    // file's byte order into native values).
    let bytes: Vec<u8> = match elem.value() {
        Value::Primitive(PrimitiveValue::U8(v)) => v.to_vec(),
        Value::Primitive(PrimitiveValue::U16(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        Value::Primitive(PrimitiveValue::I16(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        Value::Primitive(PrimitiveValue::U32(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        Value::Primitive(PrimitiveValue::I32(v)) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        // Encapsulated (compressed) pixel data: dicom-pixeldata's pure-Rust codecs (RLE lossless,
        // JPEG baseline/extended/lossless) turn it into the same little-endian samples.
        Value::PixelSequence(_) => {
            use dicom_pixeldata::PixelDecoder;
            let decoded = obj.decode_pixel_data().map_err(|e| {
                bad(
                    &name,
                    format!(
                        "cannot decode the compressed pixel data of transfer syntax {}: {e} (cads decodes RLE lossless and JPEG baseline/extended/lossless; decompress other syntaxes first, e.g. gdcmconv --raw)",
                        x.transfer_syntax
                    ),
                )
            })?;
            decoded.data().to_vec()
        }
        _ => {
            return Err(bad(
                &name,
                "PixelData is not an array of 8/16/32-bit integers (float or sequence pixel data is not supported)",
            ))
        }
    };
    let bpp = x.bits_allocated / 8;
    let want = plane * bpp;
    // An odd byte count is padded to even length, so one extra byte is allowed.
    if bytes.len() < want || bytes.len() > want + (want % 2) {
        return Err(bad(
            &name,
            format!(
                "PixelData has {} bytes, {}×{} pixels of {} bits need {want} (truncated or inconsistent file)",
                bytes.len(),
                x.rows,
                x.columns,
                x.bits_allocated
            ),
        ));
    }
    let stored = x.bits_stored as u32;
    let mask: u64 = if stored >= 64 {
        u64::MAX
    } else {
        (1u64 << stored) - 1
    };
    for px in bytes[..want].chunks_exact(bpp) {
        let mut raw = 0u64;
        for (b, &byte) in px.iter().enumerate() {
            raw |= (byte as u64) << (8 * b);
        }
        let v = raw & mask;
        // Two's complement in BitsStored bits: subtract 2^stored when the top stored bit is set.
        let value = if x.signed && (v >> (stored - 1)) & 1 == 1 {
            v as i64 - (1i64 << stored)
        } else {
            v as i64
        };
        let hu = value as f64 * x.slope + x.intercept;
        out.push(hu as f32);
    }
    Ok(())
}
