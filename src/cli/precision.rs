//! `--precision f32|amp` and the loss-scaling default of the training commands (`cads pretrain`,
//! `cads segment train`).
//!
//! `amp` is PyTorch's autocast + GradScaler loop: the step's forward and backward under
//! `Gpu::autocast(Precision::Mixed)` (the linear layers multiply f16 operands with f32
//! accumulation), f32 master weights and optimizer, and dynamic loss scaling on unless
//! `--no-loss-scale` (the f16 gradients of the matmuls would otherwise underflow). On a device
//! without `SHADER_F16` the command says so in one line and trains in f32, and the run records
//! f32, the precision that ran.

use cads::gpu::{Gpu, Precision};

/// The precision that runs on `gpu` for the requested one; `announce`: print the one line
/// saying that mixed precision is unavailable when it falls back (rank 0 only under MPI).
pub fn training_precision(gpu: &Gpu, requested: Precision, announce: bool) -> Precision {
    let runs = gpu.supported_precision(requested);
    if runs != requested && announce {
        eprintln!(
            "--precision {requested}: mixed precision is unavailable on this adapter ({}: no \
             SHADER_F16); training in {runs}",
            gpu.adapter().name
        );
    }
    runs
}

/// Dynamic loss scaling: on when asked (`on`: `--loss-scale` or the recipe's), off with
/// `--no-loss-scale`, else on exactly when amp runs (clap makes the two flags exclusive).
pub fn loss_scale(on: bool, off: bool, runs: Precision) -> bool {
    !off && (on || runs == Precision::Mixed)
}
