//! The CADS run (src/pretrain/run.rs) on the tiny preset: a run stopped by the stop flag (the
//! Ctrl-C path, without a signal) and resumed from its checkpoint takes the same steps as a
//! straight run, losses bit for bit on the same adapter; the metrics continue one curve; the
//! exported teacher backbone loads strictly into `PvtEncoder` and into PVT-UNet's encoder
//! (equal to the teacher's afterwards); a longer resume is refused
//! unless its schedules may change; reading the loss every 4 steps trains the same weights and
//! marks the unread lines stale; a non-finite read stops the run before any checkpoint holds it.

mod common;

use cads::checkpoint::{Checkpoint, LoadedCheckpoint};
use cads::data::phantom::{phantom, PhantomConfig};
use cads::models::pvt::{Modality, PvtEncoder};
use cads::models::{PvtUnet, PvtUnetConfig};
use cads::nn::state_file::{load_safetensors, LoadOptions};
use cads::nn::Module;
use cads::pretrain::batch::CadsVolume;
use cads::pretrain::cache::{preprocess_volume, CacheConfig};
use cads::pretrain::cads_views::ParallelLineIntegral;
use cads::pretrain::engine::CadsEngine;
use cads::pretrain::run::{run_pretraining, LossRead, PretrainEngine, RunOptions, StepReport};
use cads::pretrain::{cads_tiles, extract_tile, CadsBatch, CadsConfig};
use cads::util::Rng;
use std::path::{Path, PathBuf};
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
    vec![CadsVolume::in_memory(tiles, drr)]
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
    // The recipe's epoch count is the run's (`cads pretrain` sets both from --epochs).
    let config = CadsConfig {
        epochs: 2,
        ..CadsConfig::tiny()
    };
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

    // Lengthening the finished 2-epoch run: its schedules differ from a 3-epoch run's on the
    // steps taken, so it is refused, saying why and what to do, and changes nothing ...
    let longer = CadsConfig {
        epochs: 3,
        ..config.clone()
    };
    let mut extended = RunOptions {
        epochs: 3,
        ..resumed.clone()
    };
    let err = run_pretraining(
        &extended,
        volumes(),
        |ipe| CadsEngine::new(&gpu, &longer, ipe),
        &never,
    )
    .err()
    .expect("a longer resume without --extend-schedules is refused");
    let msg = err.to_string();
    for part in [
        "first at iteration 1",
        "--epochs 2",
        "--extend-schedules",
        "lr ",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    // ... and with extend_schedules it continues from iteration 4 to the new end, 6.
    extended.extend_schedules = true;
    let (engine, c) = run_pretraining(
        &extended,
        volumes(),
        |ipe| CadsEngine::new(&gpu, &longer, ipe),
        &never,
    )
    .unwrap();
    assert_eq!((c.losses.len(), c.iteration), (2, 6));
    assert_eq!(engine.trainer.config.epochs, 3);
    let text = std::fs::read_to_string(split_dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4, 5]);

    // The exported teacher initialises PVT-UNet's encoder (as `cads segment train
    // --init-from` does): strictly by name under `backbone.`, only the 2D path's tensors left
    // out, every volume-path tensor equal to the teacher's after the load.
    let unet = PvtUnet::new(
        &gpu,
        PvtUnetConfig {
            encoder: longer.encoder.clone(),
            ..PvtUnetConfig::tiny(3)
        },
    )
    .unwrap();
    let teacher_encoder = &engine.trainer.model.teacher.encoder;
    let want = teacher_encoder.named_parameters(Some(Modality::Volume));
    let before = unet.encoder.named_parameters(None);
    assert_eq!(want.len(), before.len());
    assert!(
        want.iter()
            .zip(&before)
            .any(|((_, a), (_, b))| a.to_vec().unwrap() != b.to_vec().unwrap()),
        "a fresh PVT-UNet already equals the teacher: the load below would prove nothing"
    );
    let report = unet
        .load_encoder(
            &split_dir
                .join("teacher_backbone.safetensors")
                .display()
                .to_string(),
        )
        .unwrap();
    assert!(
        report.missing.is_empty() && report.unknown.is_empty(),
        "{report:?}"
    );
    assert!(
        report.skipped.iter().all(|k| k.contains("_2D")),
        "{report:?}"
    );
    assert!(!report.skipped.is_empty());
    let got = unet.encoder.named_parameters(None);
    for ((n1, a), (n2, b)) in want.iter().zip(&got) {
        assert_eq!(n1, n2);
        assert!(
            a.to_vec().unwrap() == b.to_vec().unwrap(),
            "{n1}: PVT-UNet's encoder differs from the teacher's"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

/// Final student weights of a run, bit for bit.
fn student_bits(engine: &CadsEngine) -> Vec<(String, Vec<u32>)> {
    engine
        .trainer
        .model
        .student
        .named_state()
        .into_iter()
        .map(|e| {
            let bits = e
                .tensor
                .to_vec()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            (e.name, bits)
        })
        .collect()
}

#[test]
fn reading_the_loss_every_4_steps_trains_the_same_weights_and_marks_stale_lines() {
    let gpu = common::gpu();
    let base = std::env::temp_dir().join(format!("cads_pretrain_read_{}", std::process::id()));
    let vols = volumes();
    let never = AtomicBool::new(false);
    let run = |read_every: u64| {
        let config = CadsConfig {
            read_every,
            epochs: 3,
            ..CadsConfig::tiny()
        };
        let dir = base.join(format!("every{read_every}"));
        let mut opts = options(&dir);
        // 6 steps: reads at 0 (the first), 4 (a multiple of 4) and 5 (the last).
        opts.epochs = 3;
        let (engine, summary) = run_pretraining(
            &opts,
            vols.clone(),
            |ipe| CadsEngine::new(&gpu, &config, ipe),
            &never,
        )
        .unwrap();
        let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (student_bits(&engine), summary, rows)
    };
    let (every1, s1, rows1) = run(1);
    let (every4, s4, rows4) = run(4);
    assert_eq!(every1.len(), every4.len());
    for ((name, a), (_, b)) in every1.iter().zip(&every4) {
        assert!(a == b, "{name} differs between read_every 1 and 4");
    }
    let steps = |rows: &[serde_json::Value]| -> Vec<u64> {
        rows.iter().map(|r| r["step"].as_u64().unwrap()).collect()
    };
    assert_eq!(steps(&rows1), (0..6).collect::<Vec<_>>());
    assert_eq!(steps(&rows4), (0..6).collect::<Vec<_>>());
    assert!(rows1.iter().all(|r| r.get("stale").is_none()));
    // Read lines carry their own step's values, as the every-step run read them; the others
    // are marked stale and repeat the last read before them.
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    for (step, row) in rows4.iter().enumerate() {
        let read = [0, 4, 5].contains(&step);
        assert_eq!(row.get("stale").is_some(), !read, "step {step}: {row}");
        if read {
            assert_eq!(loss(row), loss(&rows1[step]), "step {step}");
            assert_eq!(row["stage_losses"], rows1[step]["stage_losses"]);
        } else {
            let from: usize = if step < 4 { 0 } else { 4 };
            assert_eq!(row["stale"], true);
            assert_eq!(row["loss_step"].as_u64(), Some(from as u64), "step {step}");
            assert_eq!(loss(row), loss(&rows1[from]), "step {step}");
        }
        // The host values (lr, schedules) are every step's own.
        assert_eq!(row["lr"], rows1[step]["lr"]);
        assert_eq!(row["wd"], rows1[step]["wd"]);
    }
    assert_eq!(s4.losses.len(), 6);
    assert_eq!(s1.losses.len(), 6);
    let _ = std::fs::remove_dir_all(&base);
}

/// An engine that reports scripted losses, each read coming back one step late (as the CADS
/// engine's asynchronous reads do): exercises the run's read, stale and non-finite logic.
struct Scripted {
    iteration: u64,
    losses: Vec<f32>,
    in_flight: Vec<u64>,
    rng: Rng,
}

impl Scripted {
    fn read(&self, iteration: u64) -> LossRead {
        LossRead {
            iteration,
            loss: self.losses[iteration as usize],
            ..LossRead::default()
        }
    }
}

impl PretrainEngine for Scripted {
    fn read_every(&self) -> u64 {
        3
    }
    fn step(&mut self, _: &CadsBatch, read: bool) -> cads::Result<StepReport> {
        let iteration = self.iteration;
        self.iteration += 1;
        let reads = std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|i| self.read(i))
            .collect();
        if read {
            self.in_flight.push(iteration);
        }
        Ok(StepReport {
            iteration,
            lr: 0.0,
            schedule: Default::default(),
            reads,
        })
    }
    fn finish_reads(&mut self) -> cads::Result<Vec<LossRead>> {
        Ok(std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|i| self.read(i))
            .collect())
    }
    fn iteration(&self) -> u64 {
        self.iteration
    }
    fn checkpoint(&self) -> cads::Result<Checkpoint<'_>> {
        Ok(Checkpoint::new().rng("scripted", &self.rng))
    }
    fn restore(&mut self, ck: &LoadedCheckpoint) -> cads::Result<()> {
        self.iteration = ck.position().iteration;
        Ok(())
    }
    fn export_teacher_backbone(&self, path: &Path) -> cads::Result<()> {
        std::fs::write(path, b"scripted").map_err(|e| cads::Error::invalid("export", "a file", e))
    }
    fn config_json(&self) -> String {
        "{}".into()
    }
}

#[test]
fn a_non_finite_read_stops_the_run_and_no_checkpoint_is_written_after_it() {
    let dir = std::env::temp_dir().join(format!("cads_pretrain_nan_{}", std::process::id()));
    let mut opts = options(&dir);
    opts.epochs = 1;
    opts.iters_per_epoch = Some(10);
    opts.checkpoint_every = 4;
    // Finite until step 5, which diverges (and every step after it, as NaN weights would).
    let mut losses = vec![1.0f32; 10];
    for l in &mut losses[5..] {
        *l = f32::NAN;
    }
    let engine = Scripted {
        iteration: 0,
        losses,
        in_flight: Vec::new(),
        rng: Rng::new(0),
    };
    let never = AtomicBool::new(false);
    let err = run_pretraining(&opts, volumes(), |_| Ok(engine), &never)
        .err()
        .expect("a NaN read stops the run");
    let msg = err.to_string();
    // Steps 4 and 5 are not read (read_every 3); step 6 is, and is the first NaN seen.
    assert!(msg.contains("NaN at iteration 6"), "{msg}");
    assert!(msg.contains("at iteration 4, precedes it"), "{msg}");
    let ck = LoadedCheckpoint::read(&opts.checkpoint_path().display().to_string()).unwrap();
    assert_eq!(ck.position().iteration, 4);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (0..=6).collect::<Vec<_>>());
    let stale: Vec<Option<u64>> = rows.iter().map(|r| r["loss_step"].as_u64()).collect();
    assert_eq!(
        stale,
        vec![None, Some(0), Some(0), None, Some(3), Some(3), None]
    );
    assert!(rows[6]["loss"].is_null(), "{}", rows[6]);
    let _ = std::fs::remove_dir_all(&dir);
}
