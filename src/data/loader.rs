//! Datasets and background batch preparation.
//!
//! A dataset is a folder or a JSON manifest (`{"training": [{"image": "...", "label": "..."}]}`,
//! the Medical Segmentation Decathlon's and nnU-Net v1's dataset.json form; paths relative to
//! the manifest's folder; `label` optional; other keys ignored). A folder is read through its
//! `dataset.json` when that lists `training` cases (a Decathlon task folder, whose images are
//! `imagesTr/CASE.nii.gz`), else scanned as an nnU-Net v2 raw folder (`imagesTr/CASE_0000.nii.gz`
//! with `labelsTr/CASE.nii.gz`). nnU-Net v1 lists `imagesTr/CASE.nii.gz` for the file
//! `imagesTr/CASE_0000.nii.gz`: a listed image that does not exist is taken from its `_0000`
//! twin when that does. Names starting with `.` are never cases (macOS writes `._CASE.nii.gz`
//! resource forks beside each file of an archive it unpacks, as in the Decathlon's tarballs).
//!
//! [`Prefetcher`] runs a batch function on worker threads ahead of the consumer through a bounded
//! channel. Batch `b` is made with `Rng::new(seed).fork(b)`, whichever worker makes it, and batches
//! are handed out in index order, so the stream is the same for a seed whatever the thread count.

use super::augment::{
    draw_flips, flip, foreground_indices, random_crop_foreground_indexed, rotate_scale,
    IntensityAug,
};
use super::orientation::to_canonical;
use super::preprocess::{clip_scale, Interp, Patch};
use super::volume::{check_label_grid, Volume};
use crate::error::{Error, Result};
use crate::util::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

/// One image and its optional labelmap.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub image: PathBuf,
    pub label: Option<PathBuf>,
}

/// Find the cases of a dataset folder: those its `dataset.json` lists when it has a `training`
/// array (module docs), else every `imagesTr/*_0000.nii[.gz]` with `labelsTr/<case>.nii[.gz]`
/// when it exists, sorted by name so the order is reproducible.
pub fn dataset_from_folder(root: impl AsRef<Path>) -> Result<Vec<Case>> {
    let root = root.as_ref();
    let json = root.join("dataset.json");
    if json.is_file() && lists_training_cases(&json)? {
        return dataset_from_manifest(&json);
    }
    let images = root.join("imagesTr");
    let io = |source| Error::Io {
        op: "dataset_from_folder",
        path: images.display().to_string(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut cases = Vec::new();
    for n in names {
        let (stem, ext) = if let Some(s) = n.strip_suffix(".nii.gz") {
            (s, ".nii.gz")
        } else if let Some(s) = n.strip_suffix(".nii") {
            (s, ".nii")
        } else {
            continue;
        };
        let Some(case) = stem.strip_suffix("_0000") else {
            continue;
        };
        let label = root.join("labelsTr").join(format!("{case}{ext}"));
        cases.push(Case {
            image: images.join(&n),
            label: label.exists().then_some(label),
        });
    }
    if cases.is_empty() {
        return Err(Error::BadFile {
            op: "dataset_from_folder",
            path: images.display().to_string(),
            problem: "no *_0000.nii or *_0000.nii.gz images".into(),
        });
    }
    Ok(cases)
}

/// Read a JSON manifest.
pub fn dataset_from_manifest(path: impl AsRef<Path>) -> Result<Vec<Case>> {
    let path = path.as_ref();
    parse_manifest(&read_manifest_text("dataset_from_manifest", path)?, path)
}

fn read_manifest_text(op: &'static str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    })
}

/// Whether a folder's dataset.json lists its cases (a `training` array: the Decathlon's and
/// nnU-Net v1's form; nnU-Net v2's has none). Invalid JSON is an error naming the file, rather
/// than a silent scan of a folder whose list could not be read.
fn lists_training_cases(json: &Path) -> Result<bool> {
    const OP: &str = "dataset_from_folder";
    let text = read_manifest_text(OP, json)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::BadFile {
        op: OP,
        path: json.display().to_string(),
        problem: format!("invalid JSON: {e}"),
    })?;
    Ok(value.get("training").is_some_and(|t| t.is_array()))
}

/// Parse manifest text; `path` is the manifest's own path (errors name it, and entries are
/// relative to its folder). A UTF-8 byte-order mark, which some editors write, is accepted.
pub fn parse_manifest(text: &str, path: &Path) -> Result<Vec<Case>> {
    let name = path.display().to_string();
    let bad = |problem: String| Error::BadFile {
        op: "dataset_from_manifest",
        path: name.clone(),
        problem,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Two passes so a syntax error is never reported as a wrong shape (serde reads a struct from
    // an array too, and stops at the first mistyped element); serde_json's messages carry the
    // line and column.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let manifest: Manifest = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "not a dataset manifest ({{\"training\": [{{\"image\": \"...\", \"label\": \"...\"}}]}}): {e}"
        ))
    })?;
    if manifest.training.is_empty() {
        return Err(bad("empty \"training\" array".into()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut cases = Vec::with_capacity(manifest.training.len());
    for (i, entry) in manifest.training.into_iter().enumerate() {
        if entry.image.is_empty() || entry.label.as_deref() == Some("") {
            return Err(bad(format!("training[{i}]: an empty path")));
        }
        cases.push(Case {
            image: resolve_listed_image(dir, &entry.image),
            label: entry.label.map(|l| resolve(dir, &l)),
        });
    }
    Ok(cases)
}

/// An entry's path relative to the manifest's folder (absolute paths and `../` are fine),
/// resolved so that errors show where the file really is: the canonical path when it exists,
/// else the joined path with `.` and `..` folded lexically.
fn resolve(dir: &Path, entry: &str) -> PathBuf {
    let joined = dir.join(entry);
    if let Ok(p) = std::fs::canonicalize(&joined) {
        return p;
    }
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(
                    out.components().next_back(),
                    Some(std::path::Component::Normal(_))
                ) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A listed image, resolved as [`resolve`] does; when that file does not exist but its channel-0
/// twin `CASE_0000<ending>` in the same folder does (nnU-Net v1 lists `imagesTr/CASE.nii.gz`
/// for the file `imagesTr/CASE_0000.nii.gz`), the twin.
pub fn resolve_listed_image(dir: &Path, entry: &str) -> PathBuf {
    let listed = resolve(dir, entry);
    if listed.exists() {
        return listed;
    }
    match channel0_twin(&listed) {
        Some(twin) if twin.is_file() => std::fs::canonicalize(&twin).unwrap_or(twin),
        _ => listed,
    }
}

/// `DIR/CASE_0000<ending>` for `DIR/CASE<ending>` (a volume file ending, `CASE` not already a
/// channel-0 name).
fn channel0_twin(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (stem, ending) = [".nii.gz", ".nii", ".nrrd", ".nhdr"]
        .iter()
        .find_map(|e| name.strip_suffix(e).map(|s| (s, *e)))?;
    if stem.is_empty() || stem.ends_with("_0000") {
        return None;
    }
    Some(path.with_file_name(format!("{stem}_0000{ending}")))
}

/// The Decathlon's / nnU-Net v1's dataset.json, the part we read (other keys are ignored).
#[derive(serde::Deserialize)]
struct Manifest {
    training: Vec<ManifestEntry>,
}

#[derive(serde::Deserialize)]
struct ManifestEntry {
    image: String,
    #[serde(default)]
    label: Option<String>,
}

/// Read a case, check its labelmap lies on the image grid, and reorient both to canonical RAS.
pub fn load_case(case: &Case) -> Result<(Volume, Option<Volume>)> {
    let img = super::read::read_volume(&case.image)?;
    let lab = match &case.label {
        Some(p) => {
            let l = super::read::read_volume(p)?;
            check_label_grid(&img, &l, &p.display().to_string())?;
            Some(to_canonical(&l)?.0)
        }
        None => None,
    };
    Ok((to_canonical(&img)?.0, lab))
}

/// Runs `make(batch_index, rng)` on `workers` threads, at most `capacity` finished batches ahead
/// of the consumer, and yields the batches in index order (`Iterator`). `count` = None runs
/// until dropped. Dropping stops the workers.
pub struct Prefetcher<T: Send + 'static> {
    rx: Option<mpsc::Receiver<(usize, Result<T>)>>,
    pending: BTreeMap<usize, Result<T>>,
    next: usize,
    count: Option<usize>,
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetcher<T> {
    pub fn new<F>(
        seed: u64,
        count: Option<usize>,
        workers: usize,
        capacity: usize,
        make: F,
    ) -> Prefetcher<T>
    where
        F: Fn(usize, &mut Rng) -> Result<T> + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicUsize::new(0));
        let make = Arc::new(make);
        let handles = (0..workers.max(1))
            .map(|_| {
                let (tx, stop, counter, make) =
                    (tx.clone(), stop.clone(), counter.clone(), make.clone());
                std::thread::spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let b = counter.fetch_add(1, Ordering::Relaxed);
                    if count.is_some_and(|c| b >= c) {
                        return;
                    }
                    let mut rng = Rng::new(seed).fork(b as u64);
                    // A panic in `make` becomes this batch's error: a dead worker used to leave
                    // its batch missing, ending a known-length epoch early without a word or
                    // waiting forever for it with an unknown length.
                    let item = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        make(b, &mut rng)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a non-string panic payload".into());
                        Err(Error::invalid(
                            "Prefetcher",
                            format!("batch {b} made without panicking"),
                            format!("the batch function panicked: {what}"),
                        ))
                    });
                    if tx.send((b, item)).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Prefetcher {
            rx: Some(rx),
            pending: BTreeMap::new(),
            next: 0,
            count,
            stop,
            handles,
        }
    }
}

impl<T: Send + 'static> Iterator for Prefetcher<T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        if self.count.is_some_and(|c| self.next >= c) {
            return None;
        }
        loop {
            if let Some(item) = self.pending.remove(&self.next) {
                self.next += 1;
                return Some(item);
            }
            match self.rx.as_ref()?.recv() {
                Ok((b, item)) => {
                    self.pending.insert(b, item);
                }
                Err(_) => {
                    // Every worker has exited. With a known count that is the end only when
                    // every batch was handed out; otherwise a batch is missing: say so once.
                    if self.count.is_some_and(|c| self.next < c) {
                        let missing = self.next;
                        self.count = Some(missing);
                        return Some(Err(Error::invalid(
                            "Prefetcher",
                            format!("batch {missing} from the workers"),
                            "all workers exited before making it",
                        )));
                    }
                    return None;
                }
            }
        }
    }
}

impl<T: Send + 'static> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx = None; // unblocks workers waiting in send
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Segmentation patch sampling (nnU-Net style).
#[derive(Clone, Debug)]
pub struct SegPatchConfig {
    /// `[D, H, W]` voxels.
    pub patch: [usize; 3],
    /// Probability that a patch is centred on foreground (nnU-Net: 0.33).
    pub foreground_p: f64,
    pub flip_p: f64,
    /// In-plane rotation, angle ~ U(−max, max) degrees, with this probability (nnU-Net-like).
    pub rotation_p: f64,
    pub rotation_max_deg: f64,
    /// Zoom factor ~ U(lo, hi) with this probability.
    pub scale_p: f64,
    pub scale: (f64, f64),
    /// HU clip and scale, as for pretraining.
    pub hu_clip: (f32, f32),
    pub hu_scale: f32,
    pub intensity: IntensityAug,
}

impl Default for SegPatchConfig {
    fn default() -> Self {
        SegPatchConfig {
            patch: [64, 160, 160],
            foreground_p: 0.33,
            flip_p: 0.5,
            rotation_p: 0.2,
            rotation_max_deg: 30.0,
            scale_p: 0.2,
            scale: (0.7, 1.4),
            hu_clip: (-1024.0, 1024.0),
            hu_scale: 1024.0,
            intensity: IntensityAug::default(),
        }
    }
}

/// A segmentation batch: images `[B, D, H, W]` scaled, labels `[B, D, H, W]` integer-valued.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct SegBatch {
    pub batch: usize,
    pub images: Vec<f32>,
    pub labels: Vec<f32>,
}

/// A segmentation case in `[D, H, W]` (HU image, labels) with its foreground voxels listed once.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug)]
pub struct SegCase {
    pub image: Patch,
    pub label: Patch,
    pub foreground: Vec<u32>,
}

impl SegCase {
    pub fn new(image: Patch, label: Patch) -> Result<SegCase> {
        if image.shape != label.shape {
            return Err(Error::shape("SegCase::new", image.shape, label.shape));
        }
        let foreground = foreground_indices(&label);
        Ok(SegCase {
            image,
            label,
            foreground,
        })
    }
}

/// Make a segmentation batch: per patch a uniformly chosen case, a crop with foreground
/// oversampling, flips, HU clip/scale and intensity augmentation.
pub fn make_seg_batch(
    cases: &[SegCase],
    cfg: &SegPatchConfig,
    batch: usize,
    rng: &mut Rng,
) -> Result<SegBatch> {
    if cases.is_empty() {
        return Err(Error::invalid("make_seg_batch", "at least one case", 0));
    }
    // A zero-size patch or batch used to return an empty batch that failed far away.
    if batch == 0 || cfg.patch.contains(&0) {
        return Err(Error::invalid(
            "make_seg_batch",
            "a batch of at least 1 and a patch of at least 1 voxel per axis",
            format!("batch {batch}, patch {:?}", cfg.patch),
        ));
    }
    let per_patch = crate::util::size::checked_numel("make_seg_batch", &cfg.patch)?;
    crate::util::size::checked_mul("make_seg_batch", "batch × patch voxels", batch, per_patch)?;
    let mut out = SegBatch {
        batch,
        images: Vec::new(),
        labels: Vec::new(),
    };
    for _ in 0..batch {
        let c = &cases[rng.below(cases.len())];
        let (mut i, l) = random_crop_foreground_indexed(
            &c.image,
            &c.label,
            &c.foreground,
            cfg.patch,
            cfg.foreground_p,
            cfg.hu_clip.0,
            rng,
        )?;
        let angle = if rng.bernoulli(cfg.rotation_p) {
            rng.range(-cfg.rotation_max_deg, cfg.rotation_max_deg)
                .to_radians()
        } else {
            0.0
        };
        let zoom = if rng.bernoulli(cfg.scale_p) {
            rng.range(cfg.scale.0, cfg.scale.1)
        } else {
            1.0
        };
        let mut l = l;
        if angle != 0.0 || zoom != 1.0 {
            // Same transform for both: trilinear for the image, nearest for the labels.
            i = rotate_scale(&i, angle, zoom, Interp::Linear)?;
            l = rotate_scale(&l, angle, zoom, Interp::Nearest)?;
        }
        let f = draw_flips(cfg.flip_p, rng);
        i = flip(&i, f);
        let l = flip(&l, f);
        clip_scale(&mut i.data, cfg.hu_clip.0, cfg.hu_clip.1, 0.0, cfg.hu_scale)?;
        cfg.intensity.apply(&mut i, rng)?;
        out.images.extend_from_slice(&i.data);
        out.labels.extend_from_slice(&l.data);
    }
    Ok(out)
}
