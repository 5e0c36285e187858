//! A synthetic abdominal/chest CT phantom with organ labels: the built-in default data when no
//! files are given.
//!
//! Geometry is in normalised body coordinates `u, v, w ∈ [−1, 1]` over the field of view, on the
//! canonical RAS grid (u → patient Right, v → Anterior, w → Superior). Organs are ellipsoids (and a
//! segmented cylinder for the spine) with jittered centres and sizes per seed; values are typical
//! HU; Gaussian noise is added to the image, never to the labels.
//!
//! | label | structure | HU |
//! |---|---|---|
//! | 0 | background: air −1000, body soft tissue 40, subcutaneous fat −100 | |
//! | 1 | liver | 60 |
//! | 2 | spleen | 45 |
//! | 3 | right kidney | 30 (cortex 150) |
//! | 4 | left kidney | 30 (cortex 150) |
//! | 5 | right lung | −850 |
//! | 6 | left lung | −850 |
//! | 7 | spine (vertebrae; discs 80 HU are label 0) | cortex 700, cancellous 250 |

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::volume::{Datatype, Volume};
use crate::error::{Error, Result};
use crate::util::Rng;

/// Names of labels 1..=7.
pub const LABEL_NAMES: [&str; 7] = [
    "liver",
    "spleen",
    "kidney_right",
    "kidney_left",
    "lung_right",
    "lung_left",
    "spine",
];

/// Phantom size, spacing, noise and seed.
#[derive(Clone, Debug)]
pub struct PhantomConfig {
    /// `[X, Y, Z]` voxels.
    pub dims: [usize; 3],
    /// Voxel size in mm along X, Y, Z.
    pub spacing_mm: [f64; 3],
    /// Standard deviation of the additive Gaussian noise, HU.
    pub noise_hu: f64,
    pub seed: u64,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            dims: [128, 128, 96],
            spacing_mm: [2.5, 2.5, 3.0],
            noise_hu: 20.0,
            seed: 0,
        }
    }
}

/// An ellipsoid in normalised coordinates.
#[derive(Clone, Copy)]
struct Ellipsoid {
    c: [f64; 3],
    r: [f64; 3],
}

impl Ellipsoid {
    /// `Σ ((p − c)/r)²`: < 1 inside.
    fn q(&self, p: [f64; 3]) -> f64 {
        (0..3)
            .map(|a| ((p[a] - self.c[a]) / self.r[a]).powi(2))
            .sum()
    }
}

/// Generate `(image in HU as int16, labels as uint8)` on the same RAS grid centred on the origin.
pub fn phantom(cfg: &PhantomConfig) -> Result<(Volume, Volume)> {
    if cfg.dims.iter().any(|&d| d < 2) {
        return Err(Error::invalid(
            "phantom",
            "dims ≥ 2 on every axis",
            format!("{:?}", cfg.dims),
        ));
    }
    if cfg.spacing_mm.iter().any(|s| !(s.is_finite() && *s > 0.0))
        || !(cfg.noise_hu.is_finite() && cfg.noise_hu >= 0.0)
    {
        return Err(Error::invalid(
            "phantom",
            "positive spacing and noise ≥ 0",
            format!("{:?}, {}", cfg.spacing_mm, cfg.noise_hu),
        ));
    }
    let mut rng = Rng::new(cfg.seed);
    let jit = |e: Ellipsoid, rng: &mut Rng| Ellipsoid {
        c: e.c.map(|c| c + rng.range(-0.03, 0.03)),
        r: e.r.map(|r| r * rng.range(0.9, 1.1)),
    };
    let body = jit(
        Ellipsoid {
            c: [0.0, 0.0, 0.0],
            r: [0.85, 0.62, 10.0],
        },
        &mut rng,
    );
    let liver = jit(
        Ellipsoid {
            c: [0.33, 0.08, -0.2],
            r: [0.38, 0.4, 0.33],
        },
        &mut rng,
    );
    let spleen = jit(
        Ellipsoid {
            c: [-0.5, -0.15, -0.15],
            r: [0.14, 0.18, 0.18],
        },
        &mut rng,
    );
    let kidney_r = jit(
        Ellipsoid {
            c: [0.28, -0.32, -0.55],
            r: [0.1, 0.13, 0.22],
        },
        &mut rng,
    );
    let kidney_l = jit(
        Ellipsoid {
            c: [-0.28, -0.32, -0.5],
            r: [0.1, 0.13, 0.22],
        },
        &mut rng,
    );
    let lung_r = jit(
        Ellipsoid {
            c: [0.38, 0.0, 0.55],
            r: [0.3, 0.45, 0.6],
        },
        &mut rng,
    );
    let lung_l = jit(
        Ellipsoid {
            c: [-0.38, 0.0, 0.55],
            r: [0.28, 0.45, 0.6],
        },
        &mut rng,
    );
    let spine_c = [rng.range(-0.03, 0.03), -0.45 + rng.range(-0.02, 0.02)];
    let spine_r = 0.11 * rng.range(0.9, 1.1);
    // Vertebra period ~ 30 mm with a 6 mm disc, in normalised w units.
    let extent_z = cfg.dims[2] as f64 * cfg.spacing_mm[2];
    let period = 2.0 * 30.0 / extent_z;
    let disc = 2.0 * 6.0 / extent_z;
    let phase = rng.uniform() * period;

    let [nx, ny, nz] = cfg.dims;
    let n = nx * ny * nz;
    let mut img = vec![0f32; n];
    let mut lab = vec![0f32; n];
    let mut noise = rng.fork(1);
    for k in 0..nz {
        let w = 2.0 * (k as f64 + 0.5) / nz as f64 - 1.0;
        for j in 0..ny {
            let v = 2.0 * (j as f64 + 0.5) / ny as f64 - 1.0;
            for i in 0..nx {
                let u = 2.0 * (i as f64 + 0.5) / nx as f64 - 1.0;
                let p = [u, v, w];
                let (mut hu, mut l) = (-1000.0f64, 0u8);
                let qb = body.q(p);
                if qb < 1.0 {
                    hu = if qb > 0.85 { -100.0 } else { 40.0 };
                    let rs = ((u - spine_c[0]).powi(2) + (v - spine_c[1]).powi(2)).sqrt() / spine_r;
                    for (e, label, val) in [(&liver, 1u8, 60.0), (&spleen, 2, 45.0)] {
                        if e.q(p) < 1.0 {
                            hu = val;
                            l = label;
                        }
                    }
                    for (e, label) in [(&kidney_r, 3u8), (&kidney_l, 4)] {
                        let q = e.q(p);
                        if q < 1.0 {
                            hu = if q > 0.6 { 150.0 } else { 30.0 };
                            l = label;
                        }
                    }
                    for (e, label) in [(&lung_r, 5u8), (&lung_l, 6)] {
                        if e.q(p) < 1.0 && rs > 1.3 {
                            hu = -850.0;
                            l = label;
                        }
                    }
                    if rs < 1.0 {
                        let in_disc = (w + 1.0 + phase).rem_euclid(period) < disc;
                        if in_disc {
                            hu = 80.0;
                            l = 0;
                        } else {
                            hu = if rs > 0.75 { 700.0 } else { 250.0 };
                            l = 7;
                        }
                    }
                }
                let idx = i + nx * (j + ny * k);
                img[idx] = (hu + noise.normal() * cfg.noise_hu)
                    .round()
                    .clamp(-1024.0, 3071.0) as f32;
                lab[idx] = l as f32;
            }
        }
    }
    // Centred on the origin, RAS.
    let mut affine = super::volume::IDENTITY;
    for a in 0..3 {
        affine[a][a] = cfg.spacing_mm[a];
        affine[a][3] = -0.5 * (cfg.dims[a] as f64 - 1.0) * cfg.spacing_mm[a];
    }
    Ok((
        Volume::new(img, cfg.dims, affine, Datatype::Int16)?,
        Volume::new(lab, cfg.dims, affine, Datatype::Uint8)?,
    ))
}
