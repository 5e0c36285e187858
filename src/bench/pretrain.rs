//! One CADS pretraining step (`pretrain::CadsTrainer::step`) at batch 2: teacher forward on the
//! two CT views, student forward on the two views (3D) and the DRR (2D), the deep
//! self-distillation loss, backward, per-tensor clipping, AdamW, EMA and center update — the
//! whole iteration of CADS.md "One step", on random views of the CADS shapes (x1, x2
//! `[2, 16, 48, 48, 1]`, xD `[2, 96, 96, 1]`). Prints ms per step and the pool's peak bytes.
//!
//! - `b1_n2`: the paper's preset (PVTv2-b1, four heads, K = 60000). ONE step after the warm-up
//!   steps (until a step creates no new buffer, at most three), no repetitions (on lavapipe a
//!   step takes seconds).
//! - `tiny_n2`: the `tiny` preset, timed like every case.
//! - `*_checkpointed`: the same with the student's encoder blocks checkpointed
//!   (`CadsConfig::checkpoint_blocks`): the peak bytes it saves, the time it costs.
//!
//! Work: the 3D encoder's FLOPs only (teacher forward on 2B views = 1×, student forward +
//! backward on 2B views = 3×, so 4 · 2B · f); the heads, the 2D path and the optimizer come on
//! top, so the GFLOP/s printed is a lower bound. `scripts/bench_torch_peers.py` times the same
//! step in PyTorch (case `pretrain_step`).

use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::error::Result;
use crate::pretrain::{CadsConfig, CadsTrainer, StepInput};
use crate::util::Rng;

const N: usize = 2;

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "pretrain_step",
            case: "tiny_n2",
            run: |b| timed(b, CadsConfig::tiny()),
        },
        Case {
            op: "pretrain_step",
            case: "b1_n2",
            run: |b| once(b, CadsConfig::cads()),
        },
        Case {
            op: "pretrain_step",
            case: "tiny_n2_checkpointed",
            run: |b| timed(b, checkpointed(CadsConfig::tiny())),
        },
        Case {
            op: "pretrain_step",
            case: "b1_n2_checkpointed",
            run: |b| once(b, checkpointed(CadsConfig::cads())),
        },
    ]
}

fn checkpointed(cfg: CadsConfig) -> CadsConfig {
    CadsConfig {
        checkpoint_blocks: true,
        ..cfg
    }
}

fn inputs(gpu: &crate::Gpu, rng: &mut Rng, cfg: &CadsConfig) -> Result<StepInput> {
    let [d, h, w] = cfg.ct_view;
    Ok(StepInput {
        x1: random(gpu, rng, &[N, d, h, w, 1])?,
        x2: random(gpu, rng, &[N, d, h, w, 1])?,
        drr: random(gpu, rng, &[N, cfg.drr_size, cfg.drr_size, 1])?,
    })
}

fn work(cfg: &CadsConfig) -> Work {
    let f = super::pvt::forward_flops(&cfg.encoder, cfg.ct_view);
    Work::Flops(4.0 * 2.0 * N as f64 * f)
}

fn trainer(b: &Bench, mut cfg: CadsConfig) -> Result<(CadsTrainer, CadsConfig)> {
    cfg.batch_size = N;
    // Past the warm-up and the last-layer freeze: the step updates every tensor.
    let t = CadsTrainer::new(b.gpu(), &cfg, 1)?;
    Ok((t, cfg))
}

fn timed(b: &Bench, cfg: CadsConfig) -> Result<Sample> {
    let (mut t, cfg) = trainer(b, cfg)?;
    t.iteration = cfg.epochs.min(4);
    let make = |gpu: &crate::Gpu, r: &mut Rng| inputs(gpu, r, &cfg);
    let ms = b.time_with_grad(make, |x| t.step(x).map(|_| ()))?;
    let peak = b.peak_bytes(make, |x| t.step(x).map(|_| ()))?;
    drop(t);
    b.gpu().trim_pool();
    Ok(Sample::whole_step(ms, work(&cfg), peak))
}

fn once(b: &Bench, cfg: CadsConfig) -> Result<Sample> {
    let (mut t, cfg) = trainer(b, cfg)?;
    t.iteration = cfg.epochs.min(4);
    // Warm-up steps until one creates no buffer (at most three): the first step creates the
    // optimizer state and the second still finds buffer classes the pool has not settled on
    // (137 new buffers at b1_n2, whose first touch is page faults), so the timed step is the
    // steady state of a training loop.
    let warm = inputs(b.gpu(), &mut Rng::new(1), &cfg)?;
    for _ in 0..3 {
        let created = b.gpu().pool_stats().allocations;
        t.step(&warm)?.read()?;
        if b.gpu().pool_stats().allocations == created {
            break;
        }
    }
    drop(warm);
    let (ms, peak) = b.once_with_grad(|gpu, r| inputs(gpu, r, &cfg), |x| t.step(x).map(|_| ()))?;
    drop(t);
    b.gpu().trim_pool();
    Ok(Sample::whole_step(ms, work(&cfg), peak))
}
