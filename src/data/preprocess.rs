//! CPU preprocessing: HU clipping and scaling, crop and pad, resizing and resampling to a target
//! spacing. (The CADS tiling and the GPU resampling live in `pretrain`: data is host-only.)
//!
//! Arrays here are [`Patch`]es in tensor order `[D, H, W]` (W fastest) — the same memory as a
//! [`Volume`] with dims `[X, Y, Z] = [W, H, D]`.
//!
//! Resampling runs on the CPU behind [`resample_to_spacing`]; `pretrain::resample_to_spacing_gpu`
//! is its GPU twin (same grid from [`spacing_geometry`]).

use super::volume::{Datatype, Volume};
use crate::error::{Error, Result};

/// A dense 3-D array in `[D, H, W]` order, W fastest.
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub data: Vec<f32>,
    pub shape: [usize; 3],
}

impl Patch {
    pub fn new(data: Vec<f32>, shape: [usize; 3]) -> Result<Patch> {
        if crate::util::size::checked_numel("Patch::new", &shape)? != data.len() {
            return Err(Error::shape("Patch::new", shape, [data.len()]));
        }
        Ok(Patch { data, shape })
    }

    pub fn filled(shape: [usize; 3], value: f32) -> Patch {
        Patch {
            data: vec![value; shape.iter().product()],
            shape,
        }
    }

    /// The voxels of a volume, viewed as `[Z, Y, X]`.
    pub fn from_volume(v: &Volume) -> Patch {
        Patch {
            data: v.data.clone(),
            shape: [v.dims[2], v.dims[1], v.dims[0]],
        }
    }

    #[inline]
    pub fn idx(&self, d: usize, h: usize, w: usize) -> usize {
        w + self.shape[2] * (h + self.shape[1] * d)
    }

    #[inline]
    pub fn at(&self, d: usize, h: usize, w: usize) -> f32 {
        self.data[self.idx(d, h, w)]
    }

    pub fn mean(&self) -> f64 {
        self.data.iter().map(|&v| v as f64).sum::<f64>() / self.data.len().max(1) as f64
    }
}

/// Clip to `[lo, hi]` and map `x → (x − shift) / scale` in place (CADS: lo −1024, hi 1024, shift 0,
/// scale 1024 → [−1, 1]).
pub fn clip_scale(data: &mut [f32], lo: f32, hi: f32, shift: f32, scale: f32) -> Result<()> {
    if lo.partial_cmp(&hi).is_none_or(|o| o.is_gt()) || !(scale.is_finite() && scale != 0.0) {
        return Err(Error::invalid(
            "clip_scale",
            "lo ≤ hi and a non-zero finite scale",
            format!("lo {lo}, hi {hi}, scale {scale}"),
        ));
    }
    for v in data.iter_mut() {
        *v = (v.clamp(lo, hi) - shift) / scale;
    }
    Ok(())
}

/// The sub-array `[start, start + size)` per axis; positions outside the source read `pad`
/// (crop and pad in one: a negative start or one running past the end pads).
pub fn crop_pad(src: &Patch, start: [isize; 3], size: [usize; 3], pad: f32) -> Patch {
    let mut out = Patch::filled(size, pad);
    let s = src.shape;
    for d in 0..size[0] {
        let sd = start[0] + d as isize;
        if sd < 0 || sd >= s[0] as isize {
            continue;
        }
        for h in 0..size[1] {
            let sh = start[1] + h as isize;
            if sh < 0 || sh >= s[1] as isize {
                continue;
            }
            // Contiguous W run that overlaps the source.
            let w0 = (-start[2]).max(0) as usize;
            let w1 = ((s[2] as isize - start[2]).max(0) as usize).min(size[2]);
            if w0 >= w1 {
                continue;
            }
            let src_row = src.idx(sd as usize, sh as usize, 0) as isize + start[2];
            let dst_row = out.idx(d, h, 0);
            let a = (src_row + w0 as isize) as usize;
            out.data[dst_row + w0..dst_row + w1].copy_from_slice(&src.data[a..a + (w1 - w0)]);
        }
    }
    out
}

/// How values between voxels are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// Trilinear, for images.
    Linear,
    /// Nearest neighbour, for labels.
    Nearest,
}

/// Sample `src` at continuous voxel coordinates `(d, h, w)`, clamping to the border.
#[inline]
pub fn sample(src: &Patch, d: f64, h: f64, w: f64, interp: Interp) -> f32 {
    let s = src.shape;
    let clampf = |x: f64, n: usize| x.clamp(0.0, (n - 1) as f64);
    let (d, h, w) = (clampf(d, s[0]), clampf(h, s[1]), clampf(w, s[2]));
    match interp {
        Interp::Nearest => src.at(d.round() as usize, h.round() as usize, w.round() as usize),
        Interp::Linear => {
            let (d0, h0, w0) = (d.floor() as usize, h.floor() as usize, w.floor() as usize);
            let (d1, h1, w1) = (
                (d0 + 1).min(s[0] - 1),
                (h0 + 1).min(s[1] - 1),
                (w0 + 1).min(s[2] - 1),
            );
            let (fd, fh, fw) = (
                (d - d0 as f64) as f32,
                (h - h0 as f64) as f32,
                (w - w0 as f64) as f32,
            );
            let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
            let plane = |dd: usize| {
                lerp(
                    lerp(src.at(dd, h0, w0), src.at(dd, h0, w1), fw),
                    lerp(src.at(dd, h1, w0), src.at(dd, h1, w1), fw),
                    fh,
                )
            };
            lerp(plane(d0), plane(d1), fd)
        }
    }
}

/// Resize to `shape` with half-pixel centres (PyTorch `interpolate(..., align_corners=False)`):
/// output index o reads source coordinate `(o + 0.5) · n_src / n_out − 0.5`.
pub fn resize(src: &Patch, shape: [usize; 3], interp: Interp) -> Result<Patch> {
    if shape.contains(&0) || src.shape.contains(&0) {
        return Err(Error::invalid(
            "resize",
            "non-empty shapes",
            format!("{:?} → {shape:?}", src.shape),
        ));
    }
    let scale: Vec<f64> = (0..3)
        .map(|a| src.shape[a] as f64 / shape[a] as f64)
        .collect();
    let mut data = Vec::with_capacity(crate::util::size::checked_numel("resize", &shape)?);
    for d in 0..shape[0] {
        let sd = (d as f64 + 0.5) * scale[0] - 0.5;
        for h in 0..shape[1] {
            let sh = (h as f64 + 0.5) * scale[1] - 0.5;
            for w in 0..shape[2] {
                let sw = (w as f64 + 0.5) * scale[2] - 0.5;
                data.push(sample(src, sd, sh, sw, interp));
            }
        }
    }
    Patch::new(data, shape)
}

/// Resample a volume to `target_mm` voxels (trilinear for images, nearest for labels), keeping
/// the world position of voxel (0, 0, 0) and the axis directions: new voxel n lies at old voxel
/// coordinate `n · target / spacing`, and the new dims are `round(dims · spacing / target)`.
/// CPU version; the GPU kernel replaces this function.
pub fn resample_to_spacing(vol: &Volume, target_mm: [f64; 3], interp: Interp) -> Result<Volume> {
    let (ratio, dims, affine, datatype) =
        spacing_geometry("resample_to_spacing", vol, target_mm, interp)?;
    let src = Patch::from_volume(vol);
    let mut data = Vec::with_capacity(dims.iter().product());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                data.push(sample(
                    &src,
                    k as f64 * ratio[2],
                    j as f64 * ratio[1],
                    i as f64 * ratio[0],
                    interp,
                ));
            }
        }
    }
    Volume::new(data, dims, affine, datatype)
}

/// The most voxels a resampled grid may have: 2^30 (4 GiB as f32), above any CT at 1 mm.
pub const MAX_RESAMPLED_VOXELS: usize = 1 << 30;

/// (step ratio per voxel axis, new dims, new affine, datatype) of resampling `vol` to `target_mm`
/// (validated): the grid both the CPU resampling here and the GPU one in `pretrain` produce.
pub fn spacing_geometry(
    op: &'static str,
    vol: &Volume,
    target_mm: [f64; 3],
    interp: Interp,
) -> Result<([f64; 3], [usize; 3], super::volume::Affine, Datatype)> {
    if target_mm.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(Error::invalid(
            op,
            "positive finite spacing",
            format!("{target_mm:?}"),
        ));
    }
    if vol.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::invalid(
            op,
            "a volume with positive finite voxel sizes (mm)",
            format!("spacing {:?} mm", vol.spacing),
        ));
    }
    let ratio: [f64; 3] = std::array::from_fn(|a| target_mm[a] / vol.spacing[a]);
    // The new grid is sized in f64 and bounded before anything is allocated: a voxel size of
    // 1e4 mm resampled to 1 mm asked for a 2e15-byte buffer (an abort), and a product past
    // usize::MAX a "capacity overflow" panic.
    let exact: [f64; 3] = std::array::from_fn(|a| (vol.dims[a] as f64 / ratio[a]).round().max(1.0));
    let voxels = exact.iter().product::<f64>();
    if !(voxels.is_finite() && voxels <= MAX_RESAMPLED_VOXELS as f64) {
        return Err(Error::invalid(
            op,
            format!("a resampled grid of at most {MAX_RESAMPLED_VOXELS} voxels"),
            format!(
                "dims {:?} at spacing {:?} mm resampled to {target_mm:?} mm needs {exact:?} = {voxels:.3e} voxels ({:.3e} bytes as f32)",
                vol.dims,
                vol.spacing,
                voxels * 4.0
            ),
        ));
    }
    let dims: [usize; 3] = exact.map(|v| v as usize);
    let mut affine = vol.affine;
    for row in affine.iter_mut().take(3) {
        for (c, r) in ratio.iter().enumerate() {
            row[c] *= r;
        }
    }
    let datatype = if interp == Interp::Linear && vol.datatype.is_integer() {
        Datatype::Float32
    } else {
        vol.datatype
    };
    Ok((ratio, dims, affine, datatype))
}
