//! The CADS preprocessing cache: every CT is read, reoriented to RAS, resampled to 1 mm, clipped to
//! [−1024, 1024] HU, cut to its central 80 % in-plane where a side exceeds 320 voxels, and
//! projected to its DRR ONCE; the result is written under the cache folder and later epochs (and
//! later runs) read only that file.
//!
//! Why a cache: resampling a whole CT and rendering its DRR take seconds per volume, the views
//! milliseconds per sample; a 150-epoch run would otherwise redo the slow part 150 times.
//!
//! Invalidation: a cache file is named by a 64-bit FNV-1a hash of its *key* and stores the key
//! text; the key holds the input's path, byte size and modification time (ns) and the
//! preprocessing config (tiling, spacing, clip, minimum size, the DRR projector's id), so a
//! changed input or config misses and is rebuilt; a file whose stored key differs (a hash
//! collision) or that fails to parse is rebuilt too.
//!
//! File format (little endian): `CADSVOL1`, u32 key length, key bytes (UTF-8), the volume
//! (`[D, H, W]` as 3 × u64, then D·H·W f32), the tile depth (u64), the DRR (`[1, S, S]` as 3 ×
//! u64, then f32). Written to a temp file and renamed, so a crash never leaves a half file under
//! the final name.
//!
//! Host memory: [`build_cache`] reads each file's header, key and DRR and returns volumes whose
//! tiles stay in the file ([`CadsVolume::on_disk`]); a tile (24 whole planes of the stored volume,
//! so one contiguous byte range) is read when a sample draws it. A run over thousands of CTs holds
//! their DRRs and indices, not their voxels, and the operating system's file cache keeps the hot
//! tiles in memory as far as it can.
//!
//! Unusable inputs (unreadable, truncated, smaller than [`CacheConfig::min_shape`]) are skipped
//! and reported in [`CacheReport::skipped`]; [`build_cache`] fails only when nothing usable is
//! left.

use super::batch::CadsVolume;
use super::cads_views::DrrProjector;
use super::tiles::{cads_tiles, Tile, TilingConfig};
use crate::data::deeplesion::{self, DeepLesionVolume};
use crate::data::orientation::to_canonical;
use crate::data::preprocess::{clip_scale, crop_pad, resample_to_spacing, Interp, Patch};
use crate::data::volume::Volume;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CADSVOL1";

/// Where a pretraining volume comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum VolumeSource {
    /// A NIfTI file of a CT in HU.
    File(PathBuf),
    /// A DeepLesion sub-volume: consecutive 16-bit PNG slices of a series folder
    /// (`data::deeplesion`).
    DeepLesion(DeepLesionVolume),
    /// The built-in phantom (`data::phantom`, default config), used when no CT is at hand.
    Phantom,
}

impl VolumeSource {
    /// A short name for logs and the skipped list.
    pub fn name(&self) -> String {
        match self {
            VolumeSource::File(p) => p.display().to_string(),
            VolumeSource::DeepLesion(v) => v.dir.with_file_name(v.name()).display().to_string(),
            VolumeSource::Phantom => "built-in phantom".into(),
        }
    }
}

/// The preprocessing numbers (CADS.md, "Pretraining data and recipe"); part of the cache key.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub tiling: TilingConfig,
    /// Target voxel size, mm (x, y, z).
    pub spacing_mm: [f64; 3],
    /// HU clip range applied once, before caching (the views clip again; clipping is idempotent).
    pub hu_clip: (f32, f32),
    /// Smallest usable volume at 1 mm, `[D, H, W]` voxels: below 16 slices not even one view fits
    /// without padding, and an in-plane side under 64 mm is mostly padding in a ≥ 134-voxel
    /// shared region, which teaches the network the padding value rather than anatomy.
    pub min_shape: [usize; 3],
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            tiling: TilingConfig::default(),
            spacing_mm: [1.0; 3],
            hu_clip: (-1024.0, 1024.0),
            min_shape: [16, 64, 64],
        }
    }
}

impl CacheConfig {
    /// The config part of the cache key (every number that changes the cached bytes).
    fn key_text(&self, projector: &dyn DrrProjector) -> String {
        let t = &self.tiling;
        format!(
            "tiling depth {} stride {} max_side {} keep {:?}; spacing {:?}; clip {:?}; min {:?}; drr {}",
            t.depth,
            t.stride,
            t.max_side,
            t.keep_fraction,
            self.spacing_mm,
            self.hu_clip,
            self.min_shape,
            projector.id()
        )
    }
}

/// The inputs of a run: `path` is a CT file (NIfTI, NRRD, or one file of a DICOM series), a
/// folder of CTs (NIfTI and NRRD files, and subfolders read as DICOM series), a DICOM series
/// folder itself, a dataset folder with `imagesTr/` (nnU-Net's, or a Decathlon task read through
/// its dataset.json: `data::loader::dataset_from_folder`), a JSON manifest (the Decathlon's
/// dataset.json form) or DeepLesion as downloaded (its root, `Images_png/` or one series folder:
/// each run of consecutive PNG slices is a volume, `data::deeplesion`); with no path, the sample
/// CT `data/cxr.nii.gz` when it exists, else the built-in phantom. Inputs that turn out unreadable
/// are skipped and listed by the cache.
pub fn list_inputs(path: Option<&Path>) -> Result<Vec<VolumeSource>> {
    let op = "list_inputs";
    let Some(path) = path else {
        let sample = Path::new(crate::drr::SAMPLE_CT);
        return Ok(vec![if sample.is_file() {
            VolumeSource::File(sample.to_path_buf())
        } else {
            VolumeSource::Phantom
        }]);
    };
    let is_volume_file = |p: &Path| {
        let n = p.to_string_lossy();
        [".nii", ".nii.gz", ".nrrd", ".nhdr"]
            .iter()
            .any(|e| n.ends_with(e))
    };
    let is_dicom_file = |p: &Path| {
        let n = p.to_string_lossy().to_ascii_lowercase();
        n.ends_with(".dcm")
    };
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "json") {
            return Ok(crate::data::loader::dataset_from_manifest(path)?
                .into_iter()
                .map(|c| VolumeSource::File(c.image))
                .collect());
        }
        if is_volume_file(path) || crate::data::read::detect_format(path).is_ok() {
            return Ok(vec![VolumeSource::File(path.to_path_buf())]);
        }
        return Err(Error::BadFile {
            op,
            path: path.display().to_string(),
            problem: "expected a CT (NIfTI, NRRD, DICOM), a folder of them, an nnU-Net folder or a .json manifest".into(),
        });
    }
    if deeplesion::series_folders(path).is_some() {
        return Ok(deeplesion::list_volumes(path)?
            .into_iter()
            .map(VolumeSource::DeepLesion)
            .collect());
    }
    if path.join("imagesTr").is_dir() {
        return Ok(crate::data::loader::dataset_from_folder(path)?
            .into_iter()
            .map(|c| VolumeSource::File(c.image))
            .collect());
    }
    let entries = std::fs::read_dir(path).map_err(|source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    })?;
    // Names starting with `.` are never inputs (macOS's `._NAME` resource forks beside each file
    // of an archive it unpacks would otherwise be read, and skipped, as broken volumes).
    let all: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    // A folder of DICOM slices is one series (the reader sorts and checks its slices).
    if all.iter().any(|p| p.is_file() && is_dicom_file(p)) && !all.iter().any(|p| is_volume_file(p))
    {
        return Ok(vec![VolumeSource::File(path.to_path_buf())]);
    }
    let mut files: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| (p.is_file() && is_volume_file(p)) || p.is_dir())
        .collect();
    // Sorted so the volume order (and with it every seeded draw) is the same on every machine.
    files.sort();
    if files.is_empty() {
        return Err(Error::BadFile {
            op,
            path: path.display().to_string(),
            problem: "no NIfTI/NRRD files, DICOM series subfolders or imagesTr/ in this folder"
                .into(),
        });
    }
    Ok(files.into_iter().map(VolumeSource::File).collect())
}

/// The prepared volumes and what happened to each input.
#[derive(Debug, Default)]
pub struct CacheReport {
    pub volumes: Vec<CadsVolume>,
    /// The source of each volume in `volumes`.
    pub names: Vec<String>,
    /// Inputs left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Volumes read from the cache, and built (then written) now.
    pub hits: usize,
    pub built: usize,
}

/// 64-bit FNV-1a: a stable hash for file names (std's hasher is randomly seeded per process).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A file's absolute path, size and modification time: what makes a cached volume stale.
fn file_stamp(p: &Path) -> Result<String> {
    let meta = std::fs::metadata(p).map_err(|source| Error::Io {
        op: "pretrain cache",
        path: p.display().to_string(),
        source,
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    Ok(format!(
        "file {}; size {}; mtime_ns {mtime}",
        abs.display(),
        meta.len()
    ))
}

/// The full cache key of one input under one config.
fn source_key(src: &VolumeSource, cfg_text: &str) -> Result<String> {
    match src {
        VolumeSource::Phantom => Ok(format!("phantom default; {cfg_text}")),
        VolumeSource::File(p) => Ok(format!("{}; {cfg_text}", file_stamp(p)?)),
        VolumeSource::DeepLesion(v) => {
            // Every slice's stamp (a re-extracted zip changes them) and the spacing the CSV gave.
            let slices = v
                .slice_paths()?
                .iter()
                .map(|p| file_stamp(p))
                .collect::<Result<Vec<_>>>()?;
            Ok(format!(
                "deeplesion {}; spacing {:?}; {}; {cfg_text}",
                v.name(),
                v.spacing_mm,
                slices.join("; ")
            ))
        }
    }
}

/// Read every input through the cache under `dir` (created when missing), building what is
/// missing or stale. Errors only when the folder cannot be made or no input is usable.
pub fn build_cache(
    sources: &[VolumeSource],
    dir: &Path,
    cfg: &CacheConfig,
    projector: &dyn DrrProjector,
    mut log: impl FnMut(&str),
) -> Result<CacheReport> {
    let op = "build_cache";
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op,
        path: dir.display().to_string(),
        source,
    })?;
    let cfg_text = cfg.key_text(projector);
    let mut report = CacheReport::default();
    for src in sources {
        let name = src.name();
        let outcome = (|| -> Result<(CadsVolume, bool)> {
            let key = source_key(src, &cfg_text)?;
            let file = dir.join(format!("{:016x}.cadsvol", fnv1a(key.as_bytes())));
            if let Some(v) = read_cached(&file, &key, &cfg.tiling) {
                return Ok((v, true));
            }
            let ct = match src {
                VolumeSource::File(p) => crate::data::read_volume(p)?,
                VolumeSource::DeepLesion(v) => v.read()?,
                VolumeSource::Phantom => {
                    crate::data::phantom::phantom(&crate::data::phantom::PhantomConfig::default())?
                        .0
                }
            };
            let (iso, drr) =
                preprocess_volume(&ct, cfg, projector).map_err(|e| e.in_input_file(op, &name))?;
            write_cached(&file, &key, &iso, &cfg.tiling, &drr)?;
            // Served from the file just written, as a later run will be.
            let v = read_cached(&file, &key, &cfg.tiling).ok_or_else(|| Error::BadFile {
                op,
                path: file.display().to_string(),
                problem: "the cache file just written does not read back".into(),
            })?;
            Ok((v, false))
        })();
        match outcome {
            Ok((v, hit)) => {
                if hit {
                    report.hits += 1;
                } else {
                    report.built += 1;
                    log(&format!(
                        "cached {name}: {} tiles of {:?}",
                        v.tile_count(),
                        v.tile_shape(0).unwrap_or_default()
                    ));
                }
                report.volumes.push(v);
                report.names.push(name);
            }
            Err(e) => {
                log(&format!("warning: skipping {name}: {e}"));
                report.skipped.push((name, e.to_string()));
            }
        }
    }
    if report.volumes.is_empty() {
        let list: Vec<String> = report
            .skipped
            .iter()
            .map(|(n, why)| format!("{n} ({why})"))
            .collect();
        return Err(Error::invalid(
            op,
            "at least one usable CT volume",
            format!(
                "none of {} input(s): {}",
                sources.len(),
                if list.is_empty() {
                    "no inputs".into()
                } else {
                    list.join("; ")
                }
            ),
        ));
    }
    Ok(report)
}

/// The slow part, done once per volume: RAS, 1 mm, clip, central crop, DRR of the whole CT.
/// Returns the cropped volume `[D, H, W]` (HU) and the DRR `[1, 96, 96]`.
pub fn preprocess_volume(
    ct: &Volume,
    cfg: &CacheConfig,
    projector: &dyn DrrProjector,
) -> Result<(Patch, Patch)> {
    let op = "preprocess_volume";
    let (ras, _) = to_canonical(ct)?;
    let mut iso = resample_to_spacing(&ras, cfg.spacing_mm, Interp::Linear)?;
    let [nx, ny, nz] = iso.dims;
    let got = [nz, ny, nx];
    if got.iter().zip(cfg.min_shape).any(|(&g, m)| g < m) {
        return Err(Error::invalid(
            op,
            format!(
                "a CT of at least {:?} voxels [D, H, W] at {:?} mm",
                cfg.min_shape, cfg.spacing_mm
            ),
            format!("{got:?}"),
        ));
    }
    if iso.data.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(op, "finite HU values", "NaN or infinity"));
    }
    // Clip before the DRR too: the DRR integrates max(0, HU + 1024) and metal above 1024 HU would
    // otherwise dominate its min-max scaling (the authors clip the CT once, then project).
    clip_scale(&mut iso.data, cfg.hu_clip.0, cfg.hu_clip.1, 0.0, 1.0)?;
    let drr = projector.project(&iso)?;
    let full = Patch::from_volume(&iso);
    // The central-80 % rule, applied once here so the cache holds only what tiles read.
    let tiles = cads_tiles(full.shape, &cfg.tiling)?;
    let t0 = tiles[0];
    let cropped = crop_pad(
        &full,
        [0, t0.start[1] as isize, t0.start[2] as isize],
        [full.shape[0], t0.size[1], t0.size[2]],
        cfg.hu_clip.0,
    );
    Ok((cropped, drr))
}

/// The tiles of a cached volume: depth slabs of whole planes (the in-plane crop was applied
/// before the volume was stored).
fn cached_tiles(shape: [usize; 3], tiling: &TilingConfig) -> Result<Vec<Tile>> {
    let no_crop = TilingConfig {
        max_side: usize::MAX,
        ..tiling.clone()
    };
    cads_tiles(shape, &no_crop)
}

fn write_cached(
    file: &Path,
    key: &str,
    vol: &Patch,
    tiling: &TilingConfig,
    drr: &Patch,
) -> Result<()> {
    let io = |source| Error::Io {
        op: "pretrain cache write",
        path: file.display().to_string(),
        source,
    };
    let mut bytes = Vec::with_capacity(64 + key.len() + 4 * (vol.data.len() + drr.data.len()));
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    let put_patch = |p: &Patch, bytes: &mut Vec<u8>| {
        for s in p.shape {
            bytes.extend_from_slice(&(s as u64).to_le_bytes());
        }
        bytes.extend_from_slice(bytemuck::cast_slice(&p.data));
    };
    put_patch(vol, &mut bytes);
    bytes.extend_from_slice(&(tiling.depth as u64).to_le_bytes());
    put_patch(drr, &mut bytes);
    let tmp = file.with_extension("cadsvol.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)
}

/// A bounds-checked cursor over a cache file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u64(&mut self) -> Option<usize> {
        usize::try_from(u64::from_le_bytes(self.take(8)?.try_into().ok()?)).ok()
    }
    fn shape(&mut self) -> Option<[usize; 3]> {
        Some([self.u64()?, self.u64()?, self.u64()?])
    }
    fn patch(&mut self) -> Option<Patch> {
        let shape = self.shape()?;
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))?;
        let data = self
            .take(n.checked_mul(4)?)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Patch { data, shape })
    }
}

/// The most bytes a cache file may hold after its volume (the tile depth and the DRR).
const MAX_DRR_TAIL: u64 = 64 << 20;

/// Read `n` bytes at `at` of `f` (None when the file is shorter).
fn read_at(f: &mut std::fs::File, at: u64, n: usize) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(at)).ok()?;
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// None when the file is absent, stale (another key) or malformed: the caller rebuilds it.
/// Reads the header, key and DRR only: the volume's tiles stay in the file and are read when a
/// sample needs them ([`CadsVolume::on_disk`]).
fn read_cached(file: &Path, key: &str, tiling: &TilingConfig) -> Option<CadsVolume> {
    let mut f = std::fs::File::open(file).ok()?;
    let len = f.metadata().ok()?.len();
    // Magic, key length, key, the volume's shape.
    let head = read_at(&mut f, 0, 12)?;
    if &head[..8] != MAGIC {
        return None;
    }
    let klen = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    if klen != key.len() {
        return None;
    }
    let rest = read_at(&mut f, 12, klen.checked_add(24)?)?;
    let mut c = Cursor {
        bytes: &rest,
        at: 0,
    };
    if c.take(klen)? != key.as_bytes() {
        return None;
    }
    let shape = c.shape()?;
    let offset = 12 + rest.len() as u64;
    let voxel_bytes = shape
        .iter()
        .try_fold(4usize, |a, &b| a.checked_mul(b))
        .and_then(|b| u64::try_from(b).ok())?;
    // The depth, then the DRR, to the end of the file (a DRR is tens of kB: a longer tail is a
    // malformed file, rebuilt rather than read).
    let tail_at = offset.checked_add(voxel_bytes)?;
    let tail_len = len.checked_sub(tail_at).filter(|&n| n <= MAX_DRR_TAIL)?;
    let tail = read_at(&mut f, tail_at, usize::try_from(tail_len).ok()?)?;
    let mut c = Cursor {
        bytes: &tail,
        at: 0,
    };
    let depth = c.u64()?;
    let drr = c.patch()?;
    if depth != tiling.depth || c.at != tail.len() {
        return None;
    }
    let tiles = cached_tiles(shape, tiling).ok()?;
    CadsVolume::on_disk(file.to_path_buf(), offset, shape, tiles, drr).ok()
}
