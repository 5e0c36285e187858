//! Sliding-window inference with Gaussian importance weighting (nnU-Net's scheme).
//!
//! A volume `[D, H, W]` (one input channel, the CT) is covered by windows of the patch size
//! `[pD, pH, pW]`; the network sees `B` windows at a time (`[B, pD, pH, pW, 1]`, channels-last)
//! and returns logits `[B, pD, pH, pW, K]`. Per voxel x the output is the weighted mean
//!
//! ```text
//! logits(x) = Σ_w g(x − o_w) · z_w(x − o_w) / Σ_w g(x − o_w)
//! ```
//!
//! over the windows w (offset `o_w`) that contain x, with the importance map
//! `g(p) = Π_a exp(−(p_a − c_a)² / (2σ_a²))`, `c_a = (p_a − 1)/2` the patch centre and
//! `σ_a = patch_a · sigma_scale` (nnU-Net: 1/8), normalised to a maximum of 1. Centre voxels of a
//! window see the most context, so they count most; the border of a window is down-weighted.
//! nnU-Net builds g with a truncated Gaussian filter, which leaves zeros in far corners, and then
//! replaces every zero by the smallest non-zero weight so that each voxel has a positive weight; we
//! evaluate the Gaussian analytically and apply the same clamp (with σ = 1/8 nothing underflows in
//! f32; it matters for small `sigma_scale`).
//!
//! Window offsets per axis (nnU-Net's `compute_steps_for_sliding_window`): with the target step
//! `t = patch·(1 − overlap)`, `n = ⌈(size − patch)/t⌉ + 1` windows spaced evenly,
//! `o_i = round(i·(size − patch)/(n − 1))`, so the first window starts at 0, the last ends at the
//! border, and consecutive windows overlap by at least `overlap` of the patch.
//!
//! Mirroring test-time augmentation: for each subset F of the allowed axes (2^k subsets, 8 for all
//! three) the window is flipped along F, run, and the logits flipped back; the logits are averaged
//! over the subsets. g is symmetric, so flips commute with the weighting.
//!
//! A volume smaller than the patch along an axis is padded (centred, with `pad_value`, nnU-Net: 0
//! in normalised units, the foreground mean) to the patch, run, and cropped back.
//!
//! Memory: the accumulators (`[D, H, W, K]` logits and `[D, H, W]` weights, f32) live on the host,
//! so the volume may be far larger than one storage binding; only the batch of windows and its
//! logits go to the device ([`tensor_forward`] checks them against the device limits).
//! The averaged logits are returned; [`softmax_channels_last`] turns them into probabilities.

use crate::data::preprocess::{crop_pad, Patch};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

/// A network on host data: input `[B, pD, pH, pW]` (one channel) → logits `[B, pD, pH, pW, K]`.
pub type HostForward<'a> = dyn FnMut(&[f32], [usize; 4]) -> Result<Vec<f32>> + 'a;

/// Sliding-window settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlidingWindowConfig {
    /// Window `[D, H, W]` voxels (the plan's patch).
    pub patch: [usize; 3],
    /// Fraction of a window shared with its neighbour, in [0, 1) (nnU-Net: 0.5).
    pub overlap: f64,
    /// Windows per forward.
    pub batch: usize,
    /// Axes (D, H, W) that mirroring TTA may flip; all false = no TTA.
    pub mirror_axes: [bool; 3],
    /// σ of the importance Gaussian as a fraction of the patch (nnU-Net: 1/8).
    pub sigma_scale: f64,
    /// Value of the padding around volumes smaller than the patch.
    pub pad_value: f32,
}

impl SlidingWindowConfig {
    /// nnU-Net's defaults for a patch: overlap 0.5, σ = 1/8, no mirroring, batch 1.
    pub fn new(patch: [usize; 3]) -> SlidingWindowConfig {
        SlidingWindowConfig {
            patch,
            overlap: 0.5,
            batch: 1,
            mirror_axes: [false; 3],
            sigma_scale: 0.125,
            pad_value: 0.0,
        }
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        if self.patch.contains(&0) {
            return Err(Error::invalid(
                op,
                "a non-zero patch",
                format!("{:?}", self.patch),
            ));
        }
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(Error::invalid(op, "overlap in [0, 1)", self.overlap));
        }
        if self.batch == 0 {
            return Err(Error::invalid(op, "batch ≥ 1", 0));
        }
        if !(self.sigma_scale.is_finite() && self.sigma_scale > 0.0) {
            return Err(Error::invalid(op, "sigma_scale > 0", self.sigma_scale));
        }
        if !self.pad_value.is_finite() {
            return Err(Error::invalid(op, "a finite pad value", self.pad_value));
        }
        Ok(())
    }

    /// The flips of mirroring TTA: every subset of `mirror_axes`, the identity first.
    pub fn flips(&self) -> Vec<[bool; 3]> {
        let axes: Vec<usize> = (0..3).filter(|&a| self.mirror_axes[a]).collect();
        (0..1usize << axes.len())
            .map(|m| {
                let mut f = [false; 3];
                for (bit, &a) in axes.iter().enumerate() {
                    f[a] = m >> bit & 1 == 1;
                }
                f
            })
            .collect()
    }
}

/// Window start offsets along one axis of `size` voxels (`size ≥ patch`), see the module docs.
pub fn window_starts(size: usize, patch: usize, overlap: f64) -> Result<Vec<usize>> {
    const OP: &str = "window_starts";
    if patch == 0 || size < patch {
        return Err(Error::invalid(
            OP,
            "a non-zero patch no larger than the (padded) size",
            format!("patch {patch}, size {size}"),
        ));
    }
    if !(0.0..1.0).contains(&overlap) {
        return Err(Error::invalid(OP, "overlap in [0, 1)", overlap));
    }
    let target = (patch as f64 * (1.0 - overlap)).max(1.0);
    let n = ((size - patch) as f64 / target).ceil() as usize + 1;
    if n == 1 {
        return Ok(vec![0]);
    }
    let step = (size - patch) as f64 / (n - 1) as f64;
    Ok((0..n).map(|i| (step * i as f64).round() as usize).collect())
}

/// Every window offset `[d, h, w]` over a volume of `shape` (already padded to ≥ the patch).
pub fn window_offsets(shape: [usize; 3], cfg: &SlidingWindowConfig) -> Result<Vec<[usize; 3]>> {
    let s: Vec<Vec<usize>> = (0..3)
        .map(|a| window_starts(shape[a], cfg.patch[a], cfg.overlap))
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(s[0].len() * s[1].len() * s[2].len());
    for &d in &s[0] {
        for &h in &s[1] {
            for &w in &s[2] {
                out.push([d, h, w]);
            }
        }
    }
    Ok(out)
}

/// The importance map `[pD, pH, pW]` (see the module docs): maximum 1, every weight > 0.
pub fn gaussian_weights(patch: [usize; 3], sigma_scale: f64) -> Result<Vec<f32>> {
    const OP: &str = "gaussian_weights";
    if patch.contains(&0) || !(sigma_scale.is_finite() && sigma_scale > 0.0) {
        return Err(Error::invalid(
            OP,
            "a non-zero patch and sigma_scale > 0",
            format!("patch {patch:?}, sigma_scale {sigma_scale}"),
        ));
    }
    let profile = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let sigma = n as f64 * sigma_scale;
        let g: Vec<f64> = (0..n)
            .map(|i| (-(i as f64 - c).powi(2) / (2.0 * sigma * sigma)).exp())
            .collect();
        let max = g.iter().cloned().fold(0.0, f64::max);
        g.into_iter().map(|v| v / max).collect()
    };
    let (gd, gh, gw) = (profile(patch[0]), profile(patch[1]), profile(patch[2]));
    let mut out = Vec::with_capacity(patch.iter().product());
    for a in &gd {
        for b in &gh {
            for c in &gw {
                out.push((a * b * c) as f32);
            }
        }
    }
    let floor = out
        .iter()
        .cloned()
        .filter(|&v| v > 0.0)
        .fold(f32::INFINITY, f32::min);
    for v in out.iter_mut() {
        if *v <= 0.0 {
            *v = floor;
        }
    }
    Ok(out)
}

/// Averaged logits of a whole volume.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeLogits {
    /// `[D, H, W, K]`, K fastest.
    pub data: Vec<f32>,
    /// `[D, H, W]`.
    pub shape: [usize; 3],
    pub classes: usize,
}

/// Run `forward` over `image` window by window and return the Gaussian-weighted mean logits
/// (see the module docs). `classes` = K, the channels the network returns.
pub fn sliding_window(
    image: &Patch,
    classes: usize,
    cfg: &SlidingWindowConfig,
    forward: &mut HostForward,
) -> Result<VolumeLogits> {
    const OP: &str = "sliding_window";
    cfg.validate(OP)?;
    if classes == 0
        || image.shape.contains(&0)
        || image.data.len() != image.shape.iter().product::<usize>()
    {
        return Err(Error::invalid(
            OP,
            "K ≥ 1 classes and a non-empty image whose data matches its shape",
            format!(
                "K = {classes}, shape {:?}, {} values",
                image.shape,
                image.data.len()
            ),
        ));
    }
    let p = cfg.patch;
    // Pad (centred) to at least the patch.
    let padded_shape: [usize; 3] = std::array::from_fn(|a| image.shape[a].max(p[a]));
    let before: [usize; 3] = std::array::from_fn(|a| (padded_shape[a] - image.shape[a]) / 2);
    let padded = if padded_shape == image.shape {
        None
    } else {
        Some(crop_pad(
            image,
            std::array::from_fn(|a| -(before[a] as isize)),
            padded_shape,
            cfg.pad_value,
        ))
    };
    let vol = padded.as_ref().unwrap_or(image);
    let [sd, sh, sw] = padded_shape;
    let voxels = sd * sh * sw;
    let k = classes;
    let acc_len = voxels.checked_mul(k).ok_or_else(|| {
        Error::invalid(
            OP,
            "a volume whose logits fit in memory",
            format!("{padded_shape:?} × {k}"),
        )
    })?;
    let mut acc = vec![0.0f32; acc_len];
    let mut weight = vec![0.0f32; voxels];
    let g = gaussian_weights(p, cfg.sigma_scale)?;
    let offsets = window_offsets(padded_shape, cfg)?;
    let flips = cfg.flips();
    let tta = 1.0 / flips.len() as f32;
    let pv: usize = p.iter().product();
    let [pd, ph, pw] = p;
    let mut input = Vec::with_capacity(cfg.batch * pv);
    for chunk in offsets.chunks(cfg.batch) {
        let b = chunk.len();
        for f in &flips {
            // Gather the windows, flipped along f: window voxel (d, h, w) reads source voxel
            // o + (f_d ? pd−1−d : d, …).
            input.clear();
            for o in chunk {
                for d in 0..pd {
                    let sd_ = o[0] + if f[0] { pd - 1 - d } else { d };
                    for h in 0..ph {
                        let sh_ = o[1] + if f[1] { ph - 1 - h } else { h };
                        let row = (sd_ * sh + sh_) * sw + o[2];
                        if f[2] {
                            input.extend(vol.data[row..row + pw].iter().rev());
                        } else {
                            input.extend_from_slice(&vol.data[row..row + pw]);
                        }
                    }
                }
            }
            let logits = forward(&input, [b, pd, ph, pw])?;
            if logits.len() != b * pv * k {
                return Err(Error::shape(
                    OP,
                    format!("network logits [{b}, {pd}, {ph}, {pw}, {k}]"),
                    format!("{} values", logits.len()),
                ));
            }
            // Scatter back: the logit at window voxel (d, h, w) of the flipped input belongs to
            // source voxel o + flip(d, h, w) (a flip is its own inverse).
            for (wi, o) in chunk.iter().enumerate() {
                for d in 0..pd {
                    let td = o[0] + if f[0] { pd - 1 - d } else { d };
                    for h in 0..ph {
                        let th = o[1] + if f[1] { ph - 1 - h } else { h };
                        for w in 0..pw {
                            let tw = o[2] + if f[2] { pw - 1 - w } else { w };
                            let src = ((wi * pd + d) * ph + h) * pw + w;
                            let dst = (td * sh + th) * sw + tw;
                            // g is symmetric: its value at the flipped position is the same.
                            let gw = g[(d * ph + h) * pw + w] * tta;
                            let a = &mut acc[dst * k..dst * k + k];
                            for (c, av) in a.iter_mut().enumerate() {
                                *av += gw * logits[src * k + c];
                            }
                        }
                    }
                }
            }
        }
        for o in chunk {
            for d in 0..pd {
                for h in 0..ph {
                    let row = ((o[0] + d) * sh + o[1] + h) * sw + o[2];
                    let grow = (d * ph + h) * pw;
                    for w in 0..pw {
                        weight[row + w] += g[grow + w];
                    }
                }
            }
        }
    }
    // Normalise and crop the padding away.
    let [od, oh, ow] = image.shape;
    let mut data = Vec::with_capacity(od * oh * ow * k);
    for d in 0..od {
        for h in 0..oh {
            for w in 0..ow {
                let i = ((d + before[0]) * sh + h + before[1]) * sw + w + before[2];
                let inv = 1.0 / weight[i];
                data.extend(acc[i * k..i * k + k].iter().map(|v| v * inv));
            }
        }
    }
    Ok(VolumeLogits {
        data,
        shape: image.shape,
        classes: k,
    })
}

/// Softmax over the last axis of channels-last logits `[.., K]`, in place (max-subtracted).
pub fn softmax_channels_last(logits: &mut [f32], classes: usize) -> Result<()> {
    if classes == 0 || !logits.len().is_multiple_of(classes) {
        return Err(Error::shape(
            "softmax_channels_last",
            format!("a multiple of K = {classes} values (K ≥ 1)"),
            format!("{} values", logits.len()),
        ));
    }
    for row in logits.chunks_exact_mut(classes) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        for v in row.iter_mut() {
            *v /= s;
        }
    }
    Ok(())
}

/// Adapt a GPU network `net: [B, D, H, W, 1] → [B, D, H, W, K]` to a [`HostForward`]: uploads the
/// batch (checked against the device limits by [`Tensor::from_slice`]), runs `net` with autograd
/// off, checks the logits' shape and reads them back.
pub fn tensor_forward<'a>(
    gpu: &'a Gpu,
    classes: usize,
    net: &'a dyn Fn(&Tensor) -> Result<Tensor>,
) -> impl FnMut(&[f32], [usize; 4]) -> Result<Vec<f32>> + 'a {
    move |input: &[f32], [b, d, h, w]: [usize; 4]| {
        gpu.no_grad(|| {
            let x = Tensor::from_slice(gpu, input, &[b, d, h, w, 1])?;
            let y = net(&x)?;
            if y.shape() != [b, d, h, w, classes] {
                return Err(Error::shape(
                    "sliding_window network",
                    [b, d, h, w, classes],
                    y.shape(),
                ));
            }
            y.to_vec()
        })
    }
}
