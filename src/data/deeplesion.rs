//! DeepLesion (NIH Clinical Center; the CADS paper's pretraining data) read as it is
//! distributed: `Images_png/<patient>_<study>_<series>/<slice>.png`, 16-bit grayscale slices
//! storing HU + 32768, and `DL_info.csv`, whose `Spacing_mm_px_` column gives each series' voxel
//! size. The dataset's own DL_save_nifti.py (which the CADS authors ran before training) writes
//! each run of consecutive slice numbers of a series folder as one NIfTI volume named
//! `<series>_<first>-<last>` (slice numbers of at least three digits); [`list_volumes`] finds the
//! same sub-volumes and [`DeepLesionVolume::read`] reads one with the same voxels and geometry, so
//! pretraining needs no conversion pass and no second copy of the data.
//!
//! Geometry (DL_save_nifti.py's affine, RAS+ world in mm): the voxel in column c, row r of slice
//! number `first + s` lies at
//!   x = −sp[1]·c,   y = −sp[0]·r,   z = −sp[2]·s
//! where sp = `Spacing_mm_px_` (its first value spaces rows, the second columns, the third
//! slices): columns run toward the patient's left and rows toward posterior, as an axial DICOM
//! slice is displayed, and higher slice numbers lie further inferior (orientation code LPI).
//!
//! `DL_info.csv` is looked for in the `Images_png` folder, its parent (where the dataset keeps it)
//! and, for a single series folder, the folder above that. A series the CSV does not list, or
//! lists without a usable spacing, fails when read (the pretraining cache skips and lists it).

use super::volume::{Affine, Datatype, Volume};
use crate::error::{Error, Result};
use crate::util::size::{checked_bytes, checked_mul};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const OP: &str = "deeplesion";

/// DeepLesion stores HU + 32768 in unsigned 16 bits.
const HU_OFFSET: f32 = 32768.0;

/// Series key: (patient index, study index, series id), as the folder name and the CSV give them.
type SeriesKey = (u32, u32, u32);

/// One sub-volume: consecutive slices `first..=last` of a series folder.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepLesionVolume {
    /// The series folder (`Images_png/000001_01_01`).
    pub dir: PathBuf,
    pub first: u32,
    pub last: u32,
    /// `Spacing_mm_px_` of the series from DL_info.csv (rows, columns, slices), when it lists
    /// one.
    pub spacing_mm: Option<[f64; 3]>,
}

fn bad(path: &Path, problem: impl Into<String>) -> Error {
    Error::BadFile {
        op: OP,
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        op: OP,
        path: path.display().to_string(),
        source,
    }
}

/// `(patient, study, series)` from a series folder name `PPPPPP_SS_RR`.
fn series_key(name: &str) -> Option<SeriesKey> {
    let mut parts = name.split('_');
    let mut next = || -> Option<u32> {
        let p = parts.next()?;
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let key = (next()?, next()?, next()?);
    parts.next().is_none().then_some(key)
}

/// The slice number of `NNN.png`.
fn slice_number(file_name: &str) -> Option<u32> {
    let stem = file_name.strip_suffix(".png")?;
    (!stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// The slices of a series folder, (number, file) sorted by number (names starting with `.`
/// skipped; a number written twice, `103.png` and `0103.png`, is an error).
fn slice_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut slices: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = (!name.starts_with('.')).then(|| slice_number(&name))??;
            Some((n, e.path()))
        })
        .collect();
    slices.sort();
    if let Some(w) = slices.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(bad(
            dir,
            format!(
                "slice {} twice: {} and {}",
                w[0].0,
                w[0].1.display(),
                w[1].1.display()
            ),
        ));
    }
    Ok(slices)
}

/// Whether `dir` is a DeepLesion series folder: named `PPPPPP_SS_RR` and holding `NNN.png`.
pub fn is_series_folder(dir: &Path) -> bool {
    dir.is_dir()
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(series_key)
            .is_some()
        && slice_files(dir).is_ok_and(|s| !s.is_empty())
}

/// The series folders of `path`, if it is DeepLesion data: a DeepLesion root (holding
/// `Images_png/`), an `Images_png` folder (holding series folders) or one series folder. Sorted
/// by name, so the volume order is the same on every machine.
pub fn series_folders(path: &Path) -> Option<Vec<PathBuf>> {
    if is_series_folder(path) {
        return Some(vec![path.to_path_buf()]);
    }
    let images = if path.join("Images_png").is_dir() {
        path.join("Images_png")
    } else {
        path.to_path_buf()
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&images)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| !n.starts_with('.') && series_key(n).is_some())
        })
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    // A folder of other data whose subfolders merely look like series names is not DeepLesion:
    // the first must hold slices.
    dirs.first()
        .is_some_and(|d| is_series_folder(d))
        .then_some(dirs)
}

/// Where DL_info.csv is looked for, given the series folders' parent (`Images_png`).
fn info_candidates(images: &Path) -> Vec<PathBuf> {
    let mut v = vec![images.join("DL_info.csv")];
    if let Some(p) = images.parent() {
        v.push(p.join("DL_info.csv"));
        if let Some(pp) = p.parent() {
            v.push(pp.join("DL_info.csv"));
        }
    }
    v
}

/// Split one CSV record (RFC 4180: fields in double quotes may hold commas, `""` is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("starts with one field");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            _ => field.push(c),
        }
    }
    fields
}

/// Each series' `Spacing_mm_px_` from DL_info.csv (the first row of a series with a usable one:
/// three finite positive numbers).
pub fn read_spacings(csv: &Path) -> Result<HashMap<SeriesKey, [f64; 3]>> {
    let text = std::fs::read_to_string(csv).map_err(io(csv))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap_or(""));
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| bad(csv, format!("no column {name:?} in the header {header:?}")))
    };
    let cols = [
        column("Patient_index")?,
        column("Study_index")?,
        column("Series_ID")?,
    ];
    let spacing_col = column("Spacing_mm_px_")?;
    let mut out = HashMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f = csv_fields(line);
        let int = |i: usize| f.get(i).and_then(|v| v.trim().parse::<u32>().ok());
        let (Some(p), Some(s), Some(r)) = (int(cols[0]), int(cols[1]), int(cols[2])) else {
            continue;
        };
        let spacing: Vec<f64> = f
            .get(spacing_col)
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_default();
        if let [a, b, c] = spacing[..] {
            if [a, b, c].iter().all(|v| v.is_finite() && *v > 0.0) {
                out.entry((p, s, r)).or_insert([a, b, c]);
            }
        }
    }
    Ok(out)
}

/// Every sub-volume of DeepLesion data at `path` (see [`series_folders`]): each series folder's
/// runs of consecutive slice numbers, as DL_save_nifti.py groups them, in folder then slice order,
/// with the series' spacing from DL_info.csv. Not DeepLesion data, or no DL_info.csv where it
/// is looked for, is an error that says so.
pub fn list_volumes(path: &Path) -> Result<Vec<DeepLesionVolume>> {
    let dirs = series_folders(path).ok_or_else(|| {
        bad(
            path,
            "not DeepLesion data: expected a folder holding Images_png/, an Images_png folder of \
             series folders PPPPPP_SS_RR/ or one such folder, with 16-bit slices NNN.png",
        )
    })?;
    let images = dirs[0].parent().unwrap_or(Path::new("."));
    let candidates = info_candidates(images);
    let csv = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
        bad(
            path,
            format!(
                "DeepLesion slices need DL_info.csv (from the dataset's download) for their voxel \
                 spacing; looked for {candidates:?}"
            ),
        )
    })?;
    let spacings = read_spacings(csv)?;
    let mut volumes = Vec::new();
    for dir in dirs {
        let key = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(series_key);
        let spacing_mm = key.and_then(|k| spacings.get(&k).copied());
        let numbers: Vec<u32> = slice_files(&dir)?.into_iter().map(|(n, _)| n).collect();
        let mut start = 0;
        for i in 1..=numbers.len() {
            if i == numbers.len() || numbers[i] != numbers[i - 1] + 1 {
                volumes.push(DeepLesionVolume {
                    dir: dir.clone(),
                    first: numbers[start],
                    last: numbers[i - 1],
                    spacing_mm,
                });
                start = i;
            }
        }
    }
    Ok(volumes)
}

/// One sub-volume of a series folder (what `read_volume` does with one): the one named by `pick`
/// (`FIRST-LAST`, as `103-129`, or the whole name), or the only one; several without a pick is an
/// error that lists them.
pub fn read_series_folder(dir: &Path, pick: Option<&str>) -> Result<Volume> {
    let volumes = list_volumes(dir)?;
    let names: Vec<String> = volumes.iter().map(DeepLesionVolume::name).collect();
    let chosen = match pick {
        Some(p) => volumes.iter().zip(&names).find(|(_, n)| {
            n.as_str() == p || n.strip_suffix(p).is_some_and(|head| head.ends_with('_'))
        }),
        None if volumes.len() == 1 => volumes.iter().zip(&names).next(),
        None => None,
    };
    match (chosen, pick) {
        (Some((v, _)), _) => v.read(),
        (None, Some(p)) => Err(bad(
            dir,
            format!("no sub-volume {p:?} among {names:?} (--series takes FIRST-LAST or a name)"),
        )),
        (None, None) => Err(bad(
            dir,
            format!(
                "a DeepLesion series folder holding {} sub-volumes {names:?}: choose one with \
                 --series FIRST-LAST",
                names.len()
            ),
        )),
    }
}

/// One 16-bit grayscale slice: (width, height, raw values).
fn read_slice(path: &Path) -> Result<(usize, usize, Vec<u16>)> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let png_err = |e: png::DecodingError| bad(path, format!("not a readable PNG: {e}"));
    let mut reader = decoder.read_info().map_err(png_err)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(path, "a PNG too large to decode"))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(png_err)?;
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Sixteen {
        return Err(bad(
            path,
            format!(
                "expected a 16-bit grayscale slice (DeepLesion stores HU + 32768), got {:?} {:?}",
                info.color_type, info.bit_depth
            ),
        ));
    }
    let (w, h) = (info.width as usize, info.height as usize);
    let rows = buf.chunks_exact(info.line_size.max(1)).take(h);
    if info.line_size < 2 * w || rows.len() < h {
        return Err(bad(
            path,
            "a PNG whose decoded rows are shorter than its header says",
        ));
    }
    let values = rows
        .flat_map(|row| row[..2 * w].chunks_exact(2))
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect();
    Ok((w, h, values))
}

impl DeepLesionVolume {
    /// DL_save_nifti.py's name for this sub-volume: `<series>_<first>-<last>`, slice numbers with
    /// at least three digits (`000001_01_01_103-129`).
    pub fn name(&self) -> String {
        let series = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{series}_{:03}-{:03}", self.first, self.last)
    }

    /// The PNG files of the sub-volume, in slice order; a missing slice is an error naming it.
    pub fn slice_paths(&self) -> Result<Vec<PathBuf>> {
        let paths: Vec<PathBuf> = slice_files(&self.dir)?
            .into_iter()
            .filter(|(n, _)| (self.first..=self.last).contains(n))
            .map(|(_, p)| p)
            .collect();
        let want = self.last.checked_sub(self.first).ok_or_else(|| {
            bad(
                &self.dir,
                format!("slice range {}..={}", self.first, self.last),
            )
        })? as usize
            + 1;
        if paths.len() != want {
            return Err(bad(
                &self.dir,
                format!(
                    "{}: {} of the {want} slices {}..={} are there",
                    self.name(),
                    paths.len(),
                    self.first,
                    self.last
                ),
            ));
        }
        Ok(paths)
    }

    /// The sub-volume in HU on DL_save_nifti.py's grid (module docs): dims [columns, rows,
    /// slices], datatype int16; at most [`super::nifti::max_bytes`] bytes as f32, the bound every
    /// volume reader keeps.
    pub fn read(&self) -> Result<Volume> {
        self.read_with_limit(super::nifti::max_bytes())
    }

    /// [`DeepLesionVolume::read`] with an explicit bound (bytes of the f32 volume).
    pub fn read_with_limit(&self, max_bytes: u64) -> Result<Volume> {
        let name = self.name();
        let sp = self.spacing_mm.ok_or_else(|| {
            bad(
                &self.dir,
                "DL_info.csv lists no usable Spacing_mm_px_ for this series",
            )
        })?;
        let paths = self.slice_paths()?;
        let mut dims = [0usize; 3];
        let mut data = Vec::new();
        for (s, path) in paths.iter().enumerate() {
            let (w, h, values) = read_slice(path)?;
            if s == 0 {
                let per_slice = checked_mul(OP, "slice pixels", w, h)?;
                let total = checked_mul(OP, "sub-volume voxels", per_slice, paths.len())?;
                let bytes = checked_bytes(OP, total, 4)?;
                if bytes > max_bytes {
                    return Err(bad(
                        &self.dir,
                        format!(
                            "{name}: {} slices of {w}×{h} are {bytes} bytes as f32, over the \
                             reading limit of {max_bytes} bytes; set {} to raise it",
                            paths.len(),
                            super::nifti::MAX_BYTES_ENV
                        ),
                    ));
                }
                dims = [w, h, paths.len()];
                data.reserve_exact(total);
            } else if [w, h] != [dims[0], dims[1]] {
                return Err(bad(
                    path,
                    format!(
                        "slice of {w}×{h} pixels in {name}, whose first slice is {}×{}",
                        dims[0], dims[1]
                    ),
                ));
            }
            data.extend(values.into_iter().map(|v| v as f32 - HU_OFFSET));
        }
        let affine: Affine = [
            [-sp[1], 0.0, 0.0, 0.0],
            [0.0, -sp[0], 0.0, 0.0],
            [0.0, 0.0, -sp[2], 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        Volume::new(data, dims, affine, Datatype::Int16).map_err(|e| e.in_input_file(OP, &name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_csv_fields() {
        assert_eq!(series_key("000001_01_01"), Some((1, 1, 1)));
        assert_eq!(series_key("004321_02_13"), Some((4321, 2, 13)));
        for not in ["000001_01", "a_01_01", "1_2_3_4", "1__3", ""] {
            assert_eq!(series_key(not), None, "{not}");
        }
        assert_eq!(slice_number("103.png"), Some(103));
        assert_eq!(slice_number("1234.png"), Some(1234));
        assert_eq!(slice_number("._103.png"), None);
        assert_eq!(slice_number("103.PNG"), None);
        assert_eq!(
            csv_fields(r#"a.png,1,"1.5, 2.5",,"say ""hi""",x"#),
            ["a.png", "1", "1.5, 2.5", "", "say \"hi\"", "x"]
        );
    }
}
