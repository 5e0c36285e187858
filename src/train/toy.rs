//! The end-to-end smoke job: a small MLP trained with AdamW on a fixed toy problem (three
//! interleaved 2-D spirals), exercising matmul, GELU, cross-entropy, the tape and the optimizer
//! in one loop. `cads demo` runs it, and a test asserts that the loss falls.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::{Linear, LinearInit, Module};
use crate::ops;
use crate::optim::{AdamW, AdamWConfig, Optimizer, ParamGroup};
use crate::tensor::Tensor;
use crate::util::Rng;

#[derive(Clone, Debug)]
pub struct ToyConfig {
    pub points_per_class: usize,
    pub hidden: usize,
    pub steps: usize,
    pub lr: f64,
    pub seed: u64,
    /// Stop (the default) or skip a step whose loss is not finite.
    pub on_non_finite: crate::optim::OnNonFinite,
}

impl Default for ToyConfig {
    fn default() -> Self {
        ToyConfig {
            points_per_class: 100,
            hidden: 64,
            steps: 300,
            lr: 1e-2,
            seed: 0,
            on_non_finite: crate::optim::OnNonFinite::Stop,
        }
    }
}

/// Three spirals of `n` points each: class k at angle t·4 + 2πk/3, radius t, plus noise.
pub fn spirals(n: usize, rng: &mut Rng) -> (Vec<f32>, Vec<usize>) {
    let mut xs = Vec::with_capacity(3 * n * 2);
    let mut ys = Vec::with_capacity(3 * n);
    for k in 0..3 {
        for i in 0..n {
            let t = i as f64 / n as f64;
            let angle = t * 4.0 + k as f64 * 2.0 * std::f64::consts::PI / 3.0 + rng.normal() * 0.2;
            xs.push((t * angle.cos()) as f32);
            xs.push((t * angle.sin()) as f32);
            ys.push(k);
        }
    }
    (xs, ys)
}

/// Train the 2 → hidden → hidden → 3 GELU MLP full-batch; returns the loss of every step and
/// calls `on_step(step, loss)` as it goes.
pub fn train_mlp(
    gpu: &Gpu,
    cfg: &ToyConfig,
    mut on_step: impl FnMut(usize, f32),
) -> Result<Vec<f32>> {
    let mut rng = Rng::new(cfg.seed);
    let (xs, labels) = spirals(cfg.points_per_class, &mut rng);
    let x = Tensor::from_slice(gpu, &xs, &[labels.len(), 2])?;
    let layers = [
        Linear::new(gpu, 2, cfg.hidden, true, LinearInit::Torch, &mut rng)?,
        Linear::new(
            gpu,
            cfg.hidden,
            cfg.hidden,
            true,
            LinearInit::Torch,
            &mut rng,
        )?,
        Linear::new(gpu, cfg.hidden, 3, true, LinearInit::Torch, &mut rng)?,
    ];
    let params: Vec<Tensor> = layers.iter().flat_map(|l| l.parameter_tensors()).collect();
    let mut opt = AdamW::new(
        ParamGroup::split_decay(&params),
        AdamWConfig {
            lr: cfg.lr,
            weight_decay: 1e-4,
            ..AdamWConfig::default()
        },
    )?;
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        let h = ops::gelu(&layers[0].forward(&x)?)?;
        let h = ops::gelu(&layers[1].forward(&h)?)?;
        let logits = layers[2].forward(&h)?;
        let loss = ops::cross_entropy_labels(&logits, &labels)?;
        let grads = loss.backward()?;
        // The loss is read for logging anyway: read it before the step, so a NaN never reaches
        // the weights (no extra host sync).
        let value = loss.to_scalar()?;
        if !crate::optim::check_step("train_mlp", "loss", step as u64, value, cfg.on_non_finite)? {
            continue;
        }
        opt.step(&grads)?;
        on_step(step, value);
        losses.push(value);
    }
    Ok(losses)
}
