//! SGD with momentum, dampening, Nesterov and coupled (L2) weight decay, exactly as
//! torch.optim.SGD. Kernel: shaders/optim_sgd.wgsl. Reference: `reference::optim::sgd_step`.
//!
//! Per parameter, with g' = g + λ·p:
//!   no momentum:  p ← p − lr·g'
//!   momentum μ:   b ← g' on the first step, b ← μ·b + (1 − dampening)·g' afterwards;
//!                 d = g' + μ·b (Nesterov) or d = b;  p ← p − lr·d.
//! nnU-Net / PVT-UNet use μ = 0.99, Nesterov, dampening 0 with a poly learning rate.
//! A loss-scaled step ([`Optimizer::step_unless_overflow`]) that the device skips leaves p and b
//! as they were, and a parameter whose first step was skipped without a buffer
//! (src/optim/loss_scale.rs).

use super::loss_scale::{skip_flag, Deferred, OverflowCheck};
use super::state::{self, Expect, OptimizerState, ParamState, PreparedImport};
use super::{check_weight_decay, Groups, Optimizer, ParamGroup};
use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

const SOURCE: &str = include_str!("../../shaders/optim_sgd.wgsl");

crate::gpu::shader_params! {
    /// Mirrors `SgdParams` in shaders/optim_sgd.wgsl.
    struct SgdParams {
        n: u32,
        first: u32,
        nesterov: u32,
        _pad0: u32,
        lr: f32,
        momentum: f32,
        one_minus_dampening: f32,
        weight_decay: f32,
    }
}

pub(super) const SGD_PLAIN: KernelSpec = KernelSpec {
    shader: "optim_sgd",
    source: SOURCE,
    entry: "sgd_plain",
    inputs: 2,
    outputs: 1,
    params: SgdParams::LAYOUT,
    constants: &[],
};
pub(super) const SGD_MOMENTUM: KernelSpec = KernelSpec {
    shader: "optim_sgd",
    source: SOURCE,
    entry: "sgd_momentum",
    inputs: 2,
    outputs: 2,
    params: SgdParams::LAYOUT,
    constants: &[],
};

/// The updates on four elements per invocation, for parameters of n % 4 == 0 values.
pub(super) const SGD_PLAIN_4: KernelSpec = KernelSpec {
    entry: "sgd_plain_4",
    ..SGD_PLAIN
};
pub(super) const SGD_MOMENTUM_4: KernelSpec = KernelSpec {
    entry: "sgd_momentum_4",
    ..SGD_MOMENTUM
};

/// Hyper-parameters shared by all groups (groups may override `lr` and `weight_decay`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    /// μ; 0 disables the momentum buffer.
    pub momentum: f64,
    pub dampening: f64,
    /// Coupled L2 weight decay λ (added to the gradient).
    pub weight_decay: f64,
    /// Nesterov momentum (needs μ > 0 and dampening 0, as in torch).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    /// torch defaults: lr 1e-3, no momentum, no dampening, no weight decay, no Nesterov.
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl SgdConfig {
    /// The nnU-Net / PVT-UNet setting: Nesterov momentum 0.99, weight decay 3e-5.
    pub fn nnunet(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.99,
            dampening: 0.0,
            weight_decay: 3e-5,
            nesterov: true,
        }
    }
}

/// Stochastic gradient descent on the GPU.
pub struct Sgd {
    groups: Groups,
    config: SgdConfig,
    /// Momentum buffer per group per parameter, allocated on the parameter's first step.
    momentum_buffers: Vec<Vec<Option<Tensor>>>,
    /// Buffers created by the last loss-scaled step, until its flag says whether it was taken
    /// (existing buffers are updated in place, so only new ones wait here).
    deferred: Option<Deferred<Tensor>>,
    /// The zero skip flag unscaled steps bind.
    no_skip: Option<Tensor>,
}

impl Sgd {
    pub fn new(groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Sgd> {
        const OP: &str = "Sgd::new";
        if !(config.momentum.is_finite() && config.momentum >= 0.0) {
            return Err(Error::invalid(
                OP,
                "a finite momentum >= 0",
                config.momentum,
            ));
        }
        if !config.dampening.is_finite() {
            return Err(Error::invalid(OP, "a finite dampening", config.dampening));
        }
        check_weight_decay(OP, config.weight_decay)?;
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::invalid(
                OP,
                "Nesterov with momentum > 0 and dampening 0",
                format!(
                    "momentum {} dampening {}",
                    config.momentum, config.dampening
                ),
            ));
        }
        let groups = Groups::new("Sgd", groups, config.lr, config.weight_decay)?;
        let momentum_buffers = groups.iter().map(|g| vec![None; g.params.len()]).collect();
        Ok(Sgd {
            groups,
            config,
            momentum_buffers,
            deferred: None,
            no_skip: None,
        })
    }

    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The hyper-parameters an imported state must share (lr and weight decay live per group).
    fn fixed_config(&self) -> Vec<(String, f64)> {
        let c = &self.config;
        vec![
            ("momentum".into(), c.momentum),
            ("dampening".into(), c.dampening),
            ("nesterov".into(), if c.nesterov { 1.0 } else { 0.0 }),
        ]
    }

    /// The momentum buffer of parameter `index` of `group`, once it has taken a step (after a
    /// loss-scaled step, waits for its overflow flag if it has not landed).
    pub fn momentum_buffer(&self, group: usize, index: usize) -> Result<Option<&Tensor>> {
        self.groups.param(group, index)?;
        if let Some(d) = &self.deferred {
            if let Some(b) = d.get(group, index)? {
                return Ok(Some(b));
            }
        }
        Ok(self.momentum_buffers[group][index].as_ref())
    }

    /// Restore the momentum buffer of parameter `index` of `group` (resuming from a
    /// checkpoint); it is copied into a tensor the optimizer owns.
    pub fn set_momentum_buffer(
        &mut self,
        group: usize,
        index: usize,
        buffer: &Tensor,
    ) -> Result<()> {
        const OP: &str = "Sgd::set_momentum_buffer";
        self.settle()?;
        let param = self.groups.param(group, index)?.clone();
        if buffer.shape() != param.shape() {
            return Err(Error::shape(OP, param.shape(), buffer.shape()));
        }
        param.check_same_gpu(OP, buffer)?;
        let own = Tensor::uninit(param.gpu(), OP, param.shape())?;
        own.assign(buffer)?;
        self.momentum_buffers[group][index] = Some(own);
        Ok(())
    }
}

impl Sgd {
    /// One step; with `check`, the device skips it on overflow and the buffers it creates wait
    /// in `deferred` for the flag.
    fn launch(&mut self, grads: &Gradients, check: Option<&OverflowCheck>) -> Result<()> {
        self.settle()?;
        self.groups.check_grads(grads)?;
        let c = self.config;
        let mut created = Vec::new();
        let groups = self.groups.iter().zip(self.momentum_buffers.iter_mut());
        for (gi, (group, buffers)) in groups.enumerate() {
            for (pi, (param, buffer)) in group.params.iter().zip(buffers.iter_mut()).enumerate() {
                let Some(grad) = grads.get(param) else {
                    continue;
                };
                let n = param.numel();
                if n == 0 {
                    continue;
                }
                let skip = skip_flag("Sgd::step", &mut self.no_skip, check, param)?;
                let mut params = SgdParams {
                    n: n as u32,
                    first: 0,
                    nesterov: c.nesterov as u32,
                    _pad0: 0,
                    lr: group.lr as f32,
                    momentum: c.momentum as f32,
                    one_minus_dampening: (1.0 - c.dampening) as f32,
                    weight_decay: group.weight_decay as f32,
                };
                // Four elements per invocation where they divide the parameter.
                let wide = n.is_multiple_of(4);
                let grid = Grid::cover(if wide { n / 4 } else { n } as u64, 256);
                let gpu = param.gpu();
                if c.momentum == 0.0 {
                    gpu.dispatch(
                        if wide { &SGD_PLAIN_4 } else { &SGD_PLAIN },
                        &params,
                        &[grad.buffer(), skip.buffer()],
                        &[param.buffer()],
                        grid,
                    )?;
                    continue;
                }
                // On the first step the buffer is fresh and unread: the kernel writes b = g'.
                // It is kept only once the launch is recorded, so a failed launch cannot leave
                // an uninitialised buffer that a later step would read.
                let (b, fresh) = match buffer {
                    Some(b) => (b.clone(), false),
                    None => {
                        params.first = 1;
                        (Tensor::uninit(gpu, "Sgd::step", param.shape())?, true)
                    }
                };
                gpu.dispatch(
                    if wide { &SGD_MOMENTUM_4 } else { &SGD_MOMENTUM },
                    &params,
                    &[grad.buffer(), skip.buffer()],
                    &[param.buffer(), b.buffer()],
                    grid,
                )?;
                match (check, fresh) {
                    (None, _) => *buffer = Some(b),
                    // A skipped first step leaves the fresh buffer unwritten: it must not be
                    // kept before the flag says the step was taken.
                    (Some(_), true) => created.push((gi, pi, b)),
                    (Some(_), false) => {}
                }
            }
        }
        if let Some(check) = check {
            self.deferred = Some(Deferred {
                check: check.clone(),
                entries: created,
            });
        }
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        self.launch(grads, None)
    }

    fn step_unless_overflow(&mut self, grads: &Gradients, check: &OverflowCheck) -> Result<()> {
        self.launch(grads, Some(check))
    }

    fn settle(&mut self) -> Result<()> {
        let taken = match &self.deferred {
            None => return Ok(()),
            Some(d) => d.taken()?,
        };
        if let (Some(d), true) = (self.deferred.take(), taken) {
            for (g, i, b) in d.entries {
                self.momentum_buffers[g][i] = Some(b);
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
        const OP: &str = "Sgd::export_state";
        let mut params = Vec::new();
        for (gi, group) in self.groups.iter().enumerate() {
            for (pi, name) in group.names.iter().enumerate() {
                let Some(b) = self.momentum_buffer(gi, pi)? else {
                    continue;
                };
                params.push(ParamState {
                    name: name.clone(),
                    step: None,
                    slots: vec![(SLOTS[0].into(), state::snapshot(OP, b)?)],
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
            op: "Sgd::import_state",
            kind: KIND,
            config: &config,
            slots: SLOTS,
            step: false,
        };
        state::prepare_import(&self.groups, &expect, imported)
    }

    fn commit_import(&mut self, prepared: PreparedImport) -> Result<()> {
        let slots = state::commit_import("Sgd::commit_import", KIND, &mut self.groups, prepared)?;
        // The import replaces every buffer, one a step in flight creates included.
        self.deferred = None;
        self.momentum_buffers = slots
            .into_iter()
            .map(|group| {
                group
                    .into_iter()
                    .map(|p| p.and_then(|(_, mut slots)| slots.pop()))
                    .collect()
            })
            .collect();
        Ok(())
    }
}

/// `OptimizerState::kind` of SGD.
const KIND: &str = "SGD";
/// torch's name of the SGD state slot.
const SLOTS: &[&str] = &["momentum_buffer"];
