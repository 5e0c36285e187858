//! Where the memory of a CADS pretraining step goes: the pool's bytes (`Gpu::pool_stats`, every
//! buffer at its size class) for one preset and batch, with or without checkpointed encoder
//! blocks. Prints one JSON line:
//!
//! - `resident_bytes`: student, teacher, DINO center and AdamW moments after a first step;
//! - `student_graph_bytes`: what the student's forward keeps for backward (activations) at this
//!   batch (the forward is run on its own and dropped);
//! - `step_peak_bytes`: the peak of a steady-state step (the second), resident state included.
//!
//! Random views of the preset's shapes. docs/pretraining.md quotes its output.
//!
//! Run: `cargo run --release --example pretrain_memory -- [cads|tiny] BATCH [--checkpoint-blocks]`

use cads::models::pvt::Modality;
use cads::pretrain::{CadsConfig, CadsTrainer, StepInput};
use cads::util::Rng;
use cads::{Gpu, Tensor};

fn views(gpu: &Gpu, cfg: &CadsConfig, rng: &mut Rng) -> cads::Result<StepInput> {
    let b = cfg.batch_size;
    let [d, h, w] = cfg.ct_view;
    let s = cfg.drr_size;
    let mut random = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_slice(gpu, &rng.vec_uniform(n, -1.0, 1.0), shape)
    };
    Ok(StepInput {
        x1: random(&[b, d, h, w, 1])?,
        x2: random(&[b, d, h, w, 1])?,
        drr: random(&[b, s, s, 1])?,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: pretrain_memory [cads|tiny] BATCH [--checkpoint-blocks]";
    let preset = args.first().ok_or(usage)?;
    let batch: usize = args.get(1).ok_or(usage)?.parse()?;
    let mut cfg = CadsConfig::preset(preset)?;
    cfg.batch_size = batch;
    cfg.checkpoint_blocks = args.iter().any(|a| a == "--checkpoint-blocks");
    let gpu = Gpu::new()?;
    // Past the warm-up and the last-layer freeze, so every tensor has a gradient and moments.
    let mut trainer = CadsTrainer::new(&gpu, &cfg, 1)?;
    trainer.iteration = cfg.freeze_last_layer_epochs.min(cfg.epochs - 1);
    let mut rng = Rng::new(7);

    let first = views(&gpu, &cfg, &mut rng)?;
    trainer.step(&first)?.read()?;
    drop(first);
    gpu.synchronize()?;
    let resident = gpu.pool_stats().live_bytes;

    let input = views(&gpu, &cfg, &mut rng)?;
    let x12 = gpu.no_grad(|| Tensor::concat(&[&input.x1, &input.x2], 0))?;
    gpu.synchronize()?;
    let before = gpu.pool_stats().live_bytes;
    let student = trainer.model.student.forward(
        &[(&x12, Modality::Volume), (&input.drr, Modality::Image)],
        true,
        &mut Rng::new(1),
    )?;
    gpu.synchronize()?;
    let graph = gpu.pool_stats().live_bytes - before;
    drop(student);
    drop(x12);

    gpu.synchronize()?;
    gpu.reset_peak_memory();
    trainer.step(&input)?.read()?;
    gpu.synchronize()?;
    let peak = gpu.pool_stats().peak_bytes;
    println!(
        "{}",
        serde_json::json!({
            "preset": preset,
            "batch": batch,
            "checkpoint_blocks": cfg.checkpoint_blocks,
            "resident_bytes": resident,
            "student_graph_bytes": graph,
            "step_peak_bytes": peak,
            "adapter": gpu.adapter().name,
        })
    );
    Ok(())
}
