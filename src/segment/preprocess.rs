//! Preprocessing for the plan: canonical orientation, CT normalisation, resampling to the plan's
//! spacing, and a preprocessed cache on disk.
//!
//! Order (nnU-Net's): reorient to canonical RAS (exact: axes permuted and flipped, no
//! interpolation); normalise on the original grid — clip to `[clip_low, clip_high]`, then
//! `(x − mean) / std` — so interpolation sees the clipped values; resample to the target spacing
//! (images trilinear or cubic B-spline, [`ImageResampling`]; labels nearest or one-hot trilinear +
//! argmax, [`LabelResampling`]). The
//! resampled grid keeps voxel (0, 0, 0) where it was and has `round(shape · spacing / target)`
//! voxels per axis ([`crate::data::preprocess::spacing_geometry`]): voxel m of the new grid lies at
//! old voxel coordinate `m · target / spacing`, which [`resample_channels`] inverts to bring
//! predictions back.
//!
//! Arrays are [`Patch`]es `[D, H, W]` on the canonical grid (see the crate docs,
//! [Axis conventions](crate#axis-conventions)).
//!
//! **Cache**: `<dir>/<plan key>/<case>.image.f32` (and `.label.f32`), raw little-endian f32 in
//! `[D, H, W]` order, with `<case>.json` holding the shape, spacing and the plan key. The key
//! ([`Plan::preprocessing_key`]) hashes every plan field preprocessing reads, so an edited plan
//! gets a fresh folder. Files are written through a temporary name and a rename.

use super::cubic::resample_to_spacing_cubic;
use super::dataset::{load_case, DatasetCase};
use super::fingerprint::dhw_shape;
use super::plan::{write_atomic, CtNormalization, ImageResampling, LabelResampling, Plan};
use crate::data::orientation::to_canonical;
use crate::data::preprocess::{resample_to_spacing, spacing_geometry, Interp, Patch};
use crate::data::{Datatype, Volume};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The largest preprocessed case, in voxels (2³⁰ = 4 GiB of f32): beyond it preprocessing stops
/// with an error naming the case instead of exhausting host memory.
pub const MAX_CASE_VOXELS: usize = 1 << 30;

/// Clip and z-score in place (see [`CtNormalization`]).
pub fn normalize_ct(data: &mut [f32], n: &CtNormalization) -> Result<()> {
    if !(n.clip_low <= n.clip_high && n.std.is_finite() && n.std > 0.0 && n.mean.is_finite()) {
        return Err(Error::invalid(
            "normalize_ct",
            "clip_low ≤ clip_high, finite mean, std > 0",
            format!("{n:?}"),
        ));
    }
    let (lo, hi) = (n.clip_low as f32, n.clip_high as f32);
    let (mean, inv) = (n.mean as f32, (1.0 / n.std) as f32);
    for v in data.iter_mut() {
        *v = (v.clamp(lo, hi) - mean) * inv;
    }
    Ok(())
}

/// A case ready for training or inference, on the canonical grid at the plan's spacing.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessedCase {
    pub id: String,
    /// Normalised image `[D, H, W]`.
    pub image: Patch,
    /// Class indices 0..K−1 (`plan.labels` order) `[D, H, W]`, when the case has a label map.
    pub label: Option<Patch>,
    /// `[D, H, W]` mm (the plan's target spacing).
    pub spacing_mm: [f64; 3],
}

/// `what`: the case (and its spacing) in words, for the error.
fn check_size(op: &'static str, what: &str, from: [usize; 3], to: [usize; 3]) -> Result<()> {
    let n = to.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n.is_none_or(|n| n > MAX_CASE_VOXELS) {
        return Err(Error::invalid(
            op,
            format!("a resampled case of at most {MAX_CASE_VOXELS} voxels"),
            format!("{what}: {from:?} voxels become {to:?} at the plan's spacing; coarsen target_spacing_mm in the plan"),
        ));
    }
    Ok(())
}

/// `[X, Y, Z]` order of a `[D, H, W]` triple.
fn xyz(v: [f64; 3]) -> [f64; 3] {
    [v[2], v[1], v[0]]
}

/// Map label values to class indices (`plan.labels` order); an unknown value is an error.
fn label_to_classes(op: &'static str, id: &str, label: &mut Volume, plan: &Plan) -> Result<()> {
    for (i, v) in label.data.iter_mut().enumerate() {
        let k = plan
            .labels
            .iter()
            .position(|l| l.value as f32 == *v)
            .ok_or_else(|| {
                Error::invalid(
                    op,
                    format!(
                        "label values among the plan's {:?}",
                        plan.labels.iter().map(|l| l.value).collect::<Vec<_>>()
                    ),
                    format!("{v} at flat voxel {i} of case {id}"),
                )
            })?;
        *v = k as f32;
    }
    Ok(())
}

/// Preprocess an image (and label map) given on their own grid (checked to match).
pub fn preprocess_volumes(
    id: &str,
    image: &Volume,
    label: Option<&Volume>,
    plan: &Plan,
) -> Result<PreprocessedCase> {
    const OP: &str = "preprocess_volumes";
    let (mut img, _) = to_canonical(image)?;
    let (_, dims, _, _) = crate::data::preprocess::spacing_geometry(
        OP,
        &img,
        xyz(plan.target_spacing_mm),
        Interp::Linear,
    )?;
    let what = format!("case {id} at spacing {:?} mm [D, H, W]", xyz(img.spacing));
    check_size(OP, &what, dhw_shape(&img), [dims[2], dims[1], dims[0]])?;
    normalize_ct(&mut img.data, &plan.normalization)?;
    let img = match plan.image_resampling {
        ImageResampling::Linear => {
            resample_to_spacing(&img, xyz(plan.target_spacing_mm), Interp::Linear)?
        }
        ImageResampling::Cubic => resample_to_spacing_cubic(&img, xyz(plan.target_spacing_mm))?,
    };
    let label = match label {
        None => None,
        Some(l) => {
            if l.dims != image.dims {
                return Err(Error::shape(OP, image.dims, l.dims));
            }
            let (mut lab, _) = to_canonical(l)?;
            label_to_classes(OP, id, &mut lab, plan)?;
            let out = match plan.label_resampling {
                LabelResampling::Nearest => {
                    resample_to_spacing(&lab, xyz(plan.target_spacing_mm), Interp::Nearest)?
                }
                LabelResampling::OneHotLinear => one_hot_linear(&lab, plan)?,
            };
            Some(Patch::from_volume(&out))
        }
    };
    Ok(PreprocessedCase {
        id: id.to_string(),
        spacing_mm: plan.target_spacing_mm,
        image: Patch::from_volume(&img),
        label,
    })
}

/// One-hot trilinear label resampling: each class indicator resampled trilinearly, then the
/// argmax per voxel (ties to the lower class).
///
/// One pass: a class's resampled indicator is non-zero only where one of the eight trilinear
/// neighbours holds it, so per output voxel only the (at most eight) classes of its neighbours
/// are evaluated, with the same f32 interpolation as [`crate::data::preprocess::sample`] — each
/// value is bit-identical to resampling the whole indicator volume, and K passes become one (90
/// labels of the LIDC CT: about 60 s before). The test keeps the per-class version as its oracle.
fn one_hot_linear(classes: &Volume, plan: &Plan) -> Result<Volume> {
    const OP: &str = "one_hot_linear";
    if plan.classes() == 0 {
        return Err(Error::invalid(OP, "≥ 1 class", 0));
    }
    let (ratio, dims, affine, _) =
        spacing_geometry(OP, classes, xyz(plan.target_spacing_mm), Interp::Linear)?;
    let src = Patch::from_volume(classes);
    let s = src.shape;
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
    let axis = |x: f64, n: usize| -> (usize, usize, f32) {
        let x = x.clamp(0.0, (n - 1) as f64);
        let i0 = x.floor() as usize;
        (i0, (i0 + 1).min(n - 1), (x - i0 as f64) as f32)
    };
    let mut data = Vec::with_capacity(dims.iter().product());
    let mut present: Vec<f32> = Vec::with_capacity(8);
    for k in 0..dims[2] {
        let (d0, d1, fd) = axis(k as f64 * ratio[2], s[0]);
        for j in 0..dims[1] {
            let (h0, h1, fh) = axis(j as f64 * ratio[1], s[1]);
            for i in 0..dims[0] {
                let (w0, w1, fw) = axis(i as f64 * ratio[0], s[2]);
                let c = [
                    [src.at(d0, h0, w0), src.at(d0, h0, w1)],
                    [src.at(d0, h1, w0), src.at(d0, h1, w1)],
                    [src.at(d1, h0, w0), src.at(d1, h0, w1)],
                    [src.at(d1, h1, w0), src.at(d1, h1, w1)],
                ];
                present.clear();
                for v in c.iter().flatten() {
                    if !present.contains(v) {
                        present.push(*v);
                    }
                }
                present.sort_by(f32::total_cmp);
                // The indicator of class `cls` interpolated as `sample` does.
                let value = |cls: f32| {
                    let ind = |v: f32| (v == cls) as u8 as f32;
                    let row = |r: [f32; 2]| lerp(ind(r[0]), ind(r[1]), fw);
                    let plane0 = lerp(row(c[0]), row(c[1]), fh);
                    let plane1 = lerp(row(c[2]), row(c[3]), fh);
                    lerp(plane0, plane1, fd)
                };
                // Class 0 first (0 where absent), then ascending, strictly greater wins.
                let (mut best, mut score) = (0.0f32, value(0.0));
                for &cls in present.iter().filter(|&&v| v != 0.0) {
                    let v = value(cls);
                    if v > score {
                        (best, score) = (cls, v);
                    }
                }
                data.push(best);
            }
        }
    }
    Volume::new(data, dims, affine, Datatype::Uint8)
}

/// Trilinear resampling of channels-last data `[D, H, W, K]` on a grid of `from` voxels to `to`
/// voxels, where output voxel n reads input coordinate `n · scale` per axis (clamped to the
/// border). Bringing plan-grid predictions back to the canonical original grid uses
/// `scale = spacing / target` (the inverse of the preprocessing step `target / spacing`).
pub fn resample_channels(
    data: &[f32],
    from: [usize; 3],
    channels: usize,
    to: [usize; 3],
    scale: [f64; 3],
) -> Result<Vec<f32>> {
    const OP: &str = "resample_channels";
    if channels == 0
        || from.contains(&0)
        || to.contains(&0)
        || data.len() != from.iter().product::<usize>() * channels
    {
        return Err(Error::shape(
            OP,
            format!("{from:?} × {channels} channels (non-empty)"),
            format!("{} values, output {to:?}", data.len()),
        ));
    }
    check_size(OP, "the prediction", from, to)?;
    // Per axis: the lower neighbour and the weight of the upper one, for every output index.
    let axis = |a: usize| -> Vec<(usize, usize, f32)> {
        (0..to[a])
            .map(|n| {
                let x = (n as f64 * scale[a]).clamp(0.0, (from[a] - 1) as f64);
                let i0 = x.floor() as usize;
                let i1 = (i0 + 1).min(from[a] - 1);
                (i0, i1, (x - i0 as f64) as f32)
            })
            .collect()
    };
    let (ad, ah, aw) = (axis(0), axis(1), axis(2));
    let k = channels;
    let at = |d: usize, h: usize, w: usize| ((d * from[1] + h) * from[2] + w) * k;
    let mut out = Vec::with_capacity(to.iter().product::<usize>() * k);
    let mut tmp = vec![0.0f32; k];
    for &(d0, d1, fd) in &ad {
        for &(h0, h1, fh) in &ah {
            for &(w0, w1, fw) in &aw {
                let corners = [
                    (at(d0, h0, w0), (1.0 - fd) * (1.0 - fh) * (1.0 - fw)),
                    (at(d0, h0, w1), (1.0 - fd) * (1.0 - fh) * fw),
                    (at(d0, h1, w0), (1.0 - fd) * fh * (1.0 - fw)),
                    (at(d0, h1, w1), (1.0 - fd) * fh * fw),
                    (at(d1, h0, w0), fd * (1.0 - fh) * (1.0 - fw)),
                    (at(d1, h0, w1), fd * (1.0 - fh) * fw),
                    (at(d1, h1, w0), fd * fh * (1.0 - fw)),
                    (at(d1, h1, w1), fd * fh * fw),
                ];
                tmp.iter_mut().for_each(|t| *t = 0.0);
                for (base, wgt) in corners {
                    if wgt != 0.0 {
                        for (c, t) in tmp.iter_mut().enumerate() {
                            *t += wgt * data[base + c];
                        }
                    }
                }
                out.extend_from_slice(&tmp);
            }
        }
    }
    Ok(out)
}

/// The cache header, `<case>.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct CacheHeader {
    id: String,
    plan_key: String,
    shape: [usize; 3],
    spacing_mm: [f64; 3],
    has_label: bool,
}

/// A preprocessed cache folder for one plan (see the module docs).
#[derive(Clone, Debug)]
pub struct PreprocessCache {
    dir: PathBuf,
    key: String,
}

impl PreprocessCache {
    /// The cache of `plan` under `root` (created on first write).
    pub fn new(root: impl AsRef<Path>, plan: &Plan) -> PreprocessCache {
        let key = plan.preprocessing_key();
        PreprocessCache {
            dir: root.as_ref().join(&key),
            key,
        }
    }

    /// The folder holding this plan's cases.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, id: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.dir.join(format!("{id}.json")),
            self.dir.join(format!("{id}.image.f32")),
            self.dir.join(format!("{id}.label.f32")),
        )
    }

    /// The cached case, or None when it is not cached. A header or data file that does not match
    /// (size, key) is an error naming the file (delete the folder to rebuild).
    pub fn get(&self, id: &str) -> Result<Option<PreprocessedCase>> {
        const OP: &str = "PreprocessCache::get";
        let (hp, ip, lp) = self.paths(id);
        if !hp.exists() {
            return Ok(None);
        }
        let bad = |p: &Path, problem: String| Error::BadFile {
            op: OP,
            path: p.display().to_string(),
            problem: format!(
                "{problem}; delete {} to rebuild the cache",
                self.dir.display()
            ),
        };
        let io = |p: &Path| {
            let name = p.display().to_string();
            move |source| Error::Io {
                op: OP,
                path: name,
                source,
            }
        };
        let text = std::fs::read_to_string(&hp).map_err(io(&hp))?;
        let h: CacheHeader = serde_json::from_str(&text)
            .map_err(|e| bad(&hp, format!("not a cache header: {e}")))?;
        if h.plan_key != self.key || h.id != id {
            return Err(bad(
                &hp,
                format!(
                    "header for case {} plan {}, expected case {id} plan {}",
                    h.id, h.plan_key, self.key
                ),
            ));
        }
        let n: usize = h.shape.iter().product();
        let read = |p: &Path| -> Result<Patch> {
            let bytes = std::fs::read(p).map_err(io(p))?;
            if bytes.len() != n * 4 {
                return Err(bad(
                    p,
                    format!(
                        "{} bytes, the header's shape {:?} needs {}",
                        bytes.len(),
                        h.shape,
                        n * 4
                    ),
                ));
            }
            let data = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Patch::new(data, h.shape)
        };
        Ok(Some(PreprocessedCase {
            id: h.id.clone(),
            image: read(&ip)?,
            label: if h.has_label { Some(read(&lp)?) } else { None },
            spacing_mm: h.spacing_mm,
        }))
    }

    /// Store a case (data first, the header last, so a header always has its data).
    pub fn put(&self, case: &PreprocessedCase) -> Result<()> {
        const OP: &str = "PreprocessCache::put";
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            op: OP,
            path: self.dir.display().to_string(),
            source,
        })?;
        let (hp, ip, lp) = self.paths(&case.id);
        let raw = |p: &Patch| -> Vec<u8> { p.data.iter().flat_map(|v| v.to_le_bytes()).collect() };
        write_atomic(OP, &ip, &raw(&case.image))?;
        if let Some(l) = &case.label {
            if l.shape != case.image.shape {
                return Err(Error::shape(OP, case.image.shape, l.shape));
            }
            write_atomic(OP, &lp, &raw(l))?;
        }
        let h = CacheHeader {
            id: case.id.clone(),
            plan_key: self.key.clone(),
            shape: case.image.shape,
            spacing_mm: case.spacing_mm,
            has_label: case.label.is_some(),
        };
        let text = serde_json::to_string_pretty(&h)
            .map_err(|e| Error::invalid(OP, "a serialisable header", e.to_string()))?;
        write_atomic(OP, &hp, text.as_bytes())
    }

    /// The cached case, or preprocess it from its files and cache it. A preprocessing error about
    /// the data (e.g. a spacing whose resampled grid would be absurd) names the case's files.
    pub fn get_or_make(&self, case: &DatasetCase, plan: &Plan) -> Result<PreprocessedCase> {
        Ok(self.get_or_build(case, plan)?.0)
    }

    /// As [`PreprocessCache::get_or_make`], and whether the case was read back from the cache
    /// (true) or preprocessed from its files now (false). `plan` must be the cache's plan.
    pub fn get_or_build(
        &self,
        case: &DatasetCase,
        plan: &Plan,
    ) -> Result<(PreprocessedCase, bool)> {
        const OP: &str = "PreprocessCache::get_or_build";
        if plan.preprocessing_key() != self.key {
            return Err(Error::invalid(
                OP,
                format!("the plan this cache was made for (key {})", self.key),
                format!("a plan with key {}", plan.preprocessing_key()),
            ));
        }
        if let Some(c) = self.get(&case.id)? {
            return Ok((c, true));
        }
        let (image, label) = load_case(case)?;
        let c = preprocess_volumes(&case.id, &image, label.as_ref(), plan)
            .map_err(|e| e.in_input_file("PreprocessCache::get_or_make", case_files(case)))?;
        self.put(&c)?;
        Ok((c, false))
    }
}

/// The files of a case, for errors: the image, and the label map when there is one.
fn case_files(case: &DatasetCase) -> String {
    match &case.label {
        Some(l) => format!("{} (label map {})", case.image.display(), l.display()),
        None => case.image.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::dataset::LabelName;
    use crate::segment::plan::{MemoryModel, PLAN_VERSION, TOTAL_STRIDE};

    /// The oracle: every class indicator resampled over the whole volume, then the argmax.
    fn one_hot_linear_per_class(classes: &Volume, plan: &Plan) -> Volume {
        let mut best: Option<(Vec<f32>, Volume)> = None;
        for k in 0..plan.classes() {
            let ind = Volume::new(
                classes
                    .data
                    .iter()
                    .map(|&c| (c == k as f32) as u8 as f32)
                    .collect(),
                classes.dims,
                classes.affine,
                Datatype::Float32,
            )
            .unwrap();
            let r = resample_to_spacing(&ind, xyz(plan.target_spacing_mm), Interp::Linear).unwrap();
            match &mut best {
                None => {
                    let mut out = r.clone();
                    out.data.iter_mut().for_each(|v| *v = 0.0);
                    out.datatype = Datatype::Uint8;
                    best = Some((r.data, out));
                }
                Some((score, out)) => {
                    for ((s, o), &v) in score.iter_mut().zip(out.data.iter_mut()).zip(&r.data) {
                        if v > *s {
                            *s = v;
                            *o = k as f32;
                        }
                    }
                }
            }
        }
        best.unwrap().1
    }

    fn plan(classes: u32, target: [f64; 3]) -> Plan {
        Plan {
            version: PLAN_VERSION,
            target_spacing_mm: target,
            median_shape: [8, 8, 8],
            patch: [16, 32, 32],
            batch: 2,
            total_stride: TOTAL_STRIDE,
            labels: (0..classes)
                .map(|v| LabelName {
                    name: format!("l{v}"),
                    value: v,
                })
                .collect(),
            normalization: CtNormalization {
                clip_low: -1.0,
                clip_high: 1.0,
                mean: 0.0,
                std: 1.0,
            },
            image_resampling: ImageResampling::Linear,
            label_resampling: LabelResampling::OneHotLinear,
            memory: MemoryModel {
                budget_bytes: 1 << 30,
                max_binding_bytes: 1 << 27,
                bytes_per_voxel: 3200,
                fixed_bytes: 0,
                full_resolution_channels: 32,
            },
        }
    }

    #[test]
    fn one_pass_one_hot_linear_equals_the_per_class_oracle() {
        // Classes 0..5 with 3 absent, blocky so that boundaries and exact ties (ratio 1/2 puts
        // output voxels half-way between two inputs) occur.
        let dims = [9, 7, 6];
        let mut rng = crate::util::Rng::new(11);
        let data: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|i| {
                let c = if i % 5 < 2 { 0 } else { rng.below(5) };
                (if c == 3 { 4 } else { c }) as f32
            })
            .collect();
        let affine = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let v = Volume::new(data, dims, affine, Datatype::Uint8).unwrap();
        for target in [
            [1.0, 0.5, 0.5],
            [2.6, 0.7, 1.3],
            [4.0, 2.0, 2.0],
            [2.0, 1.0, 1.0],
        ] {
            let p = plan(5, target);
            let fast = one_hot_linear(&v, &p).unwrap();
            let oracle = one_hot_linear_per_class(&v, &p);
            assert_eq!(
                (fast.dims, fast.affine, fast.datatype),
                (oracle.dims, oracle.affine, oracle.datatype)
            );
            assert_eq!(fast.data, oracle.data, "target {target:?}");
        }
    }
}
