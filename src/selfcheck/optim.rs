//! Optimizer checks: three AdamW steps (decoupled weight decay, bias correction) and three SGD
//! steps (Nesterov momentum, coupled weight decay) on a matrix and a vector with fresh random
//! gradients each step, and the teacher's EMA update, against src/reference/optim.rs and
//! src/reference/ema.rs.

use super::{Comparison, Run};
use crate::autograd::Gradients;
use crate::error::Result;
use crate::ops::ema::ema_update_;
use crate::optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use crate::reference::{ema as rema, optim as ropt};
use crate::tensor::Tensor;
use crate::util::Tolerance;

/// Three steps of f32 updates against f64 (as tests/optim.rs).
const STEPS_TOL: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-4,
};

const SHAPES: [&[usize]; 2] = [&[33, 20], &[20]];
const STEPS: usize = 3;

/// Parameters on the device with f64 twins.
fn parameters(run: &mut Run) -> Result<(Vec<Tensor>, Vec<Vec<f64>>)> {
    let mut params = Vec::new();
    let mut twins = Vec::new();
    for shape in SHAPES {
        let (a, _) = run.random(shape, false)?;
        params.push(Tensor::parameter(run.gpu, &a.to_f32(), shape)?);
        twins.push(a.data);
    }
    Ok((params, twins))
}

/// One step's gradients, on the device and as f64.
fn gradients(run: &mut Run, params: &[Tensor]) -> Result<(Gradients, Vec<Vec<f64>>)> {
    let mut grads = Gradients::default();
    let mut twins = Vec::new();
    for p in params {
        let (a, t) = run.random(p.shape(), false)?;
        grads.accumulate(p.id(), t)?;
        twins.push(a.data);
    }
    Ok((grads, twins))
}

fn compare_params(cmp: &mut Comparison, params: &[Tensor], want: &[Vec<f64>]) -> Result<()> {
    for (i, (p, w)) in params.iter().zip(want).enumerate() {
        cmp.close(&format!("parameter {i}"), &p.to_vec()?, w, STEPS_TOL);
    }
    Ok(())
}

pub(super) fn optimizers(run: &mut Run) -> Result<()> {
    let case = format!("{STEPS} steps on {SHAPES:?}");
    if run.wants("adamw", "auto") {
        run.check("adamw", "auto", "auto", &case, |run, cmp| {
            let config = AdamWConfig {
                lr: 1e-2,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 0.04,
            };
            let (params, mut want) = parameters(run)?;
            let mut opt = AdamW::new(vec![ParamGroup::new(params.clone())], config)?;
            let mut states = vec![ropt::AdamWState::default(); params.len()];
            for _ in 0..STEPS {
                let (grads, g) = gradients(run, &params)?;
                opt.step(&grads)?;
                for ((w, g), s) in want.iter_mut().zip(&g).zip(&mut states) {
                    let (b1, b2) = config.betas;
                    ropt::adamw_step(w, g, s, config.lr, b1, b2, config.eps, config.weight_decay);
                }
            }
            compare_params(cmp, &params, &want)
        });
    }
    if run.wants("sgd", "nesterov") {
        run.check("sgd", "nesterov", "nesterov", &case, |run, cmp| {
            let config = SgdConfig {
                lr: 1e-2,
                momentum: 0.99,
                dampening: 0.0,
                weight_decay: 3e-5,
                nesterov: true,
            };
            let (params, mut want) = parameters(run)?;
            let mut opt = Sgd::new(vec![ParamGroup::new(params.clone())], config)?;
            let mut buffers: Vec<ropt::MomentumBuffer> = vec![None; params.len()];
            for _ in 0..STEPS {
                let (grads, g) = gradients(run, &params)?;
                opt.step(&grads)?;
                for ((w, g), b) in want.iter_mut().zip(&g).zip(&mut buffers) {
                    let c = &config;
                    ropt::sgd_step(w, g, b, c.lr, c.momentum, c.dampening, c.weight_decay, true);
                }
            }
            compare_params(cmp, &params, &want)
        });
    }
    if run.wants("ema", "auto") {
        run.check(
            "ema",
            "auto",
            "auto",
            "momentum 0.996 on [1001]",
            |run, cmp| {
                let (mut target, t) = run.random(&[1001], false)?;
                let (source, s) = run.random(&[1001], false)?;
                ema_update_(std::slice::from_ref(&t), std::slice::from_ref(&s), 0.996)?;
                rema::ema_update(&mut target.data, &source.data, 0.996);
                cmp.tensor("target", &t, &target, STEPS_TOL);
                Ok(())
            },
        );
    }
    Ok(())
}
