//! Preprocessing and augmentation: shapes, seeding, and statistics that must match the parameters.

use cads::data::augment::{
    brightness_multiplicative, contrast, draw_flips, flip, gamma, gaussian_blur, gaussian_noise,
    random_crop_foreground, rotate_scale, IntensityAug,
};
use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::preprocess::{clip_scale, crop_pad, resample_to_spacing, resize, Interp, Patch};
use cads::pretrain::cads_views::{
    cads_sample, cads_views, uniform_sample, CadsViewConfig, DrrProjector, ParallelLineIntegral,
};
use cads::pretrain::tiles::{cads_tiles, Tile, TilingConfig};
use cads::util::Rng;

fn ramp(shape: [usize; 3]) -> Patch {
    let n = shape.iter().product::<usize>();
    Patch::new((0..n).map(|i| i as f32).collect(), shape).unwrap()
}

#[test]
fn clip_scale_and_crop_pad() {
    let mut d = vec![-3000.0, -1024.0, 0.0, 512.0, 5000.0];
    clip_scale(&mut d, -1024.0, 1024.0, 0.0, 1024.0).unwrap();
    assert_eq!(d, vec![-1.0, -1.0, 0.0, 0.5, 1.0]);
    assert!(clip_scale(&mut d, 1.0, 0.0, 0.0, 1.0).is_err());
    let p = ramp([2, 3, 4]);
    let c = crop_pad(&p, [-1, 1, 2], [3, 3, 3], -9.0);
    assert_eq!(c.shape, [3, 3, 3]);
    // d = 0 of the crop is outside (padding); d = 1 reads source d 0, h 1.., w 2..
    assert!(c.data[..9].iter().all(|&v| v == -9.0));
    assert_eq!(c.at(1, 0, 0), p.at(0, 1, 2));
    assert_eq!(c.at(1, 0, 1), p.at(0, 1, 3));
    assert_eq!(c.at(1, 0, 2), -9.0);
    assert_eq!(c.at(2, 1, 1), p.at(1, 2, 3));
    assert_eq!(c.at(2, 2, 0), -9.0);
}

#[test]
fn resize_and_resample() {
    // Linear resize of a linear ramp along W stays linear in the interior, and identity resize is exact.
    let p = ramp([1, 1, 8]);
    assert_eq!(resize(&p, [1, 1, 8], Interp::Linear).unwrap(), p);
    let up = resize(&p, [1, 1, 16], Interp::Linear).unwrap();
    for w in 1..15 {
        let x = ((w as f64 + 0.5) / 2.0 - 0.5).clamp(0.0, 7.0);
        assert!((up.data[w] as f64 - x).abs() < 1e-5);
    }
    // Resampling the phantom to double spacing halves the dims and keeps voxel 0's world position.
    let (img, lab) = phantom(&PhantomConfig {
        dims: [20, 16, 12],
        spacing_mm: [1.0, 1.0, 2.0],
        noise_hu: 0.0,
        seed: 1,
    })
    .unwrap();
    let r = resample_to_spacing(&img, [2.0, 2.0, 4.0], Interp::Linear).unwrap();
    assert_eq!(r.dims, [10, 8, 6]);
    assert_eq!(r.spacing, [2.0, 2.0, 4.0]);
    assert_eq!(r.world([0.0; 3]), img.world([0.0; 3]));
    assert_eq!(r.get(3, 2, 1), img.get(6, 4, 2));
    let rl = resample_to_spacing(&lab, [0.5, 0.5, 1.0], Interp::Nearest).unwrap();
    assert_eq!(rl.dims, [40, 32, 24]);
    let allowed = lab.distinct_values();
    assert!(
        rl.distinct_values().iter().all(|v| allowed.contains(v)),
        "nearest creates no new labels"
    );
    assert!(resample_to_spacing(&img, [0.0, 1.0, 1.0], Interp::Linear).is_err());
}

#[test]
fn cads_tiling() {
    let cfg = TilingConfig::default();
    // 60 slices: starts 0, 12, 24, 36 (36 + 24 = 60); 400 > 320 in-plane keeps the central 320.
    let t = cads_tiles([60, 400, 300], &cfg).unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(
        t[3],
        Tile {
            start: [36, 40, 0],
            size: [24, 320, 300]
        }
    );
    assert_eq!(
        cads_tiles([10, 100, 100], &cfg).unwrap(),
        vec![Tile {
            start: [0, 0, 0],
            size: [10, 100, 100]
        }]
    );
    assert_eq!(
        cads_tiles([24, 321, 320], &cfg).unwrap()[0].size,
        [24, 257, 320]
    );
    assert!(cads_tiles([0, 1, 1], &cfg).is_err());
}

#[test]
fn flip_frequency_matches_probability() {
    let mut rng = Rng::new(11);
    let trials = 4000;
    let mut count = [0usize; 3];
    for _ in 0..trials {
        let f = draw_flips(0.8, &mut rng);
        for a in 0..3 {
            count[a] += f[a] as usize;
        }
    }
    // Binomial(4000, 0.8): sd ≈ 25 → ±4.5 sd = ±0.028.
    for c in count {
        assert!(
            (c as f64 / trials as f64 - 0.8).abs() < 0.028,
            "flip freq {}",
            c as f64 / trials as f64
        );
    }
    let p = ramp([2, 3, 4]);
    let f = flip(&p, [true, false, true]);
    assert_eq!(f.at(0, 1, 0), p.at(1, 1, 3));
    assert_eq!(flip(&f, [true, false, true]), p);
}

#[test]
fn intensity_transforms_respect_their_ranges() {
    let mut rng = Rng::new(5);
    let base = Patch::new(rng.vec_uniform(16 * 16 * 16, -1.0, 1.0), [16, 16, 16]).unwrap();
    // Noise: the sample standard deviation matches sigma.
    let mut n = Patch::filled([16, 16, 16], 0.0);
    gaussian_noise(&mut n, 0.1, &mut rng);
    let var = n.data.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n.data.len() as f64;
    assert!((var.sqrt() - 0.1).abs() < 0.005, "noise sd {}", var.sqrt());
    // Multiplicative brightness scales exactly.
    let mut m = base.clone();
    brightness_multiplicative(&mut m, 1.25);
    assert!(m
        .data
        .iter()
        .zip(&base.data)
        .all(|(a, b)| (a - 1.25 * b).abs() < 1e-6));
    // Contrast keeps the mean (before clipping) and the range.
    let mut c = base.clone();
    contrast(&mut c, 0.75);
    assert!((c.mean() - base.mean()).abs() < 1e-4);
    let (lo, hi) = (-1.0f32, 1.0f32);
    assert!(c.data.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
    // Gamma keeps min and max and is monotone.
    let mut g = base.clone();
    gamma(&mut g, 1.5);
    let mm = |d: &[f32]| {
        d.iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)))
    };
    let (a, b) = (mm(&base.data), mm(&g.data));
    assert!((a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-5);
    // Blur keeps a constant and the mean of a periodic-free ramp interior; it lowers the variance.
    let bl = gaussian_blur(&base, 1.0, [true; 3]).unwrap();
    let var_of = |p: &Patch| {
        let m = p.mean();
        p.data.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / p.data.len() as f64
    };
    assert!(var_of(&bl) < 0.2 * var_of(&base));
    let k = gaussian_blur(&Patch::filled([3, 5, 7], 2.5), 2.0, [true; 3]).unwrap();
    assert!(k.data.iter().all(|&v| (v - 2.5).abs() < 1e-5));

    // The drawn parameters of IntensityAug stay inside their ranges and their frequencies match p.
    let cfg = IntensityAug::default();
    let mut counts = [0usize; 6];
    let trials = 3000;
    let small = Patch::new(rng.vec_uniform(2 * 4 * 4, -1.0, 1.0), [2, 4, 4]).unwrap();
    for _ in 0..trials {
        let mut p = small.clone();
        let d = cfg.apply(&mut p, &mut rng).unwrap();
        if let Some(s) = d.noise_sigma {
            assert!((0.0..0.1).contains(&s));
            counts[0] += 1;
        }
        if let Some(s) = d.blur_sigma {
            assert!((0.1..2.0).contains(&s));
            counts[1] += 1;
        }
        if let Some(f) = d.mul_brightness {
            assert!((0.75..1.25).contains(&f));
            counts[2] += 1;
        }
        counts[3] += d.add_brightness.is_some() as usize;
        if let Some(f) = d.contrast {
            assert!((0.75..1.25).contains(&f));
            counts[4] += 1;
        }
        if let Some(g) = d.gamma {
            assert!((0.7..1.5).contains(&g));
            counts[5] += 1;
        }
    }
    let ps = [
        cfg.noise_p,
        cfg.blur_p,
        cfg.mul_brightness_p,
        cfg.add_brightness_p,
        cfg.contrast_p,
        cfg.gamma_p,
    ];
    for (c, p) in counts.iter().zip(ps) {
        let f = *c as f64 / trials as f64;
        let sd = (p * (1.0 - p) / trials as f64).sqrt();
        assert!((f - p).abs() < 4.5 * sd, "frequency {f} vs p {p}");
    }
}

#[test]
fn rotation_by_zero_is_identity_and_quarter_turn_permutes() {
    let p = ramp([2, 5, 5]);
    assert_eq!(rotate_scale(&p, 0.0, 1.0, Interp::Linear).unwrap(), p);
    let q = rotate_scale(&p, std::f64::consts::FRAC_PI_2, 1.0, Interp::Nearest).unwrap();
    let q4 = (0..3)
        .try_fold(q.clone(), |acc, _| {
            rotate_scale(&acc, std::f64::consts::FRAC_PI_2, 1.0, Interp::Nearest)
        })
        .unwrap();
    assert_ne!(q, p);
    assert_eq!(q4, p);
}

#[test]
fn foreground_oversampling() {
    // One foreground voxel in a corner of a 40³ volume; crops of 8³ contain it only by chance
    // unless oversampled.
    let mut label = Patch::filled([40, 40, 40], 0.0);
    let fg = label.idx(37, 2, 35);
    label.data[fg] = 1.0;
    let image = ramp([40, 40, 40]);
    let mut rng = Rng::new(2);
    let hits = |p: f64, rng: &mut Rng| {
        (0..400)
            .filter(|_| {
                let (img, lab) =
                    random_crop_foreground(&image, &label, [8, 8, 8], p, -5.0, rng).unwrap();
                assert_eq!(img.shape, [8, 8, 8]);
                lab.data.contains(&1.0)
            })
            .count()
    };
    assert_eq!(hits(1.0, &mut rng), 400);
    let h = hits(0.33, &mut rng) as f64 / 400.0;
    assert!((0.26..0.42).contains(&h), "fg fraction {h}");
    assert!(hits(0.0, &mut rng) < 12);
}

#[test]
fn uniform_sampling_keeps_one_patch_per_group() {
    let v = ramp([16, 96, 96]);
    let mut rng = Rng::new(9);
    let out = uniform_sample(&v, [4, 8, 8], &mut rng).unwrap();
    assert_eq!(out.shape, [16, 48, 48]);
    // Each 4×8×8 output block equals one of the 4 input blocks of its 2×2 group, and within a
    // group the choice is unbiased over many groups.
    let mut pick_count = [0usize; 4];
    for gd in 0..4 {
        for gh in 0..6 {
            for gw in 0..6 {
                let first = out.at(gd * 4, gh * 8, gw * 8);
                let which = (0..4)
                    .find(|&k| v.at(gd * 4, (2 * gh + k / 2) * 8, (2 * gw + k % 2) * 8) == first)
                    .expect("block from its group");
                pick_count[which] += 1;
                for d in 0..4 {
                    for h in 0..8 {
                        for w in 0..8 {
                            let src = v.at(
                                gd * 4 + d,
                                (2 * gh + which / 2) * 8 + h,
                                (2 * gw + which % 2) * 8 + w,
                            );
                            assert_eq!(out.at(gd * 4 + d, gh * 8 + h, gw * 8 + w), src);
                        }
                    }
                }
            }
        }
    }
    assert!(pick_count.iter().all(|&c| c > 15), "{pick_count:?}"); // 144 groups, 36 expected each
    assert!(uniform_sample(&ramp([16, 90, 96]), [4, 8, 8], &mut rng).is_err());
}

#[test]
fn cads_views_shapes_ranges_and_seeding() {
    let (ct, _) = phantom(&PhantomConfig {
        dims: [180, 170, 40],
        spacing_mm: [1.0; 3],
        noise_hu: 20.0,
        seed: 4,
    })
    .unwrap();
    let vol = Patch::from_volume(&ct);
    let tiles = cads_tiles(vol.shape, &TilingConfig::default()).unwrap();
    assert_eq!(tiles.len(), 2);
    let tile = cads::pretrain::tiles::extract_tile(&vol, &tiles[0]);
    let drr = ParallelLineIntegral::default().project(&ct).unwrap();
    assert_eq!(drr.shape, [1, 96, 96]);
    let (lo, hi) = drr
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    // Min-max scaled to [−1, 1] before the resize (CADS order), so the resize may shave the extremes.
    assert!(
        (-1.0..-0.95).contains(&lo) && hi > 0.95 && hi <= 1.0,
        "drr range {lo} {hi}"
    );
    // With intensity augmentation off the views stay in [−1, 1] (clip and /1024).
    let mut cfg = CadsViewConfig::default();
    let no_int = CadsViewConfig {
        intensity: IntensityAug {
            noise_p: 0.0,
            blur_p: 0.0,
            mul_brightness_p: 0.0,
            add_brightness_p: 0.0,
            contrast_p: 0.0,
            gamma_p: 0.0,
            ..cfg.intensity.clone()
        },
        ..cfg.clone()
    };
    let (a, b) = cads_views(&tile, &no_int, &mut Rng::new(1)).unwrap();
    for v in [&a, &b] {
        assert_eq!(v.shape, [16, 48, 48]);
        assert!(v.data.iter().all(|x| (-1.0..=1.0).contains(x)));
    }
    assert_ne!(a, b, "two views differ");
    let s1 = cads_sample(&tile, &drr, &cfg, &mut Rng::new(77)).unwrap();
    let s2 = cads_sample(&tile, &drr, &cfg, &mut Rng::new(77)).unwrap();
    let s3 = cads_sample(&tile, &drr, &cfg, &mut Rng::new(78)).unwrap();
    assert_eq!(s1, s2, "deterministic per seed");
    assert_ne!(s1.x1, s3.x1);
    assert_eq!(s1.drr, drr);
    // A tile smaller than the region is padded, not an error.
    cfg.region_scale = (1.8, 1.8);
    let small = Patch::filled([10, 50, 60], 0.0);
    let (c, _) = cads_views(&small, &cfg, &mut Rng::new(3)).unwrap();
    assert_eq!(c.shape, [16, 48, 48]);
}
