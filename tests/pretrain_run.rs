//! The CADS run (src/pretrain/run.rs) on the tiny preset: a run stopped by the stop flag (the
//! Ctrl-C path, without a signal) and resumed from its checkpoint takes the same steps as a
//! straight run, losses bit for bit on the same adapter; the metrics continue one curve; the
//! exported teacher backbone loads strictly into `PvtEncoder`.

mod common;

use cads::data::phantom::{phantom, PhantomConfig};
use cads::models::pvt::PvtEncoder;
use cads::nn::state_file::{load_safetensors, LoadOptions};
use cads::pretrain::batch::CadsVolume;
use cads::pretrain::cache::{preprocess_volume, CacheConfig};
use cads::pretrain::cads_views::ParallelLineIntegral;
use cads::pretrain::engine::CadsEngine;
use cads::pretrain::run::{run_pretraining, RunOptions};
use cads::pretrain::{cads_tiles, extract_tile, CadsConfig};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

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
    vec![CadsVolume { tiles, drr }]
}

fn options(out: &PathBuf) -> RunOptions {
    let _ = std::fs::remove_dir_all(out);
    let mut o = RunOptions::new(out);
    o.epochs = 2;
    o.iters_per_epoch = Some(2);
    o.batch = 2;
    o.progress = false;
    o.seed = 5;
    o
}

#[test]
fn resume_after_stop_equals_a_straight_run() {
    let gpu = common::gpu();
    let config = CadsConfig::tiny();
    let base = std::env::temp_dir().join(format!("cads_pretrain_run_{}", std::process::id()));
    let vols = volumes();
    let never = AtomicBool::new(false);

    let straight_dir = base.join("straight");
    let straight = options(&straight_dir);
    let (_, s) = run_pretraining(
        &straight,
        vols.clone(),
        |ipe| CadsEngine::new(&gpu, &config, ipe),
        &never,
    )
    .unwrap();
    assert_eq!(s.losses.len(), 4);
    assert!(!s.interrupted);
    assert!(s.losses.iter().all(|l| l.is_finite()));

    // The stop flag raised before the first step: one step, a checkpoint, `interrupted`.
    let split_dir = base.join("split");
    let split = options(&split_dir);
    let stop = AtomicBool::new(true);
    let (_, a) = run_pretraining(
        &split,
        vols.clone(),
        |ipe| CadsEngine::new(&gpu, &config, ipe),
        &stop,
    )
    .unwrap();
    assert!(a.interrupted);
    assert_eq!((a.losses.len(), a.iteration), (1, 1));
    assert!(split.checkpoint_path().is_file());

    let resumed = RunOptions {
        resume: true,
        ..split.clone()
    };
    let (_, b) = run_pretraining(
        &resumed,
        vols,
        |ipe| CadsEngine::new(&gpu, &config, ipe),
        &never,
    )
    .unwrap();
    assert_eq!(b.iteration, 4);
    let joined: Vec<u32> = a
        .losses
        .iter()
        .chain(&b.losses)
        .map(|l| l.to_bits())
        .collect();
    let want: Vec<u32> = s.losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(
        joined,
        want,
        "resumed {:?} vs straight {:?}",
        [a.losses, b.losses],
        s.losses
    );

    // One curve in metrics.jsonl: steps 0..3 once each, the same losses.
    let text = std::fs::read_to_string(split_dir.join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![0, 1, 2, 3]);
    assert!(rows[0]["stage_losses"].as_array().unwrap().len() == 4);
    assert!(split_dir.join("loss.png").is_file());

    // The teacher backbone: authors' keys, strict load into the encoder.
    let teacher = split_dir.join("teacher_backbone.safetensors");
    let bytes = std::fs::read(&teacher).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.names().iter().all(|n| n.starts_with("backbone.")));
    assert!(st.names().contains(&"backbone.block1.0.attn.q.weight"));
    let encoder = PvtEncoder::new(&gpu, config.encoder.clone()).unwrap();
    load_safetensors(
        &encoder,
        &teacher.display().to_string(),
        &LoadOptions::strict().take_prefix("backbone."),
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&base);
}
