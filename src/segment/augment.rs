//! nnU-Net's training augmentation and patch sampling, on the host (CPU, in the prefetcher's
//! worker threads, overlapping the GPU step; a patch of 64×160×160 takes tens of milliseconds
//! per transform, well under a PVT-UNet step), seeded by the caller's [`Rng`].
//!
//! Order and probabilities are nnU-Net v2's defaults (`nnUNetTrainer.get_training_transforms`):
//!
//! | transform | probability | parameter |
//! |---|---|---|
//! | rotation about each axis (3D) | 0.2 (per patch) | angle ~ U(−30°, 30°) per axis |
//! | scaling | 0.2 | s ~ U(0.7, 1.4) (source coordinates × s: s < 1 zooms in) |
//! | Gaussian noise | 0.1 | variance ~ U(0, 0.1) |
//! | Gaussian blur | 0.2 | σ ~ U(0.5, 1) voxels |
//! | multiplicative brightness | 0.15 | factor ~ U(0.75, 1.25) |
//! | contrast | 0.15 | factor ~ U(0.75, 1.25), range preserved |
//! | low resolution | 0.25 | zoom ~ U(0.5, 1): nearest down, linear up |
//! | gamma on the inverted image | 0.1 | γ ~ U(0.7, 1.5), mean and std kept |
//! | gamma | 0.3 | γ ~ U(0.7, 1.5), mean and std kept |
//! | mirroring | 0.5 per axis | D, H, W |
//!
//! (nnU-Net applies blur and low resolution per channel with probability 0.5; with one CT
//! channel that multiplies into the patch probabilities above: blur 0.1, low resolution 0.125.
//! The up-sampling of the low-resolution simulation is linear here, cubic in nnU-Net.)
//!
//! The spatial transform samples the patch straight from the case through the rotated and
//! scaled grid (as batchgenerators does), so a rotation never brings in padding from a
//! pre-cropped patch's corners: output voxel o (patch centre p) reads the case at
//! `c + s · R · (o − p)`, c the patch centre in the case, image trilinear, labels nearest.
//! Outside the case the image reads `pad` and the labels 0 (background).
//!
//! Foreground oversampling: with probability `foreground_p` (nnU-Net: 1/3) the patch centre is
//! a voxel of a foreground class, the class drawn uniformly among the classes present in the
//! case (so small organs are seen as often as large ones), the voxel uniformly among its voxels.
//! Otherwise the centre is uniform over the positions that keep the patch inside the case.

use crate::data::augment::{brightness_multiplicative, contrast, gaussian_blur, gaussian_noise};
use crate::data::preprocess::{resize, Interp, Patch};
use crate::error::{Error, Result};
use crate::util::Rng;

/// Probabilities and ranges of the augmentation (defaults: nnU-Net's, see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    pub rotation_p: f64,
    /// Maximum angle about each axis, degrees.
    pub rotation_max_deg: f64,
    pub scale_p: f64,
    pub scale: (f64, f64),
    pub noise_p: f64,
    /// Noise variance ~ U(0, noise_variance_max).
    pub noise_variance_max: f64,
    pub blur_p: f64,
    pub blur_sigma: (f64, f64),
    pub brightness_p: f64,
    pub brightness: (f64, f64),
    pub contrast_p: f64,
    pub contrast: (f64, f64),
    pub low_resolution_p: f64,
    pub low_resolution_zoom: (f64, f64),
    pub gamma_inverted_p: f64,
    pub gamma_p: f64,
    pub gamma: (f64, f64),
    /// Per axis (D, H, W).
    pub mirror_p: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            rotation_p: 0.2,
            rotation_max_deg: 30.0,
            scale_p: 0.2,
            scale: (0.7, 1.4),
            noise_p: 0.1,
            noise_variance_max: 0.1,
            blur_p: 0.2 * 0.5,
            blur_sigma: (0.5, 1.0),
            brightness_p: 0.15,
            brightness: (0.75, 1.25),
            contrast_p: 0.15,
            contrast: (0.75, 1.25),
            low_resolution_p: 0.25 * 0.5,
            low_resolution_zoom: (0.5, 1.0),
            gamma_inverted_p: 0.1,
            gamma_p: 0.3,
            gamma: (0.7, 1.5),
            mirror_p: 0.5,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all (plain crops), e.g. for a quick run or a test.
    pub fn none() -> AugmentConfig {
        AugmentConfig {
            rotation_p: 0.0,
            scale_p: 0.0,
            noise_p: 0.0,
            blur_p: 0.0,
            brightness_p: 0.0,
            contrast_p: 0.0,
            low_resolution_p: 0.0,
            gamma_inverted_p: 0.0,
            gamma_p: 0.0,
            mirror_p: 0.0,
            ..AugmentConfig::default()
        }
    }
}

/// A training case: its image and labels on one `[D, H, W]` grid, and the voxels of each
/// foreground class listed once (for oversampling).
#[derive(Clone, Debug)]
pub struct TrainingCase {
    pub image: Patch,
    /// Class indices 0..K as f32 (0 = background).
    pub label: Patch,
    /// `(class, flat voxel indices)` of every foreground class present, by class.
    pub class_voxels: Vec<(usize, Vec<u32>)>,
}

impl TrainingCase {
    /// Check the grids agree and the labels are classes `< classes`, and index the foreground.
    pub fn new(image: Patch, label: Patch, classes: usize) -> Result<TrainingCase> {
        let op = "TrainingCase::new";
        if image.shape != label.shape {
            return Err(Error::shape(op, image.shape, label.shape));
        }
        if label.data.len() > u32::MAX as usize {
            return Err(Error::invalid(
                op,
                "fewer than 2³² voxels",
                label.data.len(),
            ));
        }
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); classes];
        for (i, &v) in label.data.iter().enumerate() {
            let c = v as usize;
            if v < 0.0 || v.fract() != 0.0 || c >= classes {
                return Err(Error::invalid(
                    op,
                    format!("integer labels in 0..{classes}"),
                    format!("{v} at voxel {i}"),
                ));
            }
            if c > 0 {
                lists[c].push(i as u32);
            }
        }
        let class_voxels = lists
            .into_iter()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .collect();
        Ok(TrainingCase {
            image,
            label,
            class_voxels,
        })
    }
}

/// The 3×3 rotation `Rz(c) · Ry(b) · Rx(a)` about the D, H, W axes (angles in radians).
pub fn rotation_matrix(angles: [f64; 3]) -> [[f64; 3]; 3] {
    let mul = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
        let mut m = [[0.0; 3]; 3];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
            }
        }
        m
    };
    // Rotation by t in the plane of axes (i, j), fixing the third.
    let plane = |i: usize, j: usize, t: f64| {
        let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let (s, c) = t.sin_cos();
        m[i][i] = c;
        m[i][j] = -s;
        m[j][i] = s;
        m[j][j] = c;
        m
    };
    mul(
        plane(0, 1, angles[2]),
        mul(plane(0, 2, angles[1]), plane(1, 2, angles[0])),
    )
}

/// Sample a `size` patch of `case` centred at voxel `centre` through `s · R` (module docs).
pub fn sample_patch(
    case: &TrainingCase,
    centre: [f64; 3],
    rotation: [[f64; 3]; 3],
    scale: f64,
    size: [usize; 3],
    pad: f32,
) -> (Patch, Patch) {
    let s = case.image.shape;
    let n: usize = size.iter().product();
    let mut image = Vec::with_capacity(n);
    let mut label = Vec::with_capacity(n);
    let p: [f64; 3] = std::array::from_fn(|a| (size[a] as f64 - 1.0) / 2.0);
    let inside = |x: f64, a: usize| x > -0.5 && x < s[a] as f64 - 0.5;
    for d in 0..size[0] {
        for h in 0..size[1] {
            for w in 0..size[2] {
                let o = [d as f64 - p[0], h as f64 - p[1], w as f64 - p[2]];
                let src: [f64; 3] = std::array::from_fn(|i| {
                    centre[i] + scale * (0..3).map(|j| rotation[i][j] * o[j]).sum::<f64>()
                });
                if (0..3).all(|a| inside(src[a], a)) {
                    image.push(crate::data::preprocess::sample(
                        &case.image,
                        src[0],
                        src[1],
                        src[2],
                        Interp::Linear,
                    ));
                    label.push(crate::data::preprocess::sample(
                        &case.label,
                        src[0],
                        src[1],
                        src[2],
                        Interp::Nearest,
                    ));
                } else {
                    image.push(pad);
                    label.push(0.0);
                }
            }
        }
    }
    (
        Patch {
            data: image,
            shape: size,
        },
        Patch {
            data: label,
            shape: size,
        },
    )
}

/// The patch centre: a voxel of a random foreground class with probability `foreground_p`,
/// else uniform over the positions that keep the patch inside (the case centre on an axis
/// shorter than the patch). Returns the centre and whether it was forced onto foreground.
pub fn draw_centre(
    case: &TrainingCase,
    size: [usize; 3],
    foreground_p: f64,
    rng: &mut Rng,
) -> ([f64; 3], bool) {
    let s = case.image.shape;
    if rng.bernoulli(foreground_p) && !case.class_voxels.is_empty() {
        let (_, voxels) = &case.class_voxels[rng.below(case.class_voxels.len())];
        let i = voxels[rng.below(voxels.len())] as usize;
        let c = [i / (s[1] * s[2]), (i / s[2]) % s[1], i % s[2]];
        return (c.map(|v| v as f64), true);
    }
    let centre = std::array::from_fn(|a| {
        let half = (size[a] as f64 - 1.0) / 2.0;
        if s[a] >= size[a] {
            (rng.below(s[a] - size[a] + 1)) as f64 + half
        } else {
            (s[a] as f64 - 1.0) / 2.0
        }
    });
    (centre, false)
}

/// `x ← γ-transform` keeping the patch's mean and std (nnU-Net's `retain_stats`); with `invert`
/// the transform is applied to −x (brightening dark structures instead of bright ones).
pub fn gamma_retain_stats(p: &mut Patch, g: f64, invert: bool) {
    let n = p.data.len().max(1) as f64;
    let sign = if invert { -1.0f32 } else { 1.0 };
    p.data.iter_mut().for_each(|v| *v *= sign);
    let mean = p.data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (p
        .data
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let (lo, hi) = p
        .data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let range = (hi - lo) as f64;
    if range > 0.0 {
        for v in p.data.iter_mut() {
            *v = (lo as f64 + range * ((*v - lo) as f64 / range).powf(g)) as f32;
        }
        let m2 = p.data.iter().map(|&v| v as f64).sum::<f64>() / n;
        let s2 = (p.data.iter().map(|&v| (v as f64 - m2).powi(2)).sum::<f64>() / n).sqrt();
        if s2 > 0.0 {
            for v in p.data.iter_mut() {
                *v = ((*v as f64 - m2) / s2 * std + mean) as f32;
            }
        }
    }
    p.data.iter_mut().for_each(|v| *v *= sign);
}

/// Simulate a coarser scan: nearest down-sampling by `zoom` (< 1) and linear up-sampling back.
pub fn low_resolution(p: &Patch, zoom: f64) -> Result<Patch> {
    let small = p.shape.map(|e| ((e as f64 * zoom).round() as usize).max(1));
    resize(&resize(p, small, Interp::Nearest)?, p.shape, Interp::Linear)
}

/// One augmented training patch (image, labels) of `size` from `case`: centre (with
/// oversampling), spatial transform, intensity transforms, mirroring; the table of the module
/// docs, in its order.
pub fn augmented_patch(
    case: &TrainingCase,
    size: [usize; 3],
    foreground_p: f64,
    cfg: &AugmentConfig,
    pad: f32,
    rng: &mut Rng,
) -> Result<(Patch, Patch)> {
    let (centre, _) = draw_centre(case, size, foreground_p, rng);
    let rotation = if rng.bernoulli(cfg.rotation_p) {
        let m = cfg.rotation_max_deg.to_radians();
        rotation_matrix([rng.range(-m, m), rng.range(-m, m), rng.range(-m, m)])
    } else {
        rotation_matrix([0.0; 3])
    };
    let scale = if rng.bernoulli(cfg.scale_p) {
        rng.range(cfg.scale.0, cfg.scale.1)
    } else {
        1.0
    };
    let (mut image, mut label) = sample_patch(case, centre, rotation, scale, size, pad);
    if rng.bernoulli(cfg.noise_p) {
        let variance = rng.range(0.0, cfg.noise_variance_max);
        gaussian_noise(&mut image, variance.sqrt(), rng);
    }
    if rng.bernoulli(cfg.blur_p) {
        let sigma = rng.range(cfg.blur_sigma.0, cfg.blur_sigma.1);
        image = gaussian_blur(&image, sigma, [true; 3])?;
    }
    if rng.bernoulli(cfg.brightness_p) {
        brightness_multiplicative(
            &mut image,
            rng.range(cfg.brightness.0, cfg.brightness.1) as f32,
        );
    }
    if rng.bernoulli(cfg.contrast_p) {
        contrast(&mut image, rng.range(cfg.contrast.0, cfg.contrast.1) as f32);
    }
    if rng.bernoulli(cfg.low_resolution_p) {
        let zoom = rng.range(cfg.low_resolution_zoom.0, cfg.low_resolution_zoom.1);
        image = low_resolution(&image, zoom)?;
    }
    if rng.bernoulli(cfg.gamma_inverted_p) {
        gamma_retain_stats(&mut image, rng.range(cfg.gamma.0, cfg.gamma.1), true);
    }
    if rng.bernoulli(cfg.gamma_p) {
        gamma_retain_stats(&mut image, rng.range(cfg.gamma.0, cfg.gamma.1), false);
    }
    let mirror = [0; 3].map(|_| rng.bernoulli(cfg.mirror_p));
    if mirror.iter().any(|&m| m) {
        image = crate::data::augment::flip(&image, mirror);
        label = crate::data::augment::flip(&label, mirror);
    }
    Ok((image, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> TrainingCase {
        // 6×8×10 case: class 1 a block, class 2 a single voxel.
        let shape = [6, 8, 10];
        let n = 6 * 8 * 10;
        let image: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut label = vec![0.0f32; n];
        for d in 1..3 {
            for h in 2..5 {
                for w in 3..7 {
                    label[(d * 8 + h) * 10 + w] = 1.0;
                }
            }
        }
        label[(4 * 8 + 6) * 10 + 8] = 2.0;
        TrainingCase::new(
            Patch::new(image, shape).unwrap(),
            Patch::new(label, shape).unwrap(),
            3,
        )
        .unwrap()
    }

    #[test]
    fn identity_transform_is_a_crop() {
        let c = case();
        // Centre (2.5, 3.5, 4.5) of a 4×4×4 patch: the crop starting at (1, 2, 3).
        let (img, lab) = sample_patch(
            &c,
            [2.5, 3.5, 4.5],
            rotation_matrix([0.0; 3]),
            1.0,
            [4, 4, 4],
            -1.0,
        );
        for d in 0..4 {
            for h in 0..4 {
                for w in 0..4 {
                    let src = ((d + 1) * 8 + h + 2) * 10 + w + 3;
                    assert_eq!(img.at(d, h, w), src as f32);
                    assert_eq!(lab.at(d, h, w), c.label.data[src]);
                }
            }
        }
    }

    #[test]
    fn rotation_keeps_image_and_labels_aligned() {
        // Labels equal to a function of the image before; after any transform each label must
        // still be a label of a voxel whose image value is near the sampled one (nearest vs
        // trilinear differ by at most one voxel step: 1 along W, 10 along H, 80 along D). The patch
        // is odd-sized, so its centre voxel reads the (foreground) centre voxel exactly.
        let c = case();
        let mut rng = Rng::new(3);
        let cfg = AugmentConfig {
            rotation_p: 1.0,
            scale_p: 1.0,
            ..AugmentConfig::none()
        };
        let (img, lab) = augmented_patch(&c, [5, 7, 7], 1.0, &cfg, -1.0, &mut rng).unwrap();
        let mut checked = 0;
        for (i, (&v, &l)) in img.data.iter().zip(&lab.data).enumerate() {
            if v < 0.0 {
                assert_eq!(l, 0.0, "padding labelled at {i}");
                continue;
            }
            if l > 0.0 {
                // Some voxel of class l lies within one step on every axis of the sampled point.
                let hit =
                    c.label.data.iter().enumerate().any(|(j, &lj)| {
                        lj == l && (c.image.data[j] - v).abs() <= 80.0 + 10.0 + 1.0
                    });
                assert!(hit, "label {l} at {i} far from any voxel of its class");
                checked += 1;
            }
        }
        assert!(checked > 0, "a foreground-centred patch holds foreground");
    }

    #[test]
    fn oversampling_draws_every_class() {
        let c = case();
        assert_eq!(c.class_voxels.len(), 2);
        let mut rng = Rng::new(1);
        let mut hits = [0usize; 3];
        for _ in 0..200 {
            let (centre, forced) = draw_centre(&c, [4, 4, 4], 1.0, &mut rng);
            assert!(forced);
            let [d, h, w] = centre.map(|v| v as usize);
            hits[c.label.at(d, h, w) as usize] += 1;
        }
        // Class 2 is one voxel of 25 foreground voxels but is drawn about half of the time.
        assert_eq!(hits[0], 0);
        assert!(hits[2] > 70 && hits[1] > 70, "{hits:?}");
        let forced = (0..300)
            .filter(|_| draw_centre(&c, [4, 4, 4], 1.0 / 3.0, &mut rng).1)
            .count();
        assert!((70..130).contains(&forced), "{forced} of 300 forced");
    }

    #[test]
    fn gamma_keeps_mean_and_std() {
        let mut p = Patch::new(
            (0..64).map(|i| (i as f32 * 0.37).sin()).collect(),
            [4, 4, 4],
        )
        .unwrap();
        let stats = |p: &Patch| {
            let m = p.mean();
            let s = (p.data.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / 64.0).sqrt();
            (m, s)
        };
        let before = stats(&p);
        let orig = p.clone();
        gamma_retain_stats(&mut p, 1.4, true);
        let after = stats(&p);
        assert!((before.0 - after.0).abs() < 1e-5 && (before.1 - after.1).abs() < 1e-5);
        assert_ne!(p.data, orig.data);
    }

    #[test]
    fn bad_labels_are_rejected() {
        let img = Patch::new(vec![0.0; 8], [2, 2, 2]).unwrap();
        let lab = Patch::new(vec![0.0, 1.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0], [2, 2, 2]).unwrap();
        let e = TrainingCase::new(img, lab, 3).unwrap_err().to_string();
        assert!(e.contains("0..3") && e.contains("3 at voxel 2"), "{e}");
    }
}
