//! Seeded CPU augmentation on [`Patch`]es (`[D, H, W]`): random crops with foreground
//! oversampling, flips, in-plane rotation and scaling, Gaussian noise and blur, multiplicative and
//! additive brightness, contrast and gamma. Every random draw comes from the caller's [`Rng`], so a
//! seed fixes the output.

use super::preprocess::{crop_pad, sample, Interp, Patch};
use crate::error::{Error, Result};
use crate::util::Rng;

/// Reverse the axes marked true.
pub fn flip(p: &Patch, axes: [bool; 3]) -> Patch {
    let s = p.shape;
    let mut out = Vec::with_capacity(p.data.len());
    for d in 0..s[0] {
        let sd = if axes[0] { s[0] - 1 - d } else { d };
        for h in 0..s[1] {
            let sh = if axes[1] { s[1] - 1 - h } else { h };
            for w in 0..s[2] {
                let sw = if axes[2] { s[2] - 1 - w } else { w };
                out.push(p.at(sd, sh, sw));
            }
        }
    }
    Patch {
        data: out,
        shape: s,
    }
}

/// Draw a flip of each axis with probability `prob` (independently).
pub fn draw_flips(prob: f64, rng: &mut Rng) -> [bool; 3] {
    [
        rng.bernoulli(prob),
        rng.bernoulli(prob),
        rng.bernoulli(prob),
    ]
}

/// Rotate in-plane (about the D axis) by `angle` radians and zoom by `scale` (> 1 enlarges),
/// around the patch centre; output voxel o reads `R(−angle) · (o − c) / scale + c`. Border
/// values are clamped (edge replicate).
pub fn rotate_scale(p: &Patch, angle: f64, scale: f64, interp: Interp) -> Result<Patch> {
    if !(scale.is_finite() && scale > 0.0 && angle.is_finite()) {
        return Err(Error::invalid(
            "rotate_scale",
            "finite angle and scale > 0",
            format!("{angle}, {scale}"),
        ));
    }
    let s = p.shape;
    let (ch, cw) = ((s[1] as f64 - 1.0) / 2.0, (s[2] as f64 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    let mut out = Vec::with_capacity(p.data.len());
    for d in 0..s[0] {
        for h in 0..s[1] {
            for w in 0..s[2] {
                let (y, x) = ((h as f64 - ch) / scale, (w as f64 - cw) / scale);
                let sh = cos * y + sin * x + ch;
                let sw = -sin * y + cos * x + cw;
                out.push(sample(p, d as f64, sh, sw, interp));
            }
        }
    }
    Ok(Patch {
        data: out,
        shape: s,
    })
}

/// Add N(0, sigma²) noise.
pub fn gaussian_noise(p: &mut Patch, sigma: f64, rng: &mut Rng) {
    for v in p.data.iter_mut() {
        *v += (rng.normal() * sigma) as f32;
    }
}

/// Separable Gaussian blur with standard deviation `sigma` voxels on each axis in `axes`
/// (kernel radius ⌈3σ⌉, normalised, edge replicate).
pub fn gaussian_blur(p: &Patch, sigma: f64, axes: [bool; 3]) -> Result<Patch> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::invalid("gaussian_blur", "sigma > 0", sigma));
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let ks: f64 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| (v / ks) as f32).collect();
    let mut cur = p.clone();
    let s = p.shape;
    let strides = [s[1] * s[2], s[2], 1];
    for axis in 0..3 {
        if !axes[axis] || s[axis] == 1 {
            continue;
        }
        let n = s[axis] as isize;
        let st = strides[axis];
        let mut out = vec![0f32; cur.data.len()];
        for (idx, o) in out.iter_mut().enumerate() {
            let pos = ((idx / st) % s[axis]) as isize;
            let base = idx - pos as usize * st;
            let mut acc = 0f32;
            for (t, kv) in k.iter().enumerate() {
                let q = (pos + t as isize - r).clamp(0, n - 1) as usize;
                acc += kv * cur.data[base + q * st];
            }
            *o = acc;
        }
        cur.data = out;
    }
    Ok(cur)
}

/// `x ← x · factor`.
pub fn brightness_multiplicative(p: &mut Patch, factor: f32) {
    p.data.iter_mut().for_each(|v| *v *= factor);
}

/// `x ← x + offset`.
pub fn brightness_additive(p: &mut Patch, offset: f32) {
    p.data.iter_mut().for_each(|v| *v += offset);
}

/// `x ← (x − mean) · factor + mean`, clipped to the patch's original [min, max] (nnU-Net's
/// `preserve_range`).
pub fn contrast(p: &mut Patch, factor: f32) {
    let mean = p.mean() as f32;
    let (lo, hi) = min_max(&p.data);
    p.data
        .iter_mut()
        .for_each(|v| *v = ((*v - mean) * factor + mean).clamp(lo, hi));
}

/// `x ← lo + (hi − lo) · ((x − lo) / (hi − lo))^gamma` over the patch's [lo, hi]; a constant
/// patch is unchanged.
pub fn gamma(p: &mut Patch, g: f32) {
    let (lo, hi) = min_max(&p.data);
    let range = hi - lo;
    if range <= 0.0 {
        return;
    }
    p.data
        .iter_mut()
        .for_each(|v| *v = lo + range * ((*v - lo) / range).clamp(0.0, 1.0).powf(g));
}

fn min_max(d: &[f32]) -> (f32, f32) {
    d.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        })
}

/// Intensity augmentation parameters: each transform is applied with its probability, with a
/// parameter drawn from its range. Defaults are CADS.md's ranges; the probabilities were not
/// published (inferred from nnU-Net's defaults).
#[derive(Clone, Debug)]
pub struct IntensityAug {
    /// Noise σ ~ U(0, noise_sigma_max).
    pub noise_sigma_max: f64,
    pub noise_p: f64,
    /// Blur σ ~ U(lo, hi) voxels, in-plane and across slices.
    pub blur_sigma: (f64, f64),
    pub blur_p: f64,
    /// Factor ~ U(lo, hi).
    pub mul_brightness: (f64, f64),
    pub mul_brightness_p: f64,
    /// Offset ~ N(0, std).
    pub add_brightness_std: f64,
    pub add_brightness_p: f64,
    /// Factor ~ U(lo, hi).
    pub contrast: (f64, f64),
    pub contrast_p: f64,
    /// Gamma ~ U(lo, hi).
    pub gamma: (f64, f64),
    pub gamma_p: f64,
}

impl Default for IntensityAug {
    fn default() -> Self {
        IntensityAug {
            noise_sigma_max: 0.1,
            noise_p: 0.1,
            blur_sigma: (0.1, 2.0),
            blur_p: 0.2,
            mul_brightness: (0.75, 1.25),
            mul_brightness_p: 0.15,
            add_brightness_std: 0.4,
            add_brightness_p: 0.15,
            contrast: (0.75, 1.25),
            contrast_p: 0.15,
            gamma: (0.7, 1.5),
            gamma_p: 0.3,
        }
    }
}

/// What [`IntensityAug::apply`] did (None = not applied), for logs and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntensityDraw {
    pub noise_sigma: Option<f64>,
    pub blur_sigma: Option<f64>,
    pub mul_brightness: Option<f64>,
    pub add_brightness: Option<f64>,
    pub contrast: Option<f64>,
    pub gamma: Option<f64>,
}

impl IntensityAug {
    /// Apply in the order noise, blur, multiplicative and additive brightness, contrast, gamma.
    pub fn apply(&self, p: &mut Patch, rng: &mut Rng) -> Result<IntensityDraw> {
        let mut draw = IntensityDraw::default();
        if rng.bernoulli(self.noise_p) {
            let s = rng.range(0.0, self.noise_sigma_max);
            gaussian_noise(p, s, rng);
            draw.noise_sigma = Some(s);
        }
        if rng.bernoulli(self.blur_p) {
            let s = rng.range(self.blur_sigma.0, self.blur_sigma.1);
            *p = gaussian_blur(p, s, [true; 3])?;
            draw.blur_sigma = Some(s);
        }
        if rng.bernoulli(self.mul_brightness_p) {
            let f = rng.range(self.mul_brightness.0, self.mul_brightness.1);
            brightness_multiplicative(p, f as f32);
            draw.mul_brightness = Some(f);
        }
        if rng.bernoulli(self.add_brightness_p) {
            let a = rng.normal() * self.add_brightness_std;
            brightness_additive(p, a as f32);
            draw.add_brightness = Some(a);
        }
        if rng.bernoulli(self.contrast_p) {
            let f = rng.range(self.contrast.0, self.contrast.1);
            contrast(p, f as f32);
            draw.contrast = Some(f);
        }
        if rng.bernoulli(self.gamma_p) {
            let g = rng.range(self.gamma.0, self.gamma.1);
            gamma(p, g as f32);
            draw.gamma = Some(g);
        }
        Ok(draw)
    }
}

/// A random crop of `size` from an image and its labels; with probability `fg_prob` the crop is
/// centred on a uniformly chosen foreground voxel (label > 0, when there is one), otherwise its
/// start is uniform over all positions that keep it inside (or centred, when the volume is smaller
/// on an axis). Outside the volume the image reads `pad` and the label 0.
pub fn random_crop_foreground(
    image: &Patch,
    label: &Patch,
    size: [usize; 3],
    fg_prob: f64,
    pad: f32,
    rng: &mut Rng,
) -> Result<(Patch, Patch)> {
    random_crop_foreground_indexed(
        image,
        label,
        &foreground_indices(label),
        size,
        fg_prob,
        pad,
        rng,
    )
}

/// Flat indices of the voxels with label > 0 (compute once per case for
/// [`random_crop_foreground_indexed`]).
pub fn foreground_indices(label: &Patch) -> Vec<u32> {
    label
        .data
        .iter()
        .enumerate()
        .filter(|(_, &v)| v > 0.0)
        .map(|(i, _)| i as u32)
        .collect()
}

/// [`random_crop_foreground`] with the foreground voxels listed in advance (`fg`, from
/// [`foreground_indices`]), which saves a scan of the whole labelmap per crop.
pub fn random_crop_foreground_indexed(
    image: &Patch,
    label: &Patch,
    fg: &[u32],
    size: [usize; 3],
    fg_prob: f64,
    pad: f32,
    rng: &mut Rng,
) -> Result<(Patch, Patch)> {
    if image.shape != label.shape {
        return Err(Error::shape(
            "random_crop_foreground",
            image.shape,
            label.shape,
        ));
    }
    if image.data.len() > u32::MAX as usize || fg.iter().any(|&i| i as usize >= label.data.len()) {
        return Err(Error::invalid(
            "random_crop_foreground",
            "foreground indices inside the label (< 2³² voxels)",
            fg.len(),
        ));
    }
    let s = image.shape;
    let start: [isize; 3] = if rng.bernoulli(fg_prob) {
        if fg.is_empty() {
            uniform_start(s, size, rng)
        } else {
            let i = fg[rng.below(fg.len())] as usize;
            let c = [i / (s[1] * s[2]), (i / s[2]) % s[1], i % s[2]];
            // Centre on the voxel, then shift inside the volume where the volume is big enough.
            std::array::from_fn(|a| {
                let st = c[a] as isize - (size[a] / 2) as isize;
                if s[a] >= size[a] {
                    st.clamp(0, (s[a] - size[a]) as isize)
                } else {
                    st
                }
            })
        }
    } else {
        uniform_start(s, size, rng)
    };
    Ok((
        crop_pad(image, start, size, pad),
        crop_pad(label, start, size, 0.0),
    ))
}

fn uniform_start(s: [usize; 3], size: [usize; 3], rng: &mut Rng) -> [isize; 3] {
    std::array::from_fn(|a| {
        if s[a] >= size[a] {
            rng.below(s[a] - size[a] + 1) as isize
        } else {
            -(((size[a] - s[a]) / 2) as isize)
        }
    })
}
