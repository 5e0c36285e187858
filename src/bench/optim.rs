//! Optimizer-side passes over a whole gradient set: the loss scaler's unscale-and-check, the
//! per-tensor gradient clipping (DINO's, as a CADS step runs it), the AdamW step that follows
//! them, the SGD Nesterov step of a segmentation run and the teacher's EMA, on the same tensors,
//! so their costs compare directly. All are bandwidth-bound, reported in GB/s (bytes read +
//! written).
//!
//! The set is a transformer-like mix: 24 weights [512, 512] and 48 vectors [512] (6.3 M values,
//! 25 MB of gradients), one launch per tensor as in a training step.

use super::inputs::random;
use super::{Bench, Case, Sample, Work};
use crate::autograd::Gradients;
use crate::error::Result;
use crate::optim::{
    clip_grad_norm_per_tensor_on_gpu, AdamW, AdamWConfig, LossScaler, LossScalerConfig, Optimizer,
    ParamGroup, Sgd, SgdConfig,
};
use crate::tensor::Tensor;

/// The gradient set's shapes.
fn shapes() -> Vec<Vec<usize>> {
    let mut s = vec![vec![512, 512]; 24];
    s.extend(vec![vec![512]; 48]);
    s
}

fn elements() -> f64 {
    shapes()
        .iter()
        .map(|s| s.iter().product::<usize>())
        .sum::<usize>() as f64
}

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            op: "loss_scale",
            case: "unscale_check_6.3M",
            run: unscale_check,
        },
        Case {
            op: "clip_grad",
            case: "per_tensor_6.3M",
            run: clip_per_tensor,
        },
        Case {
            op: "adamw",
            case: "step_6.3M",
            run: adamw_step,
        },
        Case {
            op: "sgd",
            case: "nesterov_step_6.3M",
            run: sgd_step,
        },
        Case {
            op: "ema",
            case: "update_6.3M",
            run: ema_step,
        },
    ]
}

/// Parameters and their gradients, fresh.
fn params_and_grads(
    gpu: &crate::gpu::Gpu,
    rng: &mut crate::util::Rng,
) -> Result<Vec<(Tensor, Tensor)>> {
    shapes()
        .iter()
        .map(|s| {
            Ok((
                random(gpu, rng, s)?.requires_grad_(true),
                random(gpu, rng, s)?,
            ))
        })
        .collect()
}

fn gradients(set: &[(Tensor, Tensor)]) -> Result<(Vec<Tensor>, Gradients)> {
    let mut grads = Gradients::default();
    for (p, g) in set {
        grads.accumulate(p.id(), g.clone())?;
    }
    Ok((set.iter().map(|(p, _)| p.clone()).collect(), grads))
}

/// One pass: each gradient read and written once (8 bytes per value), plus the flag.
fn unscale_check(b: &Bench) -> Result<Sample> {
    let ms = b.time(params_and_grads, |set| {
        let (params, mut grads) = gradients(set)?;
        let mut scaler = LossScaler::new(set[0].0.gpu(), LossScalerConfig::default())?;
        scaler.unscale_and_check(&params, &mut grads).map(drop)
    })?;
    Ok(Sample::new(ms, Work::Bytes(8.0 * elements())))
}

/// Per-tensor norms (one read of every gradient) and the clipped copies (one read, one write);
/// max norm 0.3, CADS's, so every random gradient here is scaled.
fn clip_per_tensor(b: &Bench) -> Result<Sample> {
    let ms = b.time(params_and_grads, |set| {
        let (params, mut grads) = gradients(set)?;
        clip_grad_norm_per_tensor_on_gpu(&params, &mut grads, 0.3).map(drop)
    })?;
    Ok(Sample::new(ms, Work::Bytes(12.0 * elements())))
}

/// The teacher's EMA over the set (targets: the parameters, sources: the gradient tensors, as
/// stand-ins of a student of the same shapes): reads the target and the source, writes the
/// target (12 bytes per value).
fn ema_step(b: &Bench) -> Result<Sample> {
    let ms = b.time(params_and_grads, |set| {
        let (targets, sources): (Vec<Tensor>, Vec<Tensor>) = set.iter().cloned().unzip();
        crate::ops::ema::ema_update_(&targets, &sources, 0.996)
    })?;
    Ok(Sample::new(ms, Work::Bytes(12.0 * elements())))
}

/// A step after the first (its state exists) of the optimizer `make` builds over the set,
/// moving `bytes_per_value` bytes (read + written) per parameter value.
fn optimizer_step<O: Optimizer>(
    b: &Bench,
    make: fn(Vec<Tensor>) -> Result<O>,
    bytes_per_value: f64,
) -> Result<Sample> {
    let ms = b.time(
        |gpu, rng| {
            let set = params_and_grads(gpu, rng)?;
            let (params, grads) = gradients(&set)?;
            let mut opt = make(params)?;
            opt.step(&grads)?;
            Ok(std::cell::RefCell::new((opt, grads)))
        },
        |state| {
            let (opt, grads) = &mut *state.borrow_mut();
            opt.step(grads)
        },
    )?;
    Ok(Sample::new(ms, Work::Bytes(bytes_per_value * elements())))
}

/// An AdamW step: reads g, p, m, v and writes p, m, v (28 bytes per value).
fn adamw_step(b: &Bench) -> Result<Sample> {
    optimizer_step(
        b,
        |p| AdamW::new(vec![ParamGroup::new(p)], AdamWConfig::default()),
        28.0,
    )
}

/// An SGD Nesterov step (nnU-Net's, as a segmentation step runs it): reads g, p and the momentum
/// buffer, writes p and the buffer (20 bytes per value).
fn sgd_step(b: &Bench) -> Result<Sample> {
    optimizer_step(
        b,
        |p| Sgd::new(vec![ParamGroup::new(p)], SgdConfig::nnunet(1e-2)),
        20.0,
    )
}
