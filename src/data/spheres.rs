//! Synthetic segmentation volumes: random balls in noise, the smallest 3D segmentation task that
//! needs spatial context (a per-voxel threshold is not enough once the noise is strong).
//!
//! Each volume `[D, H, W]` (voxels) gets a random background level b ~ U(−β, β), then
//! `count ~ U{min..=max}` balls with centre c uniform over the voxels at least r/2 from every
//! face and radius r ~ U(r_lo, r_hi). A voxel p (integer index) is foreground iff
//! ‖p − c‖² ≤ r² for some ball. Intensity:
//!   image(p) = b + Σ_balls∋p κ_ball + σ·ε(p),   κ_ball ~ U(κ_lo, κ_hi), ε ~ N(0, 1) i.i.d.
//! (overlapping balls add up). The mask is exact; the noise goes into the image only.

use crate::error::{Error, Result};
use crate::util::Rng;

/// Size, ball count/radius, contrast and noise of the generated volumes.
#[derive(Clone, Debug, PartialEq)]
pub struct SphereConfig {
    /// `[D, H, W]` in voxels.
    pub size: [usize; 3],
    /// Inclusive range of the number of balls per volume.
    pub count: (usize, usize),
    /// Radius range in voxels, `[lo, hi)`.
    pub radius: (f64, f64),
    /// Foreground contrast κ range above the background, `[lo, hi)`.
    pub contrast: (f64, f64),
    /// Half-width β of the per-volume background level U(−β, β).
    pub background: f64,
    /// Standard deviation σ of the additive Gaussian noise.
    pub noise_std: f64,
}

impl Default for SphereConfig {
    /// 16³ voxels, 1–3 balls of radius 3–5.5 voxels, contrast 0.6–1.2 under noise σ 0.5: the
    /// best single intensity threshold per volume reaches Dice ≈ 0.65 (tests/unet_spheres.rs).
    fn default() -> Self {
        SphereConfig {
            size: [16; 3],
            count: (1, 3),
            radius: (3.0, 5.5),
            contrast: (0.6, 1.2),
            background: 0.5,
            noise_std: 0.5,
        }
    }
}

impl SphereConfig {
    fn validate(&self) -> Result<()> {
        let op = "SphereConfig";
        let (r_lo, r_hi) = self.radius;
        let min_extent = *self.size.iter().min().unwrap_or(&0);
        if min_extent == 0 {
            return Err(Error::invalid(
                op,
                "non-zero size",
                format!("{:?}", self.size),
            ));
        }
        if !(r_lo > 0.0 && r_lo <= r_hi && r_hi < min_extent as f64) {
            return Err(Error::invalid(
                op,
                format!("0 < radius lo <= hi < smallest extent {min_extent}"),
                format!("{:?}", self.radius),
            ));
        }
        if self.count.0 > self.count.1 {
            return Err(Error::invalid(
                op,
                "count lo <= hi",
                format!("{:?}", self.count),
            ));
        }
        let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !(finite_non_negative(self.noise_std)
            && finite_non_negative(self.background)
            && self.contrast.0.is_finite()
            && self.contrast.0 <= self.contrast.1
            && self.contrast.1.is_finite())
        {
            return Err(Error::invalid(
                op,
                "finite noise_std, background >= 0 and contrast lo <= hi",
                format!(
                    "noise {}, background {}, contrast {:?}",
                    self.noise_std, self.background, self.contrast
                ),
            ));
        }
        Ok(())
    }

    /// Voxels per volume, D·H·W.
    pub fn voxels(&self) -> usize {
        self.size.iter().product()
    }
}

/// One generated volume, both `[D, H, W]` row-major (W fastest).
///
/// See the crate docs, [Axis conventions](crate#axis-conventions).
#[derive(Clone, Debug, PartialEq)]
pub struct SphereVolume {
    pub image: Vec<f32>,
    /// 1 inside a ball, 0 outside.
    pub mask: Vec<u8>,
}

/// One volume drawn from `rng` (see the module docs for the distribution).
pub fn sphere_volume(cfg: &SphereConfig, rng: &mut Rng) -> Result<SphereVolume> {
    cfg.validate()?;
    let [d, h, w] = cfg.size;
    let n = cfg.voxels();
    let background = rng.range(-cfg.background, cfg.background);
    let mut image = vec![background; n];
    let mut mask = vec![0u8; n];
    let count = cfg.count.0 + rng.below(cfg.count.1 - cfg.count.0 + 1);
    for _ in 0..count {
        let r = rng.range(cfg.radius.0, cfg.radius.1);
        let kappa = rng.range(cfg.contrast.0, cfg.contrast.1);
        // Centre at least r/2 from each face (validate() ensures r < extent, so lo < hi).
        let c: [f64; 3] = std::array::from_fn(|a| {
            let extent = cfg.size[a] as f64 - 1.0;
            rng.range(0.5 * r, (extent - 0.5 * r).max(0.5 * r))
        });
        // Only the ball's bounding box can be inside.
        let lo = |a: usize| (c[a] - r).floor().max(0.0) as usize;
        let hi = |a: usize, e: usize| ((c[a] + r).ceil() as usize).min(e - 1);
        for z in lo(0)..=hi(0, d) {
            for y in lo(1)..=hi(1, h) {
                for x in lo(2)..=hi(2, w) {
                    let dist2 = (z as f64 - c[0]).powi(2)
                        + (y as f64 - c[1]).powi(2)
                        + (x as f64 - c[2]).powi(2);
                    if dist2 <= r * r {
                        let i = (z * h + y) * w + x;
                        mask[i] = 1;
                        image[i] += kappa;
                    }
                }
            }
        }
    }
    let image = image
        .into_iter()
        .map(|v| (v + cfg.noise_std * rng.normal()) as f32)
        .collect();
    Ok(SphereVolume { image, mask })
}

/// A batch of `n` volumes as the network takes them: image `[N, D, H, W, 1]` (channels-last,
/// one channel) and one class label per voxel (0 background, 1 foreground), in the same order.
pub fn sphere_batch(cfg: &SphereConfig, n: usize, rng: &mut Rng) -> Result<(Vec<f32>, Vec<usize>)> {
    if n == 0 {
        return Err(Error::invalid("sphere_batch", "n >= 1 volumes", n));
    }
    let mut image = Vec::with_capacity(n * cfg.voxels());
    let mut labels = Vec::with_capacity(n * cfg.voxels());
    for _ in 0..n {
        let v = sphere_volume(cfg, rng)?;
        image.extend_from_slice(&v.image);
        labels.extend(v.mask.iter().map(|&m| m as usize));
    }
    Ok((image, labels))
}
