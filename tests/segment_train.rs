//! PVT-UNet training end to end on synthetic spheres (tiny network, lavapipe-sized): the
//! validation Dice reaches a stated value in a bounded time; a resumed run continues exactly as
//! an uninterrupted one; the run folder holds the metrics, curves and checkpoints.

mod common;

use std::time::Instant;

use cads::data::preprocess::Patch;
use cads::data::spheres::{sphere_volume, SphereConfig};
use cads::segment::augment::{AugmentConfig, TrainingCase};
use cads::segment::config::{ModelPreset, OptimizerKind, SegTrainConfig};
use cads::segment::train::{train, EpochMetrics, RunOptions, SegData};
use cads::util::Rng;

fn spheres(count: usize, seed: u64) -> Vec<TrainingCase> {
    let cfg = SphereConfig {
        size: [16, 32, 32],
        count: (2, 4),
        radius: (3.0, 6.0),
        noise_std: 0.3,
        ..SphereConfig::default()
    };
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let v = sphere_volume(&cfg, &mut rng).unwrap();
            let label = v.mask.iter().map(|&m| m as f32).collect();
            TrainingCase::new(
                Patch::new(v.image, cfg.size).unwrap(),
                Patch::new(label, cfg.size).unwrap(),
                2,
            )
            .unwrap()
        })
        .collect()
}

fn data() -> SegData {
    SegData {
        train: spheres(8, 1),
        validation: spheres(3, 2),
        classes: 2,
        class_names: vec!["background".into(), "sphere".into()],
        normalization: None,
        plan: None,
    }
}

fn config(epochs: usize, iterations: usize) -> SegTrainConfig {
    SegTrainConfig {
        model: ModelPreset::Tiny,
        patch: [16, 32, 32],
        batch: 2,
        epochs,
        iterations_per_epoch: iterations,
        optimizer: OptimizerKind::AdamW,
        lr: Some(3e-3),
        drop_path_rate: 0.0,
        workers: 1,
        seed: 3,
        ..SegTrainConfig::default()
    }
}

#[test]
fn a_short_run_on_spheres_reaches_the_stated_dice() {
    let gpu = common::gpu();
    let start = Instant::now();
    let report = train(
        &gpu,
        &config(3, 20),
        &data(),
        &RunOptions {
            augment: AugmentConfig {
                mirror_p: 0.5,
                ..AugmentConfig::none()
            },
            ..RunOptions::default()
        },
        |_| {},
    )
    .unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let dice: Vec<f64> = report.history.iter().map(|m| m.mean_val_dice).collect();
    let loss: Vec<f64> = report.history.iter().map(|m| m.train_loss).collect();
    eprintln!("validation Dice per epoch {dice:?}, loss {loss:?}, {seconds:.1} s");
    // Observed on Mesa lavapipe (2 shared cores): Dice 0.51, 0.72 after 25 and 50 steps.
    assert!(report.best_mean_dice >= 0.6, "best Dice {dice:?}");
    assert!(loss.last().unwrap() < &(0.85 * loss[0]), "loss {loss:?}");
    assert!(seconds < 180.0, "{seconds:.1} s");
}

#[test]
fn a_resumed_run_continues_exactly_and_writes_its_folder() {
    let gpu = common::gpu();
    let dir = std::env::temp_dir().join(format!("cads_segment_train_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = data();
    let run = |stop_after: Option<usize>, out: &std::path::Path, resume: bool| {
        train(
            &gpu,
            &config(2, 3),
            &data,
            &RunOptions {
                out: Some(out.to_path_buf()),
                resume,
                stop_after,
                ..RunOptions::default()
            },
            |_| {},
        )
        .unwrap()
    };
    let straight = run(None, &dir.join("a"), false);
    let first = run(Some(1), &dir.join("b"), false);
    assert_eq!(first.history.len(), 1);
    let resumed = run(None, &dir.join("b"), true);
    let losses = |h: &[EpochMetrics]| h.iter().map(|m| m.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&resumed.history), losses(&straight.history));
    for name in [
        "run.json",
        "metrics.jsonl",
        "curves.png",
        "checkpoint_latest.safetensors",
        "checkpoint_best.safetensors",
    ] {
        assert!(dir.join("b").join(name).exists(), "{name} missing");
    }
    let lines = std::fs::read_to_string(dir.join("b/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_nnunet_folder_loads_with_its_label_names_split_and_ct_normalisation() {
    use cads::data::{write_nifti, Datatype, Volume};
    use cads::segment::train::load_training_data;
    let dir = std::env::temp_dir().join(format!("cads_segment_folder_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("imagesTr")).unwrap();
    std::fs::create_dir_all(dir.join("labelsTr")).unwrap();
    let affine = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    // Five cases of [X, Y, Z] = [4, 4, 2]: HU −1000 background, 100·c + voxel index on class 1.
    for c in 0..5 {
        let label: Vec<f32> = (0..32).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let image: Vec<f32> = (0..32)
            .map(|i| {
                if i % 3 == 0 {
                    100.0 * c as f32 + i as f32
                } else {
                    -1000.0
                }
            })
            .collect();
        let v = |d, t| Volume::new(d, [4, 4, 2], affine, t).unwrap();
        write_nifti(
            dir.join(format!("imagesTr/c{c}_0000.nii.gz")),
            &v(image, Datatype::Float32),
            None,
        )
        .unwrap();
        write_nifti(
            dir.join(format!("labelsTr/c{c}.nii.gz")),
            &v(label, Datatype::Uint8),
            None,
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("dataset.json"),
        r#"{"labels": {"background": 0, "liver": 1}, "channel_names": {"0": "CT"}}"#,
    )
    .unwrap();
    let data = load_training_data(&dir, 0.2).unwrap();
    assert_eq!((data.train.len(), data.validation.len()), (4, 1));
    assert_eq!(data.class_names, vec!["background", "liver"]);
    assert_eq!(data.classes, 2);
    let n = data.normalization.unwrap();
    // Foreground of the training cases (c = 0..3) spans 0..330; background clips to the 0.5
    // percentile and every value is z-scored.
    assert!(n.lo >= 0.0 && n.hi <= 330.0 && n.std > 0.0, "{n:?}");
    let v = &data.validation[0];
    assert_eq!(v.image.shape, [2, 4, 4]);
    assert_eq!(v.image.data[1], (n.lo - n.mean) / n.std);
    assert_eq!(v.class_voxels[0].0, 1);
    std::fs::remove_dir_all(&dir).ok();
}

/// `loss_scale` in f32: the scale is a power of two and nothing overflows, so the run trains
/// exactly as without it; its checkpoint holds the scaler (three clean steps at 2^16).
#[test]
fn loss_scaling_in_f32_trains_the_same_and_checkpoints_its_scale() {
    use cads::checkpoint::LoadedCheckpoint;
    use cads::nn::Module;
    let gpu = common::gpu();
    let dir = std::env::temp_dir().join(format!("cads_segment_scale_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = data();
    let run = |loss_scale: bool, out: Option<std::path::PathBuf>| {
        let cfg = SegTrainConfig {
            loss_scale,
            ..config(1, 3)
        };
        let opts = RunOptions {
            out,
            ..RunOptions::default()
        };
        train(&gpu, &cfg, &data, &opts, |_| {}).unwrap()
    };
    let plain = run(false, None);
    let scaled = run(true, Some(dir.clone()));
    let losses = |h: &[EpochMetrics]| h.iter().map(|m| m.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&scaled.history), losses(&plain.history));
    let weights = |net: &cads::models::PvtUnet| -> Vec<Vec<u32>> {
        net.named_state()
            .iter()
            .map(|e| {
                e.tensor
                    .to_vec()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect()
    };
    assert_eq!(weights(&scaled.net), weights(&plain.net));
    let path = dir.join("checkpoint_latest.safetensors");
    let ck = LoadedCheckpoint::read(path.to_str().unwrap()).unwrap();
    let s = ck.loss_scaler("loss_scaler").unwrap();
    assert_eq!((s.scale, s.growth_tracker), (65536.0, 3));
    std::fs::remove_dir_all(&dir).ok();
}
