//! The plan: everything preprocessing, training and inference need to agree on, derived from the
//! [`Fingerprint`] and the device, written to `plan.json` for the user to read and edit, and read
//! back (validated) by every later step.
//!
//! Rules (nnU-Net v2's `3d_fullres` planner, adapted to PVT-UNet):
//! - **Target spacing** = the per-axis median of the cases' spacings. Anisotropic data: when the
//!   coarsest axis w has a median spacing > 3× the largest other median AND its median extent is
//!   < 1/3 of the smallest other extent, its target is the 10th percentile of that axis's spacings
//!   (finer, to avoid interpolating thin slabs from very few slices), but never finer than the
//!   largest other target (+1e-5 mm).
//! - **Patch**: start from the box of 256³ voxels shaped like `1/spacing` (isotropic in mm), no
//!   larger than the median shape at the target spacing, rounded up to a multiple of the PVT-UNet
//!   total stride `(16, 32, 32)`; then, while the batch of 2 does not fit the memory budget (or its
//!   largest activation does not fit one storage binding), shrink by one stride step the axis whose
//!   patch is largest relative to the median shape.
//! - **Batch** = as many patches as the budget holds, at least 2, at most the number that covers 5%
//!   of the dataset's voxels (nnU-Net's cap, so one batch is not most of the data).
//! - **Resampling**: images with the interpolating cubic B-spline (`image_resampling: cubic`,
//!   nnU-Net's order 3; `linear` is the other choice), labels one-hot trilinear + argmax
//!   (`label_resampling`, or `nearest`).
//! - **Memory**: wgpu reports no device-memory size, only per-buffer limits, so the budget is given
//!   (default 8 GiB, nnU-Net's target; `--gpu-memory-gb`) and the per-tensor limit is the device's
//!   `max_storage_buffer_binding_size`/`max_buffer_size` ([`DeviceBudget::from_gpu`]). Training
//!   memory is modelled as `fixed + batch · voxels · bytes_per_voxel`: the fixed part for weights,
//!   gradients and two optimizer moments (~24 M parameters × 4 × 4 B), and a per-voxel cost
//!   estimated from the architecture (stem at 1/8 of the voxels × 64 channels × ~9 kept tensors,
//!   stage-1 blocks with 8× MLPs, the decoder's stride-2 and full-resolution levels, forward kept
//!   for backward plus gradients): ≈ 3.2 kB per input voxel. Calibrate `bytes_per_voxel` with
//!   `cads bench` (the `segment_step` case reports peak bytes) and edit the plan.
//!
//! Axes are canonical `[D, H, W]` (S, A, R; see the crate docs,
//! [Axis conventions](crate#axis-conventions)).

use super::dataset::LabelName;
use super::fingerprint::Fingerprint;
use super::metrics::percentile;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use std::path::Path;

/// PVT-UNet's total stride `[D, H, W]`: the stem (2, 2, 2) then (1, 2, 2) then ×2 for stages 2–4.
pub const TOTAL_STRIDE: [usize; 3] = [16, 32, 32];

/// The plan file format version.
pub const PLAN_VERSION: u32 = 1;

/// CT normalisation: clip to `[clip_low, clip_high]` (the foreground's 0.5 / 99.5 percentiles),
/// then `(x − mean) / std` with the foreground mean and standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CtNormalization {
    pub clip_low: f64,
    pub clip_high: f64,
    pub mean: f64,
    pub std: f64,
}

/// How images are brought to the target spacing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageResampling {
    /// Trilinear (the default of plans written before this field existed).
    #[default]
    Linear,
    /// Interpolating cubic B-spline (order 3, nnU-Net's choice for images; see
    /// [`crate::segment::cubic`]).
    Cubic,
}

impl std::str::FromStr for ImageResampling {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImageResampling> {
        match s.to_ascii_lowercase().as_str() {
            "linear" => Ok(ImageResampling::Linear),
            "cubic" => Ok(ImageResampling::Cubic),
            other => Err(Error::invalid("ImageResampling", "linear or cubic", other)),
        }
    }
}

/// How label maps are brought to the target spacing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelResampling {
    /// Nearest neighbour.
    Nearest,
    /// Each class's indicator resampled trilinearly, then the argmax (nnU-Net's default for
    /// labels: smoother boundaries than nearest).
    OneHotLinear,
}

/// The memory model and the device it was sized for.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryModel {
    /// Device memory the plan may use (bytes).
    pub budget_bytes: u64,
    /// The largest tensor one storage binding can hold on the device (bytes).
    pub max_binding_bytes: u64,
    /// Training bytes per input voxel of a batch (activations kept for backward + gradients).
    pub bytes_per_voxel: u64,
    /// Bytes independent of the batch (weights, gradients, optimizer moments).
    pub fixed_bytes: u64,
    /// Channels of the largest activation at full resolution (its size bounds one binding).
    pub full_resolution_channels: u64,
}

impl MemoryModel {
    /// Estimated training bytes for `batch` patches of `patch` voxels.
    pub fn training_bytes(&self, patch: [usize; 3], batch: usize) -> u64 {
        let v = patch.iter().product::<usize>() as u64 * batch as u64;
        self.fixed_bytes + v * self.bytes_per_voxel
    }

    /// Bytes of the largest single activation (full resolution, f32).
    pub fn largest_tensor_bytes(&self, patch: [usize; 3], batch: usize) -> u64 {
        let v = patch.iter().product::<usize>() as u64 * batch as u64;
        v * self.full_resolution_channels * 4
    }

    fn fits(&self, patch: [usize; 3], batch: usize) -> bool {
        self.training_bytes(patch, batch) <= self.budget_bytes
            && self.largest_tensor_bytes(patch, batch) <= self.max_binding_bytes
    }
}

/// The device side of planning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceBudget {
    pub memory_bytes: u64,
    pub max_binding_bytes: u64,
}

/// Training bytes per input voxel of PVT-UNet b1 (module docs; an estimate to calibrate).
pub const BYTES_PER_VOXEL: u64 = 3200;
/// Weights, gradients and two optimizer moments of ~24 M parameters, f32.
pub const FIXED_BYTES: u64 = 24_000_000 * 4 * 4;
/// Channels of PVT-UNet's full-resolution block (`PvtUnetConfig::final_channels`).
pub const FULL_RESOLUTION_CHANNELS: u64 = 32;

/// Default device-memory budget: 8 GiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 8 << 30;

impl DeviceBudget {
    /// The budget for `gpu`: `memory_bytes` (default [`DEFAULT_BUDGET_BYTES`]) and the device's
    /// per-binding limit.
    pub fn from_gpu(gpu: &Gpu, memory_bytes: Option<u64>) -> DeviceBudget {
        DeviceBudget {
            memory_bytes: memory_bytes.unwrap_or(DEFAULT_BUDGET_BYTES),
            max_binding_bytes: gpu.max_binding_bytes(),
        }
    }
}

/// The plan (see the module docs). Serialised as `plan.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub version: u32,
    /// `[D, H, W]` mm.
    pub target_spacing_mm: [f64; 3],
    /// Median case shape at the target spacing, `[D, H, W]` voxels.
    pub median_shape: [usize; 3],
    /// Training patch and sliding window, `[D, H, W]` voxels, a multiple of `total_stride`.
    pub patch: [usize; 3],
    pub batch: usize,
    pub total_stride: [usize; 3],
    /// Class k of the network is `labels[k]` (background first).
    pub labels: Vec<LabelName>,
    pub normalization: CtNormalization,
    /// Images: `linear` or `cubic` (absent in older plans: `linear`).
    #[serde(default)]
    pub image_resampling: ImageResampling,
    pub label_resampling: LabelResampling,
    pub memory: MemoryModel,
}

/// nnU-Net's anisotropy rule and the median spacing (see the module docs). `spacings` and
/// `shapes` are `[D, H, W]` per case.
pub fn target_spacing(spacings: &[[f64; 3]], shapes: &[[usize; 3]]) -> Result<[f64; 3]> {
    const OP: &str = "target_spacing";
    if spacings.is_empty() || spacings.len() != shapes.len() {
        return Err(Error::invalid(
            OP,
            "as many shapes as spacings, at least one",
            format!("{} spacings, {} shapes", spacings.len(), shapes.len()),
        ));
    }
    let axis = |a: usize| -> Vec<f64> { spacings.iter().map(|s| s[a]).collect() };
    let mut target: [f64; 3] = std::array::from_fn(|a| percentile(&axis(a), 50.0));
    let median_size: [f64; 3] = std::array::from_fn(|a| {
        let v: Vec<f64> = shapes.iter().map(|s| s[a] as f64).collect();
        percentile(&v, 50.0)
    });
    let worst = (0..3)
        .max_by(|&a, &b| target[a].total_cmp(&target[b]))
        .unwrap_or(0);
    let others: Vec<usize> = (0..3).filter(|&a| a != worst).collect();
    let max_other = others.iter().map(|&a| target[a]).fold(0.0, f64::max);
    let min_other_size = others
        .iter()
        .map(|&a| median_size[a])
        .fold(f64::INFINITY, f64::min);
    if target[worst] > 3.0 * max_other && median_size[worst] * 3.0 < min_other_size {
        let mut t = percentile(&axis(worst), 10.0);
        if t < max_other {
            t = max_other.max(t) + 1e-5;
        }
        target[worst] = t;
    }
    Ok(target)
}

/// Round `n` up to a multiple of `m` (at least `m`).
fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m).max(1) * m
}

impl Plan {
    /// Plan from a fingerprint, the dataset's labels (empty: the values seen, named `label_<v>`)
    /// and the device budget.
    pub fn from_fingerprint(
        fp: &Fingerprint,
        labels: &[LabelName],
        device: DeviceBudget,
    ) -> Result<Plan> {
        const OP: &str = "Plan::from_fingerprint";
        let spacings: Vec<[f64; 3]> = fp.cases.iter().map(|c| c.spacing_mm).collect();
        let shapes: Vec<[usize; 3]> = fp.cases.iter().map(|c| c.shape).collect();
        let target = target_spacing(&spacings, &shapes)?;
        // Median shape at the target spacing.
        let resampled: Vec<[f64; 3]> = fp
            .cases
            .iter()
            .map(|c| std::array::from_fn(|a| c.shape[a] as f64 * c.spacing_mm[a] / target[a]))
            .collect();
        let median_shape: [usize; 3] = std::array::from_fn(|a| {
            let v: Vec<f64> = resampled.iter().map(|s| s[a]).collect();
            (percentile(&v, 50.0).round() as usize).max(1)
        });
        let dataset_voxels: f64 = resampled.iter().map(|s| s.iter().product::<f64>()).sum();
        let memory = MemoryModel {
            budget_bytes: device.memory_bytes,
            max_binding_bytes: device.max_binding_bytes,
            bytes_per_voxel: BYTES_PER_VOXEL,
            fixed_bytes: FIXED_BYTES,
            full_resolution_channels: FULL_RESOLUTION_CHANNELS,
        };
        // Initial patch: 256³ voxels shaped like 1/spacing, capped by the median shape.
        let inv: [f64; 3] = std::array::from_fn(|a| 1.0 / target[a]);
        let scale = (256f64.powi(3) / inv.iter().product::<f64>()).cbrt();
        let mut patch: [usize; 3] = std::array::from_fn(|a| {
            let p = ((inv[a] * scale).round() as usize).min(median_shape[a]);
            round_up(p, TOTAL_STRIDE[a])
        });
        while !memory.fits(patch, 2) {
            let axis = (0..3)
                .filter(|&a| patch[a] > TOTAL_STRIDE[a])
                .max_by(|&a, &b| {
                    let r = |x: usize| patch[x] as f64 / median_shape[x] as f64;
                    r(a).total_cmp(&r(b))
                });
            match axis {
                Some(a) => patch[a] -= TOTAL_STRIDE[a],
                None => {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "a device budget that holds a batch of 2 patches of the minimum {TOTAL_STRIDE:?}"
                        ),
                        format!(
                            "{} bytes budget, {} bytes per binding; {TOTAL_STRIDE:?} needs {} bytes",
                            memory.budget_bytes,
                            memory.max_binding_bytes,
                            memory.training_bytes(TOTAL_STRIDE, 2)
                        ),
                    ))
                }
            }
        }
        let voxels = patch.iter().product::<usize>() as u64;
        let by_memory = ((memory.budget_bytes - memory.fixed_bytes)
            / (voxels * memory.bytes_per_voxel)) as usize;
        let by_binding =
            (memory.max_binding_bytes / (voxels * memory.full_resolution_channels * 4)) as usize;
        let by_dataset = (dataset_voxels * 0.05 / voxels as f64).round() as usize;
        let batch = by_memory.min(by_binding).min(by_dataset).max(2);
        let labels = if labels.is_empty() {
            fp.label_values
                .iter()
                .map(|&v| LabelName {
                    name: if v == 0 {
                        "background".into()
                    } else {
                        format!("label_{v}")
                    },
                    value: v,
                })
                .collect()
        } else {
            labels.to_vec()
        };
        let s = &fp.foreground;
        let plan = Plan {
            version: PLAN_VERSION,
            target_spacing_mm: target,
            median_shape,
            patch,
            batch,
            total_stride: TOTAL_STRIDE,
            labels,
            normalization: CtNormalization {
                clip_low: s.percentile_00_5,
                clip_high: s.percentile_99_5,
                mean: s.mean,
                std: s.std.max(1e-8),
            },
            image_resampling: ImageResampling::Cubic,
            label_resampling: LabelResampling::OneHotLinear,
            memory,
        };
        plan.validate(OP)?;
        Ok(plan)
    }

    /// Check every field a user may have edited; errors name the field, what was expected and got.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.version != PLAN_VERSION {
            return Err(Error::invalid(
                op,
                format!("plan version {PLAN_VERSION}"),
                self.version,
            ));
        }
        if self
            .target_spacing_mm
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(Error::invalid(
                op,
                "target_spacing_mm: three positive finite mm",
                format!("{:?}", self.target_spacing_mm),
            ));
        }
        for a in 0..3 {
            let (p, s) = (self.patch[a], self.total_stride[a]);
            if s == 0 || p == 0 || p % s != 0 {
                let nearest = round_up(p.max(1), s.max(1));
                return Err(Error::invalid(
                    op,
                    format!(
                        "patch a non-zero multiple of total_stride {:?} on every axis",
                        self.total_stride
                    ),
                    format!(
                        "patch {:?} (axis {a}: {p}; the nearest valid size is {nearest})",
                        self.patch
                    ),
                ));
            }
        }
        if self.batch == 0 {
            return Err(Error::invalid(op, "batch ≥ 1", 0));
        }
        if self.labels.len() < 2 || self.labels[0].value != 0 {
            return Err(Error::invalid(
                op,
                "labels: the background (value 0) first and at least one more class",
                format!("{:?}", self.labels),
            ));
        }
        let n = &self.normalization;
        let valid = n.clip_low.is_finite()
            && n.clip_high.is_finite()
            && n.clip_low <= n.clip_high
            && n.mean.is_finite()
            && n.std.is_finite()
            && n.std > 0.0;
        if !valid {
            return Err(Error::invalid(
                op,
                "normalization: finite clip_low ≤ clip_high, finite mean, std > 0",
                format!("{n:?}"),
            ));
        }
        Ok(())
    }

    /// The memory model of an inference-only plan on `gpu` (default budget, the device's binding
    /// limit; nothing is sized from it).
    pub fn inference_memory(gpu: &Gpu) -> MemoryModel {
        MemoryModel {
            budget_bytes: DEFAULT_BUDGET_BYTES,
            max_binding_bytes: gpu.max_binding_bytes(),
            bytes_per_voxel: BYTES_PER_VOXEL,
            fixed_bytes: FIXED_BYTES,
            full_resolution_channels: FULL_RESOLUTION_CHANNELS,
        }
    }

    /// Number of classes (background included).
    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    /// Write as pretty JSON (temp file, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|e| {
            Error::invalid("Plan::save", "a plan serde_json can write", e.to_string())
        })?;
        write_atomic("Plan::save", path, text.as_bytes())
    }

    /// Read and validate a plan file.
    pub fn load(path: impl AsRef<Path>) -> Result<Plan> {
        const OP: &str = "Plan::load";
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            op: OP,
            path: name.clone(),
            source,
        })?;
        let plan: Plan = serde_json::from_str(&text).map_err(|e| Error::BadFile {
            op: OP,
            path: name.clone(),
            problem: format!("not a cads segmentation plan: {e}"),
        })?;
        plan.validate(OP).map_err(|e| Error::BadFile {
            op: OP,
            path: name,
            problem: e.to_string(),
        })?;
        Ok(plan)
    }

    /// A key of the preprocessing-relevant fields (spacing, normalisation, image and label
    /// resampling, labels): FNV-1a 64 of their JSON, hex. Preprocessed caches live under this key, so an edited
    /// plan never reads a stale cache.
    pub fn preprocessing_key(&self) -> String {
        let key = serde_json::json!({
            "version": self.version,
            "target_spacing_mm": self.target_spacing_mm,
            "normalization": self.normalization,
            "image_resampling": self.image_resampling,
            "label_resampling": self.label_resampling,
            "labels": self.labels,
        })
        .to_string();
        let mut h: u64 = 0xcbf29ce484222325;
        for b in key.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, so a failure never leaves a
/// half-written file.
pub(crate) fn write_atomic(op: &'static str, path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        op,
        path: path.display().to_string(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
