//! AdamW (decoupled weight decay), exactly as torch.optim.AdamW with amsgrad off.
//! Kernel: shaders/optim_adamw.wgsl. Reference: `reference::optim::adamw_step`.
//!
//! Per parameter, at its step t (counted per parameter from 1; a step without a gradient does
//! not count):
//!   p ← p·(1 − lr·λ)
//!   m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²        (m = v = 0 before step 1)
//!   p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
//! The bias-correction factors are computed on the host in f64, as torch does in Python.
//! A loss-scaled step ([`Optimizer::step_unless_overflow`]) that the device skips leaves p, m, v
//! and t as they were (src/optim/loss_scale.rs).
//! CADS pretraining: lr from a warm-up + cosine schedule, λ cosine 0.04 → 0.4 on group 0 of
//! [`ParamGroup::split_decay`] and 0 on biases and 1-D tensors.

use super::loss_scale::{skip_flag, Deferred, OverflowCheck};
use super::state::{self, Expect, OptimizerState, ParamState, PreparedImport};
use super::{GradClip, Groups, Optimizer, ParamGroup};
use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

crate::gpu::shader_params! {
    /// Mirrors `AdamWParams` in shaders/optim_adamw.wgsl.
    struct AdamWParams {
        n: u32,
        first: u32,
        decay: f32,
        beta1: f32,
        beta2: f32,
        one_minus_beta1: f32,
        one_minus_beta2: f32,
        step_size: f32,
        bc2_sqrt: f32,
        eps: f32,
        norm_index: u32,
        /// < 0: no clipping.
        max_norm: f32,
    }
}

pub(super) const ADAMW: KernelSpec = KernelSpec {
    shader: "optim_adamw",
    source: include_str!("../../shaders/optim_adamw.wgsl"),
    entry: "adamw",
    inputs: 3,
    outputs: 3,
    params: AdamWParams::LAYOUT,
    constants: &[],
};
/// Four elements per invocation, for parameters of n % 4 == 0 values.
pub(super) const ADAMW_4: KernelSpec = KernelSpec {
    entry: "adamw_4",
    ..ADAMW
};

/// Hyper-parameters shared by all groups (groups may override `lr` and `weight_decay`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    /// (β₁, β₂), each in [0, 1).
    pub betas: (f64, f64),
    pub eps: f64,
    /// Decoupled weight decay λ (p ← p·(1 − lr·λ)).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// torch defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2.
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Moment estimates of one parameter and the number of steps it has taken.
#[derive(Clone, Debug)]
pub struct AdamWState {
    /// First moment m (parameter shape).
    pub exp_avg: Tensor,
    /// Second moment v (parameter shape).
    pub exp_avg_sq: Tensor,
    pub step: u64,
}

/// AdamW on the GPU.
pub struct AdamW {
    groups: Groups,
    config: AdamWConfig,
    /// State per group per parameter, allocated on the parameter's first step.
    states: Vec<Vec<Option<AdamWState>>>,
    /// The states of the last loss-scaled step, until its flag says whether it was taken.
    deferred: Option<Deferred<AdamWState>>,
    /// The zero skip flag unscaled steps bind.
    no_skip: Option<Tensor>,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<AdamW> {
        const OP: &str = "AdamW::new";
        let (b1, b2) = config.betas;
        for (name, b) in [("beta1", b1), ("beta2", b2)] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return Err(Error::invalid(OP, format!("{name} in [0, 1)"), b));
            }
        }
        // eps = 0 with a zero gradient divides 0 by 0: every weight becomes NaN.
        if !(config.eps.is_finite() && config.eps > 0.0) {
            return Err(Error::invalid(OP, "a finite eps > 0", config.eps));
        }
        let groups = Groups::new("AdamW", groups, config.lr, config.weight_decay)?;
        let states = groups.iter().map(|g| vec![None; g.params.len()]).collect();
        Ok(AdamW {
            groups,
            config,
            states,
            deferred: None,
            no_skip: None,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The hyper-parameters an imported state must share (lr and weight decay live per group).
    fn fixed_config(&self) -> Vec<(String, f64)> {
        let (b1, b2) = self.config.betas;
        vec![
            ("beta1".into(), b1),
            ("beta2".into(), b2),
            ("eps".into(), self.config.eps),
        ]
    }

    /// The state of parameter `index` of `group`, once it has taken a step (after a loss-scaled
    /// step, waits for its overflow flag if it has not landed).
    pub fn state(&self, group: usize, index: usize) -> Result<Option<&AdamWState>> {
        self.groups.param(group, index)?;
        if let Some(d) = &self.deferred {
            if let Some(s) = d.get(group, index)? {
                return Ok(Some(s));
            }
        }
        Ok(self.states[group][index].as_ref())
    }

    /// Restore the state of parameter `index` of `group` (resuming from a checkpoint). The
    /// moments are copied into tensors the optimizer owns, so the caller's stay untouched.
    pub fn set_state(&mut self, group: usize, index: usize, state: &AdamWState) -> Result<()> {
        const OP: &str = "AdamW::set_state";
        self.settle()?;
        let param = self.groups.param(group, index)?.clone();
        for t in [&state.exp_avg, &state.exp_avg_sq] {
            if t.shape() != param.shape() {
                return Err(Error::shape(OP, param.shape(), t.shape()));
            }
            param.check_same_gpu(OP, t)?;
        }
        if state.step == 0 {
            return Err(Error::invalid(
                OP,
                "a state that has taken at least one step",
                0,
            ));
        }
        let exp_avg = Tensor::uninit(param.gpu(), OP, param.shape())?;
        let exp_avg_sq = Tensor::uninit(param.gpu(), OP, param.shape())?;
        exp_avg.assign(&state.exp_avg)?;
        exp_avg_sq.assign(&state.exp_avg_sq)?;
        self.states[group][index] = Some(AdamWState {
            exp_avg,
            exp_avg_sq,
            step: state.step,
        });
        Ok(())
    }
}

impl AdamW {
    /// One step; with `check`, the device skips it on overflow and the new states wait in
    /// `deferred` for the flag; with `clip`, each gradient is clipped as the kernel reads it.
    fn launch(
        &mut self,
        grads: &Gradients,
        check: Option<&OverflowCheck>,
        clip: Option<&GradClip>,
    ) -> Result<()> {
        self.settle()?;
        self.groups.check_grads(grads)?;
        // Every gradient to clip has its norm, checked before anything is launched.
        if let Some(clip) = clip {
            for group in self.groups.iter() {
                for param in group.params.iter().filter(|p| grads.get(p).is_some()) {
                    clip.slot("AdamW::step_clipped", param)?;
                }
            }
        }
        let (b1, b2) = self.config.betas;
        let mut taken = Vec::new();
        for (gi, (group, states)) in self.groups.iter().zip(self.states.iter_mut()).enumerate() {
            for (pi, (param, state)) in group.params.iter().zip(states.iter_mut()).enumerate() {
                let Some(grad) = grads.get(param) else {
                    continue;
                };
                let n = param.numel();
                if n == 0 {
                    continue;
                }
                let gpu = param.gpu();
                let skip = skip_flag("AdamW::step", &mut self.no_skip, check, param)?;
                // The norms and this gradient's slot, or a zero word and no clipping.
                let (norms, norm_index, max_norm) = match clip {
                    Some(clip) => (
                        clip.norms().clone(),
                        clip.slot("AdamW::step_clipped", param)?,
                        clip.max_norm() as f32,
                    ),
                    None => (
                        skip_flag("AdamW::step", &mut self.no_skip, None, param)?,
                        0,
                        -1.0,
                    ),
                };
                // Fresh m and v are never read: the kernel treats them as 0 when `first` = 1.
                // The new state is stored only once the launch is recorded.
                let (exp_avg, exp_avg_sq, step, first) = match state {
                    Some(s) => (s.exp_avg.clone(), s.exp_avg_sq.clone(), s.step + 1, 0),
                    None => (
                        Tensor::uninit(gpu, "AdamW::step", param.shape())?,
                        Tensor::uninit(gpu, "AdamW::step", param.shape())?,
                        1,
                        1,
                    ),
                };
                let t = step as f64;
                let bias_correction1 = 1.0 - b1.powf(t);
                let bias_correction2 = 1.0 - b2.powf(t);
                let params = AdamWParams {
                    n: n as u32,
                    first,
                    decay: (1.0 - group.lr * group.weight_decay) as f32,
                    beta1: b1 as f32,
                    beta2: b2 as f32,
                    one_minus_beta1: (1.0 - b1) as f32,
                    one_minus_beta2: (1.0 - b2) as f32,
                    step_size: (group.lr / bias_correction1) as f32,
                    bc2_sqrt: bias_correction2.sqrt() as f32,
                    eps: self.config.eps as f32,
                    norm_index,
                    max_norm,
                };
                // Four elements per invocation where they divide the parameter.
                let (spec, invocations) = if n.is_multiple_of(4) {
                    (&ADAMW_4, n / 4)
                } else {
                    (&ADAMW, n)
                };
                gpu.dispatch(
                    spec,
                    &params,
                    &[grad.buffer(), skip.buffer(), norms.buffer()],
                    &[param.buffer(), exp_avg.buffer(), exp_avg_sq.buffer()],
                    Grid::cover(invocations as u64, 256),
                )?;
                let new = AdamWState {
                    exp_avg,
                    exp_avg_sq,
                    step,
                };
                match check {
                    None => *state = Some(new),
                    Some(_) => taken.push((gi, pi, new)),
                }
            }
        }
        if let Some(check) = check {
            self.deferred = Some(Deferred {
                check: check.clone(),
                entries: taken,
            });
        }
        Ok(())
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        self.launch(grads, None, None)
    }

    fn step_unless_overflow(&mut self, grads: &Gradients, check: &OverflowCheck) -> Result<()> {
        self.launch(grads, Some(check), None)
    }

    /// The fused form: each gradient scaled by its clipping coefficient inside the update.
    fn step_clipped(
        &mut self,
        grads: &Gradients,
        check: Option<&OverflowCheck>,
        clip: &GradClip,
    ) -> Result<()> {
        self.launch(grads, check, Some(clip))
    }

    fn settle(&mut self) -> Result<()> {
        let taken = match &self.deferred {
            None => return Ok(()),
            Some(d) => d.taken()?,
        };
        if let (Some(d), true) = (self.deferred.take(), taken) {
            for (g, i, s) in d.entries {
                self.states[g][i] = Some(s);
            }
        }
        Ok(())
    }

    fn groups(&self) -> &Groups {
        &self.groups
    }
    fn groups_mut(&mut self) -> &mut Groups {
        &mut self.groups
    }

    fn export_state(&self) -> Result<OptimizerState> {
        const OP: &str = "AdamW::export_state";
        let mut params = Vec::new();
        for (gi, group) in self.groups.iter().enumerate() {
            for (pi, name) in group.names.iter().enumerate() {
                let Some(s) = self.state(gi, pi)? else {
                    continue;
                };
                params.push(ParamState {
                    name: name.clone(),
                    step: Some(s.step),
                    slots: vec![
                        (SLOTS[0].into(), state::snapshot(OP, &s.exp_avg)?),
                        (SLOTS[1].into(), state::snapshot(OP, &s.exp_avg_sq)?),
                    ],
                });
            }
        }
        Ok(OptimizerState {
            kind: KIND.into(),
            config: self.fixed_config(),
            groups: state::export_groups(&self.groups),
            params,
        })
    }

    fn prepare_import(&self, imported: &OptimizerState) -> Result<PreparedImport> {
        let config = self.fixed_config();
        let expect = Expect {
            op: "AdamW::import_state",
            kind: KIND,
            config: &config,
            slots: SLOTS,
            step: true,
        };
        state::prepare_import(&self.groups, &expect, imported)
    }

    fn commit_import(&mut self, prepared: PreparedImport) -> Result<()> {
        let slots = state::commit_import("AdamW::commit_import", KIND, &mut self.groups, prepared)?;
        // The import replaces every state, a step in flight included.
        self.deferred = None;
        self.states = slots
            .into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .map(|p| {
                        p.map(|(step, mut slots)| {
                            let exp_avg_sq = slots.pop().expect("two checked slots");
                            let exp_avg = slots.pop().expect("two checked slots");
                            AdamWState {
                                exp_avg,
                                exp_avg_sq,
                                step: step.unwrap_or(1),
                            }
                        })
                    })
                    .collect()
            })
            .collect();
        Ok(())
    }
}

/// `OptimizerState::kind` of AdamW.
const KIND: &str = "AdamW";
/// torch's names of the AdamW state slots, in export order.
const SLOTS: &[&str] = &["exp_avg", "exp_avg_sq"];
