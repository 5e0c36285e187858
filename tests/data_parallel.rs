//! Data parallel in one process (src/dist): two replicas, each on its own `Gpu` context (two
//! devices of the one lavapipe adapter), each with half the global batch, against one device
//! with the whole batch — a tiny CADS pretraining run and a tiny PVT-UNet training run give the
//! same per-step losses and the same final weights within the stated tolerance, and the two
//! replicas end bit-for-bit identical; so does segmentation with nnU-Net's batch Dice (a ratio of
//! sums over the global batch). The pretraining collapse monitors KL(P̄_t ‖ u) and the feature
//! std of two replicas are those of the whole batch (also checked on their own, where the
//! replicas' averaged values are shown to differ). Also: a replica that fails ends the other's
//! run with an error naming it, quickly. The gradient buckets and the all-reduce overlapped with
//! the backward pass are in tests/data_parallel_buckets.rs.
//!
//! What the equality rests on (src/dist/mod.rs): the loss of a shard is its mean, the gradients
//! are averaged; drop path and augmentation draw per global sample; the DINO center is the
//! global batch mean. Only the float summation order differs (a mean over 2 rows on one device,
//! two means over 1 row averaged on two), so the losses agree to ~1e-6; the weight tolerances
//! and why AdamW needs a wider one are in tests/replica_compare/mod.rs.

mod common;
#[path = "common/local_group.rs"]
mod local_group;
mod replica_compare;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cads::data::phantom::{phantom, PhantomConfig};
use cads::data::preprocess::Patch;
use cads::data::spheres::{sphere_volume, SphereConfig};
use cads::dist::{digest, DataParallel, LocalGroup};
use cads::nn::Module;
use cads::pretrain::batch::CadsVolume;
use cads::pretrain::cache::{preprocess_volume, CacheConfig};
use cads::pretrain::cads_views::ParallelLineIntegral;
use cads::pretrain::engine::CadsEngine;
use cads::pretrain::loss::{collapse_monitors, CadsLoss, LOSS_VALUES};
use cads::pretrain::replica_stats::global_step_stats;
use cads::pretrain::run::{run_pretraining, RunOptions};
use cads::pretrain::{cads_tiles, extract_tile, CadsConfig};
use cads::segment::augment::{AugmentConfig, TrainingCase};
use cads::segment::config::{ModelPreset, OptimizerKind, SegTrainConfig};
use cads::segment::train::{self, Progress, SegData};
use cads::util::Rng;
use cads::Gpu;
use local_group::TIMEOUT;
use replica_compare::{compare_states, host_state, Steps, LOSS_TOL};

fn volumes() -> Vec<CadsVolume> {
    let (ct, _) = phantom(&PhantomConfig {
        dims: [40, 40, 20],
        spacing_mm: [2.0, 2.0, 2.0],
        noise_hu: 5.0,
        seed: 3,
    })
    .unwrap();
    let cfg = CacheConfig::default();
    let (vol, drr) = preprocess_volume(&ct, &cfg, &ParallelLineIntegral::default()).unwrap();
    let tiles = cads_tiles(vol.shape, &cfg.tiling)
        .unwrap()
        .iter()
        .map(|t| extract_tile(&vol, t))
        .collect();
    vec![CadsVolume::in_memory(tiles, drr)]
}

fn pretrain_options(out: &std::path::Path) -> RunOptions {
    let mut o = RunOptions::new(out);
    // Two epochs of two steps: the last layer is frozen in the first (tiny preset) and trains
    // in the second; the teacher temperature and lr move between them.
    o.epochs = 2;
    o.iters_per_epoch = Some(2);
    o.batch = 2;
    o.progress = false;
    o.seed = 5;
    o.workers = 1;
    o
}

struct PretrainResult {
    losses: Vec<f32>,
    student: Vec<(String, Vec<f32>)>,
    teacher: Vec<(String, Vec<f32>)>,
    center: Vec<f32>,
    digest: u64,
}

fn pretrain_on(gpu: &Gpu, opts: &RunOptions, vols: Vec<CadsVolume>) -> PretrainResult {
    let config = CadsConfig::tiny();
    let never = AtomicBool::new(false);
    let dp = opts.data_parallel.clone();
    let (engine, summary) = run_pretraining(
        opts,
        vols,
        |ipe| {
            let mut e = CadsEngine::new(gpu, &config, ipe)?;
            e.trainer.data_parallel = dp;
            Ok(e)
        },
        &never,
    )
    .unwrap();
    let t = &engine.trainer;
    let mut all = t.model.student.parameter_tensors();
    all.extend(t.model.teacher.parameter_tensors());
    all.push(t.loss.center.clone());
    PretrainResult {
        losses: summary.losses,
        student: host_state(&t.model.student),
        teacher: host_state(&t.model.teacher),
        center: t.loss.center.to_vec().unwrap(),
        digest: digest(&all).unwrap(),
    }
}

#[test]
fn two_replicas_pretrain_like_one_device_with_the_whole_batch() {
    let base = std::env::temp_dir().join(format!("cads_dp_pretrain_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let vols = volumes();

    let one = pretrain_on(
        &common::gpu(),
        &pretrain_options(&base.join("one")),
        vols.clone(),
    );

    // Two replicas, each its own Gpu context; the same run folder (rank 0 alone writes it).
    let two_dir = base.join("two");
    let gpus: Vec<Gpu> = (0..2).map(|_| common::fresh_gpu()).collect();
    // Gradients reduced during the backward pass (the default) and after it.
    let run_two = |overlap: bool, dir: &std::path::Path| -> Vec<PretrainResult> {
        let results = LocalGroup::run(2, TIMEOUT, |comm| {
            let rank = cads::dist::Communicator::rank(&comm);
            let mut opts = pretrain_options(dir);
            let mut dp = DataParallel::new(Arc::new(comm));
            dp.overlap = overlap;
            opts.data_parallel = Some(dp.clone());
            let result = pretrain_on(&gpus[rank], &opts, vols.clone());
            // The overlapped path learned its bucket order from rank 0's first step.
            assert_eq!(
                dp.bucket_order().is_some_and(|o| o.learned()),
                overlap,
                "rank {rank}"
            );
            Ok(result)
        })
        .unwrap();
        results.into_iter().map(Result::unwrap).collect()
    };
    let two = run_two(true, &two_dir);
    let serial = run_two(false, &base.join("serial"));
    // The same sums in the same order, only grouped into other buckets: the same bits.
    assert_eq!(serial[0].losses, two[0].losses);
    assert_eq!(
        serial[0].digest, two[0].digest,
        "overlapped and serial all-reduce differ"
    );

    eprintln!(
        "one device {:?}\ntwo replicas {:?}",
        one.losses, two[0].losses
    );
    let want: Vec<f64> = one.losses.iter().map(|&v| v as f64).collect();
    assert_eq!(two[0].losses.len(), 4);
    common::assert_close("losses (rank 0)", &two[0].losses, &want, LOSS_TOL);
    // Both ranks report the global loss, bit for bit, and hold the same bits everywhere.
    assert_eq!(two[0].losses, two[1].losses);
    assert_eq!(two[0].digest, two[1].digest, "the replicas diverged");
    // Σ lr over the 4 steps ≤ 4 × the tiny preset's peak 5e-4.
    let lr_sum = 4.0 * CadsConfig::tiny().peak_lr();
    let steps = Steps::AdamW { lr_sum };
    compare_states("student", &two[0].student, &one.student, steps);
    compare_states("teacher", &two[0].teacher, &one.teacher, steps);
    let c64: Vec<f64> = one.center.iter().map(|&v| v as f64).collect();
    common::assert_close("center", &two[0].center, &c64, LOSS_TOL);

    // Rank 0 wrote the run folder: one metrics line per global step, whose collapse monitors
    // are the whole batch's.
    let text = std::fs::read_to_string(two_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    for key in ["entropy", "kl_uniform", "feature_std"] {
        let (got, want) = (
            metrics_values(&two_dir, key),
            metrics_values(&base.join("one"), key),
        );
        eprintln!("{key}: one device {want:?}, two replicas {got:?}");
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        common::assert_close(key, &got, &want, LOSS_TOL);
    }
    assert!(two_dir.join("checkpoint.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&base);
}

/// The values of `key` in a pretraining run's metrics.jsonl, one per step.
fn metrics_values(run: &std::path::Path, key: &str) -> Vec<f32> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} in {l}")) as f32
        })
        .collect()
}

/// Teacher rows for the monitor test: logits `[4, 16]` and pooled features `[4, 8]` around 100
/// whose last two rows (replica 1's) sit 0.5 higher, so that the spread between the replicas'
/// means matters, and the replicas' P̄_t differ.
fn teacher_rows() -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(21);
    let logits = rng.vec_uniform(4 * 16, -3.0, 3.0);
    let features = (0..4 * 8)
        .map(|i| 100.0 + 0.1 * rng.normal() as f32 + if i >= 16 { 0.5 } else { 0.0 })
        .collect();
    (logits, features)
}

#[test]
fn collapse_monitors_of_two_replicas_are_the_whole_batch_monitors() {
    let (logits, features) = teacher_rows();
    let loss = |gpu: &Gpu| CadsLoss::new(gpu, 16, 0.1, 0.9).unwrap();
    // One device, the 4 rows: [H, KL, std].
    let gpu = common::gpu();
    let t = cads::Tensor::from_slice(&gpu, &logits, &[4, 16]).unwrap();
    let f = cads::Tensor::from_slice(&gpu, &features, &[4, 8]).unwrap();
    let (z, p) = loss(&gpu).teacher_probs(&t, 0.5).unwrap();
    let want: Vec<f64> = collapse_monitors(&z, &p, &f)
        .unwrap()
        .iter()
        .map(|m| m.to_scalar().unwrap() as f64)
        .collect();
    let center: Vec<f64> = (0..16)
        .map(|c| (0..4).map(|r| logits[r * 16 + c] as f64).sum::<f64>() / 4.0)
        .collect();

    // Two replicas of 2 rows each.
    let gpus: Vec<Gpu> = (0..2).map(|_| common::fresh_gpu()).collect();
    let out = LocalGroup::run(2, TIMEOUT, |comm| {
        let rank = cads::dist::Communicator::rank(&comm);
        let gpu = &gpus[rank];
        let t = cads::Tensor::from_slice(gpu, &logits[rank * 32..][..32], &[2, 16])?;
        let f = cads::Tensor::from_slice(gpu, &features[rank * 16..][..16], &[2, 8])?;
        let (z, p) = loss(gpu).teacher_probs(&t, 0.5)?;
        let own: Vec<f32> = collapse_monitors(&z, &p, &f)?
            .iter()
            .map(|m| m.to_scalar())
            .collect::<cads::Result<_>>()?;
        // Five stand-in loss values, then this replica's own monitors.
        let mut local = vec![rank as f32, 1.0, 2.0, 3.0, 4.0];
        local.extend(&own);
        let local = cads::Tensor::from_slice(gpu, &local, &[LOSS_VALUES])?;
        let dp = DataParallel::new(Arc::new(comm));
        let g = global_step_stats(&dp, &t, &p, &f, &local)?;
        Ok((own, g.values.to_vec()?, g.batch_center.to_vec()?))
    })
    .unwrap();
    let out: Vec<_> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(out[0].1, out[1].1, "the replicas' values differ");
    let values = &out[0].1;
    eprintln!(
        "one device [H, KL, std] {want:?}; two replicas {:?}",
        &values[5..]
    );
    common::assert_close(
        "stand-in values",
        &values[..5],
        &[0.5, 1.0, 2.0, 3.0, 4.0],
        LOSS_TOL,
    );
    common::assert_close("[H, KL, std]", &values[5..], &want, LOSS_TOL);
    common::assert_close("batch center", &out[0].2, &center, LOSS_TOL);
    // The replicas' own KL and std, averaged, are not the whole batch's (what this replaced).
    for (i, name) in [(1, "KL"), (2, "std")] {
        let mean = (out[0].0[i] + out[1].0[i]) as f64 / 2.0;
        eprintln!(
            "{name}: the replicas' own values averaged {mean}, the whole batch's {}",
            want[i]
        );
        assert!(
            (mean - want[i]).abs() > 100.0 * (LOSS_TOL.abs + LOSS_TOL.rel * want[i].abs()),
            "{name}: the replicas' mean {mean} is the global {} too: the case cannot tell",
            want[i]
        );
    }
}

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

struct SegResult {
    losses: Vec<f32>,
    net: Vec<(String, Vec<f32>)>,
    digest: u64,
}

fn segment_on(gpu: &Gpu, data: &SegData, dp: Option<DataParallel>, batch_dice: bool) -> SegResult {
    let cfg = SegTrainConfig {
        batch_dice,
        model: ModelPreset::Tiny,
        patch: [16, 32, 32],
        batch: 2,
        epochs: 1,
        iterations_per_epoch: 3,
        // nnU-Net's SGD (its step is proportional to the gradient: the strict comparison).
        optimizer: OptimizerKind::Sgd,
        drop_path_rate: 0.2,
        workers: 1,
        seed: 3,
        ..SegTrainConfig::default()
    };
    let mut losses = Vec::new();
    let report = train::train(
        gpu,
        &cfg,
        data,
        &train::RunOptions {
            // nnU-Net's augmentation: every sample's draws must follow it to its replica.
            augment: AugmentConfig::default(),
            data_parallel: dp,
            ..train::RunOptions::default()
        },
        |p| {
            if let Progress::Step { loss, .. } = p {
                losses.push(loss);
            }
        },
    )
    .unwrap();
    SegResult {
        losses,
        net: host_state(&report.net),
        digest: digest(&report.net.parameter_tensors()).unwrap(),
    }
}

fn sphere_data() -> SegData {
    SegData {
        train: spheres(4, 1),
        validation: spheres(1, 2),
        classes: 2,
        class_names: vec!["background".into(), "sphere".into()],
        normalization: None,
        plan: None,
    }
}

#[test]
fn two_replicas_train_segmentation_like_one_device_with_the_whole_batch() {
    segment_one_against_two(false);
}

/// Batch Dice: the per-class sums are all-reduced and each replica backpropagates the gradient
/// of the global loss (segment::global_batch_dice).
#[test]
fn two_replicas_train_segmentation_with_batch_dice_like_one_device() {
    segment_one_against_two(true);
}

fn segment_one_against_two(batch_dice: bool) {
    let data = sphere_data();
    let one = segment_on(&common::gpu(), &data, None, batch_dice);
    let gpus: Vec<Gpu> = (0..2).map(|_| common::fresh_gpu()).collect();
    let run_two = |overlap: bool| -> Vec<SegResult> {
        let two = LocalGroup::run(2, TIMEOUT, |comm| {
            let rank = cads::dist::Communicator::rank(&comm);
            let mut dp = DataParallel::new(Arc::new(comm));
            dp.overlap = overlap;
            Ok(segment_on(&gpus[rank], &data, Some(dp), batch_dice))
        })
        .unwrap();
        two.into_iter().map(Result::unwrap).collect()
    };
    let two = run_two(true);
    let serial = run_two(false);
    assert_eq!(serial[0].losses, two[0].losses);
    assert_eq!(
        serial[0].digest, two[0].digest,
        "overlapped and serial all-reduce differ"
    );
    eprintln!(
        "batch Dice {batch_dice}: one device {:?}\ntwo replicas {:?}",
        one.losses, two[0].losses
    );
    let want: Vec<f64> = one.losses.iter().map(|&v| v as f64).collect();
    assert_eq!(two[0].losses.len(), 3);
    // Rank 0 reports progress; the other rank reports nothing.
    assert!(two[1].losses.is_empty());
    common::assert_close("losses", &two[0].losses, &want, LOSS_TOL);
    assert_eq!(two[0].digest, two[1].digest, "the replicas diverged");
    compare_states("net", &two[0].net, &one.net, Steps::Sgd);
}

#[test]
fn a_failing_replica_ends_the_other_with_its_error() {
    let vols = volumes();
    let dir = std::env::temp_dir().join(format!("cads_dp_fail_{}", std::process::id()));
    let gpu = common::fresh_gpu();
    let started = Instant::now();
    let results = LocalGroup::run(2, TIMEOUT, |comm| {
        let rank = cads::dist::Communicator::rank(&comm);
        let mut opts = pretrain_options(&dir);
        opts.data_parallel = Some(DataParallel::new(Arc::new(comm)));
        let never = AtomicBool::new(false);
        let config = CadsConfig::tiny();
        run_pretraining(
            &opts,
            vols.clone(),
            |ipe| {
                if rank == 1 {
                    // A replica whose setup fails (e.g. its device is lost).
                    return Err(cads::Error::invalid("make_engine", "a device", "none left"));
                }
                CadsEngine::new(&gpu, &config, ipe)
            },
            &never,
        )
        .map(|_| ())
    })
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let msg = results[0].as_ref().unwrap_err().to_string();
    assert!(
        msg.contains("rank 1 failed") && msg.contains("none left"),
        "{msg}"
    );
    assert!(results[1].is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
