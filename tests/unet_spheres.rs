//! The sphere segmentation pieces: Dice and argmax against hand-computed cases, the synthetic
//! generator's determinism and difficulty, the U-Net's shapes and parameter names, and a
//! shortened training run whose loss must fall by a stated factor.

mod common;

use cads::data::spheres::{sphere_batch, sphere_volume, SphereConfig};
use cads::infer::{argmax_classes, dice, DiceCounts};
use cads::models::{UNet3d, UNet3dConfig};
use cads::nn::Module;
use cads::train::spheres::{evaluate_dice, train_unet_spheres, SpheresConfig};
use cads::util::Rng;
use cads::{Error, Tensor};

#[test]
fn dice_matches_a_hand_computed_case() {
    //            voxel: 0  1  2  3  4  5  6  7
    let predicted = [1, 1, 0, 0, 1, 0, 2, 1];
    let target = [1, 0, 0, 1, 1, 0, 1, 1];
    // Class 1: P = {0, 1, 4, 7}, T = {0, 3, 4, 6, 7}, P ∩ T = {0, 4, 7}: 2·3 / (4 + 5) = 2/3.
    let c = DiceCounts::of(&predicted, &target, 1).unwrap();
    assert_eq!(
        c,
        DiceCounts {
            intersection: 3,
            predicted: 4,
            target: 5
        }
    );
    assert!((dice(&predicted, &target, 1).unwrap() - 2.0 / 3.0).abs() < 1e-12);
    // Class 0: P = {2, 3, 5}, T = {1, 2, 5}, P ∩ T = {2, 5}: 4 / 6.
    assert!((dice(&predicted, &target, 0).unwrap() - 4.0 / 6.0).abs() < 1e-12);
    // Class 2 is predicted once and never present: 0. A class absent from both: 1.
    assert_eq!(dice(&predicted, &target, 2).unwrap(), 0.0);
    assert_eq!(dice(&predicted, &target, 3).unwrap(), 1.0);
    // Pooling adds counts: with a perfect second volume {1, 1} the pooled Dice is 2·5/(6 + 7).
    let mut pooled = c;
    pooled.add(DiceCounts::of(&[1, 1], &[1, 1], 1).unwrap());
    assert!((pooled.value() - 10.0 / 13.0).abs() < 1e-12);
    let err = dice(&predicted, &target[..7], 1).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "dice", .. }),
        "{err}"
    );
}

#[test]
fn argmax_picks_the_largest_logit_per_voxel() {
    let logits = [0.1, 0.9, 2.0, -1.0, 0.5, 0.5];
    assert_eq!(argmax_classes(&logits, 2).unwrap(), vec![1, 0, 0]);
    assert_eq!(argmax_classes(&logits, 3).unwrap(), vec![2, 1]);
    assert!(argmax_classes(&logits, 4).is_err());
    assert!(argmax_classes(&logits, 0).is_err());
}

/// Best Dice any single intensity threshold reaches on a volume (an oracle that knows the mask).
fn best_threshold_dice(image: &[f32], mask: &[u8]) -> f64 {
    let target: Vec<usize> = mask.iter().map(|&m| m as usize).collect();
    (-40..=60)
        .map(|i| {
            let threshold = i as f32 * 0.05;
            let predicted: Vec<usize> = image.iter().map(|&v| (v > threshold) as usize).collect();
            dice(&predicted, &target, 1).unwrap()
        })
        .fold(0.0, f64::max)
}

#[test]
fn sphere_volumes_are_seeded_and_not_separable_by_a_threshold() {
    let cfg = SphereConfig::default();
    let a = sphere_volume(&cfg, &mut Rng::new(5)).unwrap();
    let b = sphere_volume(&cfg, &mut Rng::new(5)).unwrap();
    let c = sphere_volume(&cfg, &mut Rng::new(6)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.mask, c.mask);
    let mut rng = Rng::new(7);
    let mut threshold_dice = 0.0;
    for _ in 0..8 {
        let v = sphere_volume(&cfg, &mut rng).unwrap();
        assert_eq!(v.image.len(), 16 * 16 * 16);
        let fg = v.mask.iter().filter(|&&m| m == 1).count();
        // 1–3 balls of radius ≥ 3 (a lattice-centred one holds 123 voxels; off-centre or cut by
        // a face, fewer), never most of the volume.
        assert!(
            (20..16 * 16 * 16 / 2).contains(&fg),
            "{fg} foreground voxels"
        );
        threshold_dice += best_threshold_dice(&v.image, &v.mask) / 8.0;
    }
    // Even an oracle-chosen threshold per volume stays far below the U-Net's ≥ 0.9.
    eprintln!("best single-threshold Dice, mean of 8 volumes: {threshold_dice:.3}");
    assert!(
        threshold_dice < 0.8,
        "a threshold reaches Dice {threshold_dice}"
    );
    let (image, labels) = sphere_batch(&cfg, 2, &mut Rng::new(8)).unwrap();
    assert_eq!((image.len(), labels.len()), (2 * 4096, 2 * 4096));
    assert!(sphere_batch(&cfg, 0, &mut rng).is_err());
    let bad = SphereConfig {
        radius: (3.0, 20.0),
        ..cfg
    };
    assert!(matches!(
        sphere_volume(&bad, &mut rng),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn unet_shapes_and_parameter_names() {
    let gpu = common::gpu();
    let mut rng = Rng::new(9);
    let cfg = UNet3dConfig {
        widths: vec![8, 16, 16],
        ..UNet3dConfig::default()
    };
    let net = UNet3d::new(&gpu, &mut rng, cfg).unwrap();
    let x = Tensor::zeros(&gpu, &[2, 4, 8, 12, 1]).unwrap();
    assert_eq!(net.forward(&x).unwrap().shape(), [2, 4, 8, 12, 2]);
    let mut named = Vec::new();
    net.parameters("", &mut named);
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3 * 2 + 2 * (2 + 2) + 2);
    assert_eq!(names[0], "encoder.0.conv0.weight");
    assert!(names.contains(&"up.1.bias") && names.contains(&"decoder.1.conv1.weight"));
    assert_eq!(*names.last().unwrap(), "head.bias");
    // Level 2 halves twice: 6 is not a multiple of 4.
    let err = net
        .forward(&Tensor::zeros(&gpu, &[1, 4, 6, 4, 1]).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("multiples of 4"), "{err}");
    assert!(UNet3d::new(
        &gpu,
        &mut rng,
        UNet3dConfig {
            widths: vec![],
            ..UNet3dConfig::default()
        }
    )
    .is_err());
}

/// Shortened training (80 steps on 12³ volumes, batch 2, milder noise σ 0.2, cross-entropy alone so
/// the curve is not dominated by the slow start of the soft Dice term, which tests/loss.rs checks
/// on its own): the mean loss of the last 10 steps must be at most a third of the first 5 steps'.
/// Measured on lavapipe: 0.558 → 0.125, a 4.5× drop, so 3× leaves margin; about 6 s.
#[test]
fn short_unet_training_drops_its_loss_threefold() {
    let gpu = common::gpu();
    let cfg = SpheresConfig {
        volume: SphereConfig {
            size: [12; 3],
            count: (1, 2),
            radius: (2.0, 4.0),
            noise_std: 0.2,
            ..SphereConfig::default()
        },
        steps: 80,
        dice_weight: 0.0,
        ..SpheresConfig::default()
    };
    let run = train_unet_spheres(&gpu, &cfg, |_, _| {}).unwrap();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    let (first, last) = (mean(&run.losses[..5]), mean(&run.losses[70..]));
    eprintln!(
        "loss: first 5 steps {first}, last 10 steps {last}, ratio {}",
        first / last
    );
    assert!(run.losses.iter().all(|l| l.is_finite()));
    assert!(last * 3.0 < first, "loss fell only from {first} to {last}");
    let report = evaluate_dice(&gpu, &run.model, &cfg.volume, 2, 99).unwrap();
    assert_eq!(report.per_volume.len(), 2);
    assert!((0.0..=1.0).contains(&report.mean));
}
