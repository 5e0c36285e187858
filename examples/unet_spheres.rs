//! Train a small 3D U-Net on synthetic sphere volumes and report held-out foreground Dice.
//!
//! `cargo run --release --example unet_spheres [-- --steps N] [--seed S]`
//!
//! Trains on a fresh stream of noisy random-ball volumes (seed 0 unless `--seed`), then scores volumes drawn with
//! another seed; exits with an error when the held-out mean Dice is below 0.9. The pieces live in
//! the library: `data::spheres` (generator), `models::unet` (network), `infer::dice` (metric),
//! `train::spheres` (loop and evaluation).

use std::time::Instant;

use cads::train::spheres::{evaluate_dice, train_unet_spheres, SpheresConfig};
use cads::{Error, Gpu, Result};

/// The run must reach this held-out mean foreground Dice.
const REQUIRED_DICE: f64 = 0.9;
const HELD_OUT_VOLUMES: usize = 16;
const HELD_OUT_SEED: u64 = 1_000_003;
const LOG_EVERY: usize = 25;

fn main() -> Result<()> {
    let mut cfg = SpheresConfig::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        let number = |flag: &str| {
            value
                .parse::<u64>()
                .map_err(|_| Error::invalid("unet_spheres", format!("{flag} <integer>"), value))
        };
        match pair[0].as_str() {
            "--steps" => cfg.steps = number("--steps")? as usize,
            "--seed" => cfg.seed = number("--seed")?,
            other => {
                return Err(Error::invalid(
                    "unet_spheres",
                    "--steps N and/or --seed S",
                    other,
                ))
            }
        }
    }
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.adapter().name);
    println!(
        "volumes {:?}, batch {}, widths {:?}, {} steps, AdamW lr {} (poly), wd {}, seed {}",
        cfg.volume.size, cfg.batch, cfg.unet.widths, cfg.steps, cfg.lr, cfg.weight_decay, cfg.seed
    );
    let start = Instant::now();
    let mut window = Vec::with_capacity(LOG_EVERY);
    let run = train_unet_spheres(&gpu, &cfg, |step, loss| {
        window.push(loss);
        if window.len() == LOG_EVERY || step + 1 == cfg.steps {
            let mean = window.iter().sum::<f32>() / window.len() as f32;
            println!(
                "step {:4}  loss {loss:.4}  (mean of last {}: {mean:.4})  {:.1} s",
                step + 1,
                window.len(),
                start.elapsed().as_secs_f64()
            );
            window.clear();
        }
    })?;
    let train_s = start.elapsed().as_secs_f64();
    let report = evaluate_dice(
        &gpu,
        &run.model,
        &cfg.volume,
        HELD_OUT_VOLUMES,
        HELD_OUT_SEED,
    )?;
    let worst = report.per_volume.iter().cloned().fold(1.0, f64::min);
    println!(
        "held-out Dice over {HELD_OUT_VOLUMES} volumes (seed {HELD_OUT_SEED}): mean {:.4}, pooled {:.4}, worst {worst:.4}",
        report.mean, report.pooled
    );
    println!(
        "wall time: training {train_s:.1} s, total {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if report.mean < REQUIRED_DICE {
        return Err(Error::invalid(
            "unet_spheres",
            format!("held-out mean Dice >= {REQUIRED_DICE}"),
            format!("{:.4}", report.mean),
        ));
    }
    Ok(())
}
