//! CPU preprocessing: HU clipping and scaling, crop and pad, resizing and resampling to a target
//! spacing, and the CADS tiling.
//!
//! Arrays here are [`Patch`]es in tensor order `[D, H, W]` (W fastest) — the same memory as a
//! [`Volume`] with dims `[X, Y, Z] = [W, H, D]`.
//!
//! Resampling runs on the CPU behind [`resample_to_spacing`]; a GPU kernel can replace that one
//! function later without changing its callers.

use super::volume::{Datatype, Volume};
use crate::error::{Error, Result};

/// A dense 3-D array in `[D, H, W]` order, W fastest.
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub data: Vec<f32>,
    pub shape: [usize; 3],
}

impl Patch {
    pub fn new(data: Vec<f32>, shape: [usize; 3]) -> Result<Patch> {
        if data.len() != shape.iter().product::<usize>() {
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
    let mut data = Vec::with_capacity(shape.iter().product());
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

/// [`resample_to_spacing`] on the GPU (`ops::resample_scaled`): the same grid, affine and
/// sampling (voxel 0 fixed, source coordinate `o · new/old spacing` clamped to the volume;
/// trilinear for images, nearest for labels), for volumes whose CPU resampling would be slow.
pub fn resample_to_spacing_gpu(
    gpu: &crate::Gpu,
    vol: &Volume,
    target_mm: [f64; 3],
    interp: Interp,
) -> Result<Volume> {
    let op = "resample_to_spacing_gpu";
    let (ratio, dims, affine, datatype) = spacing_geometry(op, vol, target_mm, interp)?;
    // Volume data is [X, Y, Z] with x fastest, i.e. row-major [D = Z, H = Y, W = X].
    let [nx, ny, nz] = vol.dims;
    let plane = nx * ny;
    let out_plane = dims[0] * dims[1];
    // Volumes over one storage binding go through in z-slabs: output slices [oz0, oz1) read input
    // slices [floor(oz0·r), floor((oz1 − 1)·r) + 2) ∩ [0, nz), which hold every tap they need.
    let max_floats = (gpu.max_binding_bytes() / 4) as usize;
    let in_slices_per_out = ratio[2].ceil() as usize + 1;
    let max_out_slices = (max_floats / plane.max(1)).saturating_sub(2) / in_slices_per_out.max(1);
    let max_out_slices = max_out_slices.min(max_floats / out_plane.max(1));
    if max_out_slices == 0 {
        return Err(Error::TooLarge {
            op,
            bytes: (plane * 4 * 3) as u64,
            limit: gpu.max_binding_bytes(),
            which: "max_storage_buffer_binding_size (a few z-slices)",
        });
    }
    let mut data = Vec::with_capacity(dims.iter().product());
    let mut oz0 = 0;
    while oz0 < dims[2] {
        let oz1 = (oz0 + max_out_slices).min(dims[2]);
        let z0 = ((oz0 as f64 * ratio[2]).floor() as usize).min(nz - 1);
        let z1 = (((oz1 - 1) as f64 * ratio[2]).floor() as usize + 2).min(nz);
        let slab = crate::Tensor::from_slice(
            gpu,
            &vol.data[z0 * plane..z1 * plane],
            &[1, z1 - z0, ny, nx, 1],
        )?;
        let out = gpu.no_grad(|| {
            crate::ops::resample::resample_scaled_from(
                &slab,
                [oz1 - oz0, dims[1], dims[0]],
                [ratio[2], ratio[1], ratio[0]],
                [oz0 as f64 * ratio[2] - z0 as f64, 0.0, 0.0],
                interp == Interp::Linear,
            )
        })?;
        data.extend(out.to_vec()?);
        oz0 = oz1;
    }
    Volume::new(data, dims, affine, datatype)
}

/// (step ratio per voxel axis, new dims, new affine, datatype) of resampling `vol` to `target_mm`.
fn spacing_geometry(
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
    let ratio: [f64; 3] = std::array::from_fn(|a| target_mm[a] / vol.spacing[a]);
    let dims: [usize; 3] =
        std::array::from_fn(|a| ((vol.dims[a] as f64 / ratio[a]).round() as usize).max(1));
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

/// One CADS tile: `[d0, d0 + d) × [h0, h0 + h) × [w0, w0 + w)` of a `[D, H, W]` volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub start: [usize; 3],
    pub size: [usize; 3],
}

/// CADS tiling parameters (CADS.md: 24-slice tiles, stride 12, central 80% when a side > 320).
#[derive(Clone, Debug)]
pub struct TilingConfig {
    pub depth: usize,
    pub stride: usize,
    pub max_side: usize,
    pub keep_fraction: f64,
}

impl Default for TilingConfig {
    fn default() -> Self {
        TilingConfig {
            depth: 24,
            stride: 12,
            max_side: 320,
            keep_fraction: 0.8,
        }
    }
}

/// The tiles of a `[D, H, W]` volume (already at 1 mm): depth starts `0, stride, …` while a full
/// tile fits (a volume shallower than one tile gives one tile of its whole depth, padded later by
/// the sampler); in-plane the whole side, or its central `keep_fraction` when it exceeds
/// `max_side`.
pub fn cads_tiles(shape: [usize; 3], cfg: &TilingConfig) -> Result<Vec<Tile>> {
    if cfg.depth == 0 || cfg.stride == 0 || !(cfg.keep_fraction > 0.0 && cfg.keep_fraction <= 1.0) {
        return Err(Error::invalid(
            "cads_tiles",
            "depth, stride > 0 and keep_fraction in (0, 1]",
            format!("{cfg:?}"),
        ));
    }
    if shape.contains(&0) {
        return Err(Error::invalid(
            "cads_tiles",
            "a non-empty volume",
            format!("{shape:?}"),
        ));
    }
    let side = |n: usize| -> (usize, usize) {
        if n > cfg.max_side {
            let keep = ((n as f64 * cfg.keep_fraction).round() as usize).max(1);
            ((n - keep) / 2, keep)
        } else {
            (0, n)
        }
    };
    let (h0, h) = side(shape[1]);
    let (w0, w) = side(shape[2]);
    let mut out = Vec::new();
    if shape[0] <= cfg.depth {
        out.push(Tile {
            start: [0, h0, w0],
            size: [shape[0], h, w],
        });
    } else {
        let mut d0 = 0;
        while d0 + cfg.depth <= shape[0] {
            out.push(Tile {
                start: [d0, h0, w0],
                size: [cfg.depth, h, w],
            });
            d0 += cfg.stride;
        }
    }
    Ok(out)
}

/// Extract a tile.
pub fn extract_tile(src: &Patch, t: &Tile) -> Patch {
    crop_pad(src, t.start.map(|s| s as isize), t.size, 0.0)
}
