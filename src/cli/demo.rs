//! `cads demo` (the default job): train a small MLP on the toy spiral problem and print the loss.

use cads::gpu::AdapterChoice;
use cads::train::toy::{train_mlp, ToyConfig};
use cads::{Gpu, Result};

pub fn run(choice: &AdapterChoice, steps: usize, seed: u64) -> Result<()> {
    let gpu = Gpu::with_choice(choice)?;
    out!(
        "cads demo on {} ({:?}): 2-64-64-3 GELU MLP, AdamW, three spirals",
        gpu.adapter().name,
        gpu.adapter().backend
    );
    let cfg = ToyConfig {
        steps,
        seed,
        ..ToyConfig::default()
    };
    let start = std::time::Instant::now();
    let losses = train_mlp(&gpu, &cfg, |step, loss| {
        if step % 25 == 0 || step + 1 == steps {
            out!("step {step:4}  loss {loss:.4}");
        }
    })?;
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        out!(
            "loss {first:.4} -> {last:.4} in {steps} steps, {:.2} s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
