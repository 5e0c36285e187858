//! Sliding-window inference: one window equals a direct forward (host network, and a GPU conv
//! network through `tensor_forward`), the Gaussian importance map's normalisation, a constant
//! network gives constant probabilities, windows cover every voxel, and mirroring TTA with a
//! pointwise network changes nothing (the flips are undone exactly).

mod common;

use cads::data::preprocess::Patch;
use cads::nn::{Conv3d, ConvInit};
use cads::ops::config::Conv3dConfig;
use cads::segment::sliding_window::{
    gaussian_weights, sliding_window, softmax_channels_last, tensor_forward, window_offsets,
    window_starts, SlidingWindowConfig,
};
use cads::util::Rng;
use cads::{Result, Tensor};

fn random_patch(shape: [usize; 3], seed: u64) -> Patch {
    let mut rng = Rng::new(seed);
    Patch::new(rng.vec_uniform(shape.iter().product(), -1.0, 1.0), shape).unwrap()
}

/// A host "network" that depends on the position in the window (not flip-equivariant):
/// logits_k = x·(k + 1) + 0.01·(d + 2h + 3w)·k.
fn positional(input: &[f32], [b, pd, ph, pw]: [usize; 4]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(input.len() * 3);
    for n in 0..b {
        for d in 0..pd {
            for h in 0..ph {
                for w in 0..pw {
                    let x = input[((n * pd + d) * ph + h) * pw + w];
                    for k in 0..3 {
                        out.push(x * (k + 1) as f32 + 0.01 * (d + 2 * h + 3 * w) as f32 * k as f32);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A pointwise network: logits = (x, −x, x²).
fn pointwise(input: &[f32], _: [usize; 4]) -> Result<Vec<f32>> {
    Ok(input.iter().flat_map(|&x| [x, -x, x * x]).collect())
}

#[test]
fn one_window_equals_a_direct_forward() {
    let shape = [4, 6, 10];
    let image = random_patch(shape, 1);
    let cfg = SlidingWindowConfig::new(shape);
    let got = sliding_window(&image, 3, &cfg, &mut positional).unwrap();
    let want = positional(&image.data, [1, 4, 6, 10]).unwrap();
    assert_eq!(got.shape, shape);
    for (i, (g, w)) in got.data.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "logit {i}: {g} vs {w}"
        );
    }
}

#[test]
fn gaussian_weights_are_normalised() {
    for patch in [[5, 7, 9], [4, 8, 6], [16, 32, 32]] {
        let g = gaussian_weights(patch, 0.125).unwrap();
        assert_eq!(g.len(), patch.iter().product::<usize>());
        let max = g.iter().cloned().fold(0.0f32, f32::max);
        assert!((max - 1.0).abs() < 1e-6, "max {max}");
        assert!(g.iter().all(|&v| v > 0.0 && v <= 1.0));
        let at = |d: usize, h: usize, w: usize| g[(d * patch[1] + h) * patch[2] + w];
        // Symmetric under every flip.
        for d in 0..patch[0] {
            for h in 0..patch[1] {
                for w in 0..patch[2] {
                    let m = at(patch[0] - 1 - d, patch[1] - 1 - h, patch[2] - 1 - w);
                    assert!((at(d, h, w) - m).abs() < 1e-7);
                }
            }
        }
    }
    // Odd patch: exactly 1 at the centre; Δ voxels away along W the weight is exp(−(Δ/σ)²/2)
    // with σ = 9/8 voxels.
    let p = [1, 1, 9];
    let g = gaussian_weights(p, 0.125).unwrap();
    assert_eq!(g[4], 1.0);
    let sigma = 9.0 * 0.125;
    assert!((g[6] as f64 - (-(2.0f64 / sigma).powi(2) / 2.0).exp()).abs() < 1e-6);
    assert!(gaussian_weights([0, 1, 1], 0.125).is_err());
}

#[test]
fn a_constant_network_gives_constant_probabilities() {
    // Smaller than the patch along D (padding), larger along H and W (many windows), with TTA.
    let image = random_patch([3, 21, 17], 2);
    let mut cfg = SlidingWindowConfig::new([4, 8, 6]);
    cfg.mirror_axes = [true, true, true];
    cfg.batch = 3;
    let mut constant = |input: &[f32], _: [usize; 4]| -> Result<Vec<f32>> {
        Ok((0..input.len()).flat_map(|_| [1.0f32, 2.0, 3.0]).collect())
    };
    let mut got = sliding_window(&image, 3, &cfg, &mut constant).unwrap();
    for v in got.data.chunks_exact(3) {
        for (a, b) in v.iter().zip([1.0, 2.0, 3.0]) {
            assert!((a - b).abs() < 1e-5, "{v:?}");
        }
    }
    softmax_channels_last(&mut got.data, 3).unwrap();
    let e = [1f32.exp(), 2f32.exp(), 3f32.exp()];
    let s: f32 = e.iter().sum();
    for v in got.data.chunks_exact(3) {
        for (a, b) in v.iter().zip(e) {
            assert!((a - b / s).abs() < 1e-5, "{v:?}");
        }
    }
}

#[test]
fn windows_cover_every_voxel() {
    for (size, patch, overlap) in [
        (10, 4, 0.5),
        (17, 8, 0.5),
        (8, 8, 0.5),
        (100, 32, 0.25),
        (33, 16, 0.0),
        (9, 2, 0.9),
    ] {
        let s = window_starts(size, patch, overlap).unwrap();
        assert_eq!(s[0], 0);
        assert_eq!(
            *s.last().unwrap() + patch,
            size,
            "{size} {patch} {overlap}: {s:?}"
        );
        let mut covered = vec![false; size];
        for &o in &s {
            covered[o..o + patch].iter_mut().for_each(|c| *c = true);
        }
        assert!(
            covered.iter().all(|&c| c),
            "{size} {patch} {overlap}: {s:?}"
        );
        // Consecutive windows step at most patch·(1 − overlap) (rounded up by one at most).
        let target = patch as f64 * (1.0 - overlap);
        for w in s.windows(2) {
            assert!(
                w[1] > w[0] && (w[1] - w[0]) as f64 <= target.max(1.0) + 1.0,
                "{s:?}"
            );
        }
    }
    let cfg = SlidingWindowConfig::new([4, 4, 4]);
    // D: one window; H: starts 0, 2, 4, 6; W: 0, 2, 3 (rounded 1.5·i).
    assert_eq!(window_offsets([4, 10, 7], &cfg).unwrap().len(), 12);
    assert!(window_starts(3, 4, 0.5).is_err());
    assert!(window_starts(8, 4, 1.0).is_err());
}

#[test]
fn mirroring_and_many_windows_keep_a_pointwise_network_exact() {
    let image = random_patch([9, 14, 11], 3);
    let want = pointwise(&image.data, [1, 9, 14, 11]).unwrap();
    for mirror in [[false; 3], [true, false, true], [true; 3]] {
        let mut cfg = SlidingWindowConfig::new([4, 6, 5]);
        cfg.mirror_axes = mirror;
        cfg.batch = 4;
        assert_eq!(
            cfg.flips().len(),
            1 << mirror.iter().filter(|&&m| m).count()
        );
        let got = sliding_window(&image, 3, &cfg, &mut pointwise).unwrap();
        for (i, (g, w)) in got.data.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-5,
                "mirror {mirror:?}, logit {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn a_network_returning_the_wrong_shape_is_an_error() {
    let image = random_patch([4, 4, 4], 4);
    let mut short = |input: &[f32], _: [usize; 4]| -> Result<Vec<f32>> { Ok(input.to_vec()) };
    let e =
        sliding_window(&image, 3, &SlidingWindowConfig::new([4, 4, 4]), &mut short).unwrap_err();
    assert!(e.to_string().contains("network logits"), "{e}");
}

#[test]
fn gpu_network_on_one_window_equals_its_direct_forward() {
    let gpu = common::gpu();
    let mut rng = Rng::new(5);
    let conv = Conv3d::new(
        &gpu,
        &mut rng,
        1,
        3,
        Conv3dConfig::cube(3, 1, 1),
        true,
        ConvInit::default(),
    )
    .unwrap();
    let net = |x: &Tensor| conv.forward(x);
    let shape = [5, 7, 9];
    let image = random_patch(shape, 6);
    let direct = gpu
        .no_grad(|| net(&Tensor::from_slice(&gpu, &image.data, &[1, 5, 7, 9, 1])?)?.to_vec())
        .unwrap();
    let mut forward = tensor_forward(&gpu, 3, &net);
    let got = sliding_window(&image, 3, &SlidingWindowConfig::new(shape), &mut forward).unwrap();
    for (i, (g, w)) in got.data.iter().zip(&direct).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "logit {i}: {g} vs {w}"
        );
    }
    // Several windows in batches of 2 run on the device too (shape checked, logits finite).
    let big = random_patch([7, 12, 15], 7);
    let mut cfg = SlidingWindowConfig::new([4, 8, 8]);
    cfg.batch = 2;
    let mut forward = tensor_forward(&gpu, 3, &net);
    let out = sliding_window(&big, 3, &cfg, &mut forward).unwrap();
    assert_eq!(out.data.len(), 7 * 12 * 15 * 3);
    assert!(out.data.iter().all(|v| v.is_finite()));
    // A network with the wrong channel count is an error naming the expected shape.
    let mut forward = tensor_forward(&gpu, 4, &net);
    assert!(sliding_window(&image, 4, &SlidingWindowConfig::new(shape), &mut forward).is_err());
}
