//! Optimizers that update parameters in place on the GPU, learning-rate / weight-decay /
//! temperature / momentum schedules (CPU, f64), and gradient clipping by norm.
//!
//! - [`Sgd`]: momentum, dampening, Nesterov, coupled weight decay (torch.optim.SGD).
//! - [`AdamW`]: decoupled weight decay, bias correction (torch.optim.AdamW, amsgrad off).
//! - [`schedule`]: DINO `cosine_scheduler` (linear warm-up then cosine), nnU-Net poly decay,
//!   DINO's linear teacher-temperature ramp, the cosine EMA momentum.
//! - [`clip`]: per-tensor (DINO `clip_gradients`) and global (torch `clip_grad_norm_`) clipping,
//!   with norms computed by a two-pass GPU reduction; [`clip_norms_per_tensor_on_gpu`] and
//!   [`Optimizer::step_clipped`] leave the per-tensor scaling to the update
//!   (src/optim/grad_clip.rs; AdamW applies it inside its kernel).
//! - [`LossScaler`]: dynamic loss scaling (torch.amp.GradScaler): scale the loss, unscale and
//!   check the gradients in one pass, and [`Optimizer::step_unless_overflow`], which the device
//!   skips when a gradient overflowed (src/optim/loss_scale.rs).
//!
//! Parameters live in [`ParamGroup`]s; each group carries its own learning rate and weight decay,
//! which a training loop sets every iteration from schedules (`set_lr`, `set_weight_decay`).
//! `step(&grads)` launches one fused kernel per parameter that has a gradient in `grads`; the
//! kernel reads the parameter, its gradient and the optimizer state and writes the parameter and
//! the state in place. No op is recorded (kernels are launched directly, never through the tape),
//! so a step needs no `no_grad` around it. Parameters without a gradient are skipped and their
//! state (including AdamW's per-parameter step count) is left untouched, as in torch.
//!
//! ```no_run
//! use cads::optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, WarmupCosine};
//! # fn demo(params: Vec<cads::Tensor>, loss_of: impl Fn() -> cads::Result<cads::Tensor>) -> cads::Result<()> {
//! let mut opt = AdamW::new(ParamGroup::split_decay(&params), AdamWConfig { lr: 5e-4, ..Default::default() })?;
//! let lr = WarmupCosine::dino(5e-4, 2e-6, 100, 50, 10, 0.0)?;
//! let wd = WarmupCosine::dino(0.04, 0.4, 100, 50, 0, 0.0)?;
//! for it in 0..5000 {
//!     opt.set_lr_all(lr.at(it))?;
//!     opt.set_weight_decay(0, wd.at(it))?; // group 1 (biases, 1-D) keeps 0
//!     let mut grads = loss_of()?.backward()?;
//!     cads::optim::clip_grad_norm_per_tensor(&params, &mut grads, 0.3)?;
//!     opt.step(&grads)?;
//! }
//! # Ok(()) }
//! ```
//!
//! State by name: build groups from named parameters ([`ParamGroup::named`],
//! [`ParamGroup::split_decay_named`]); [`Optimizer::export_state`] then keys every moment and
//! momentum buffer by parameter name, with each group's current lr / weight decay, and
//! [`Optimizer::import_state`] restores it all-or-nothing into an optimizer built anew
//! (src/optim/state.rs). Checkpoints (src/checkpoint/) store exactly this.
//!
//! Kernels: shaders/optim_sgd.wgsl, shaders/optim_adamw.wgsl, shaders/optim_clip.wgsl,
//! shaders/optim_loss_scale.wgsl. Reference: src/reference/optim.rs, src/reference/loss_scale.rs.

mod adamw;
pub mod clip;
mod grad_clip;
pub mod loss_scale;
pub mod schedule;
mod sgd;
pub mod state;

pub use adamw::{AdamW, AdamWConfig, AdamWState};
pub use clip::{
    clip_grad_norm, clip_grad_norm_per_tensor, clip_grad_norm_per_tensor_on_gpu, grad_norms,
};
pub use grad_clip::{clip_norms_per_tensor_on_gpu, GradClip};
pub use loss_scale::{
    clip_grad_norm_unless_overflow, LossScaler, LossScalerConfig, LossScalerState, OverflowCheck,
};
pub use schedule::{LinearRamp, PolyDecay, WarmupCosine};
pub use sgd::{Sgd, SgdConfig};
pub use state::{GroupState, OptimizerState, ParamState, PreparedImport};

use std::collections::HashSet;

use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::gpu::KernelSpec;
use crate::tensor::Tensor;

pub(crate) const KERNELS: &[KernelSpec] = &[
    sgd::SGD_PLAIN,
    sgd::SGD_MOMENTUM,
    sgd::SGD_PLAIN_4,
    sgd::SGD_MOMENTUM_4,
    adamw::ADAMW,
    adamw::ADAMW_4,
    clip::SUM_SQUARES,
    clip::SUM_SQUARES4,
    clip::CLIP_SCALE,
    clip::CLIP_SCALE_4,
    loss_scale::UNSCALE_CHECK,
];

/// Parameters that share one learning rate and one weight decay.
///
/// `lr` / `weight_decay` left as `None` take the optimizer's config values. `names` (one per
/// parameter, e.g. `block1.0.attn.q.weight`) key the optimizer state in
/// [`Optimizer::export_state`] and checkpoints; a group built without names gets positional ones,
/// `param_groups.{group}.{index}`, which only resume into the same construction order.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub params: Vec<Tensor>,
    pub names: Option<Vec<String>>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    /// A group with the optimizer's default learning rate and weight decay.
    pub fn new(params: Vec<Tensor>) -> Self {
        ParamGroup {
            params,
            names: None,
            lr: None,
            weight_decay: None,
        }
    }

    /// A group of named parameters (as listed by `nn::Module::parameters`).
    pub fn named(named: Vec<(String, Tensor)>) -> Self {
        let (names, params) = named.into_iter().unzip();
        ParamGroup {
            params,
            names: Some(names),
            lr: None,
            weight_decay: None,
        }
    }

    /// Override the learning rate of this group.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = Some(lr);
        self
    }

    /// Override the weight decay of this group.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }

    /// DINO's `get_params_groups`: group 0 holds the tensors of rank ≥ 2 (regularized, the
    /// optimizer's weight decay, which a schedule may change), group 1 the biases and other 1-D
    /// (or scalar) tensors with weight decay fixed at 0. Both groups are always returned, possibly
    /// empty, so the indices stay stable for `set_weight_decay(0, ..)`.
    pub fn split_decay(params: &[Tensor]) -> Vec<ParamGroup> {
        let (decay, no_decay): (Vec<Tensor>, Vec<Tensor>) =
            params.iter().cloned().partition(|p| p.rank() >= 2);
        vec![
            ParamGroup::new(decay),
            ParamGroup::new(no_decay).with_weight_decay(0.0),
        ]
    }

    /// [`ParamGroup::split_decay`] on named parameters, keeping the names.
    pub fn split_decay_named(named: &[(String, Tensor)]) -> Vec<ParamGroup> {
        let (decay, no_decay): (Vec<_>, Vec<_>) =
            named.iter().cloned().partition(|(_, p)| p.rank() >= 2);
        vec![
            ParamGroup::named(decay),
            ParamGroup::named(no_decay).with_weight_decay(0.0),
        ]
    }
}

/// A resolved group: its parameters, their names and current hyper-parameters.
#[derive(Clone, Debug)]
pub struct Group {
    pub params: Vec<Tensor>,
    /// One per parameter, unique across the optimizer (given, or `param_groups.{g}.{i}`).
    pub names: Vec<String>,
    pub lr: f64,
    pub weight_decay: f64,
}

/// The groups of one optimizer and the per-group setters shared by all optimizers.
#[derive(Clone, Debug)]
pub struct Groups {
    op: &'static str,
    groups: Vec<Group>,
}

pub(crate) fn check_lr(op: &'static str, lr: f64) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(op, "a finite learning rate >= 0", lr))
    }
}

pub(crate) fn check_weight_decay(op: &'static str, wd: f64) -> Result<()> {
    if wd.is_finite() && wd >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(op, "a finite weight decay >= 0", wd))
    }
}

impl Groups {
    /// Resolve defaults, validate hyper-parameters, and reject a tensor listed twice or tensors
    /// on different devices.
    pub(crate) fn new(
        op: &'static str,
        groups: Vec<ParamGroup>,
        default_lr: f64,
        default_weight_decay: f64,
    ) -> Result<Groups> {
        if groups.is_empty() {
            return Err(Error::invalid(op, "at least one parameter group", "none"));
        }
        let mut seen = HashSet::new();
        let mut seen_names = HashSet::new();
        let mut first: Option<Tensor> = None;
        let mut out = Vec::with_capacity(groups.len());
        for (gi, g) in groups.into_iter().enumerate() {
            let names = match g.names {
                Some(names) if names.len() != g.params.len() => {
                    return Err(Error::invalid(
                        op,
                        format!("one name per parameter in group {gi} ({})", g.params.len()),
                        format!("{} names", names.len()),
                    ))
                }
                Some(names) => names,
                None => (0..g.params.len())
                    .map(|i| format!("param_groups.{gi}.{i}"))
                    .collect(),
            };
            for name in &names {
                if !seen_names.insert(name.clone()) {
                    return Err(Error::invalid(
                        op,
                        "each parameter name once",
                        format!("'{name}' twice"),
                    ));
                }
            }
            let lr = g.lr.unwrap_or(default_lr);
            let weight_decay = g.weight_decay.unwrap_or(default_weight_decay);
            check_lr(op, lr)?;
            check_weight_decay(op, weight_decay)?;
            for p in &g.params {
                if !seen.insert(p.id()) {
                    return Err(Error::invalid(
                        op,
                        "each parameter in exactly one group",
                        format!("{p:?} listed twice"),
                    ));
                }
                match &first {
                    None => first = Some(p.clone()),
                    Some(f) => f.check_same_gpu(op, p)?,
                }
            }
            out.push(Group {
                params: g.params,
                names,
                lr,
                weight_decay,
            });
        }
        Ok(Groups { op, groups: out })
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Group> {
        self.groups.iter()
    }
    pub fn get(&self, group: usize) -> Result<&Group> {
        let n = self.groups.len();
        self.groups
            .get(group)
            .ok_or_else(|| Error::invalid(self.op, format!("a group index < {n}"), group))
    }
    /// Parameter `index` of `group`.
    pub fn param(&self, group: usize, index: usize) -> Result<&Tensor> {
        let g = self.get(group)?;
        let n = g.params.len();
        g.params.get(index).ok_or_else(|| {
            Error::invalid(
                self.op,
                format!("a parameter index < {n} in group {group}"),
                index,
            )
        })
    }
    fn get_mut(&mut self, group: usize) -> Result<&mut Group> {
        let (n, op) = (self.groups.len(), self.op);
        self.groups
            .get_mut(group)
            .ok_or_else(|| Error::invalid(op, format!("a group index < {n}"), group))
    }
    pub fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        check_lr(self.op, lr)?;
        self.get_mut(group)?.lr = lr;
        Ok(())
    }
    pub fn set_lr_all(&mut self, lr: f64) -> Result<()> {
        check_lr(self.op, lr)?;
        self.groups.iter_mut().for_each(|g| g.lr = lr);
        Ok(())
    }
    pub fn set_weight_decay(&mut self, group: usize, weight_decay: f64) -> Result<()> {
        check_weight_decay(self.op, weight_decay)?;
        self.get_mut(group)?.weight_decay = weight_decay;
        Ok(())
    }

    /// Check every gradient that will be used before any kernel is launched, so a bad gradient
    /// never leaves a half-applied step behind.
    pub(crate) fn check_grads(&self, grads: &Gradients) -> Result<()> {
        for g in &self.groups {
            for p in &g.params {
                if let Some(grad) = grads.get(p) {
                    check_grad(self.op, p, grad)?;
                }
            }
        }
        Ok(())
    }
}

/// A gradient must have its parameter's shape, live on its device and not alias its buffer.
pub(crate) fn check_grad(op: &'static str, param: &Tensor, grad: &Tensor) -> Result<()> {
    if grad.shape() != param.shape() {
        return Err(Error::shape(op, param.shape(), grad.shape()));
    }
    param.check_same_gpu(op, grad)?;
    if param.numel() > 0 && grad.buffer() == param.buffer() {
        return Err(Error::invalid(
            op,
            "a gradient in its own buffer",
            "the parameter's own buffer",
        ));
    }
    Ok(())
}

/// What every optimizer offers a training loop.
pub trait Optimizer {
    /// Apply one update to every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &Gradients) -> Result<()>;

    /// [`Optimizer::step`] of a loss-scaled step (gradients already unscaled by
    /// [`LossScaler::unscale_and_check`], which made `check`): the kernels read the check's
    /// device flag and, when a gradient overflowed, leave every parameter and its state
    /// bit-unchanged. The host side (AdamW's step counts, states created by this step) is kept
    /// aside and folded in once the flag is read ([`Optimizer::settle`], done by the next step
    /// and by every state read), so a skipped step changes nothing, as in torch.
    fn step_unless_overflow(&mut self, grads: &Gradients, check: &OverflowCheck) -> Result<()>;

    /// [`Optimizer::step`] (or, with `check`, [`Optimizer::step_unless_overflow`]) on the
    /// gradients clipped as `clip` says (per-tensor norms measured by
    /// [`clip_norms_per_tensor_on_gpu`]): bit for bit the step after
    /// [`clip_grad_norm_per_tensor_on_gpu`]. AdamW scales each gradient inside its update; the
    /// default clips into copies first. A gradient the clip did not measure is an error, before
    /// any update.
    fn step_clipped(
        &mut self,
        grads: &Gradients,
        check: Option<&OverflowCheck>,
        clip: &GradClip,
    ) -> Result<()> {
        grad_clip::step_with_copies(self, grads, check, clip)
    }

    /// Fold the outcome of the last loss-scaled step into the host-side state (waits for its
    /// flag if it has not landed). Nothing to do after an unscaled step.
    fn settle(&mut self) -> Result<()>;
    /// The parameter groups with their current hyper-parameters.
    fn groups(&self) -> &Groups;
    fn groups_mut(&mut self) -> &mut Groups;

    /// Everything needed to continue this run in an optimizer built anew: the state of every
    /// parameter that has taken a step (snapshots, keyed by parameter name), the group structure
    /// with each group's current lr and weight decay, and the fixed hyper-parameters.
    fn export_state(&self) -> Result<OptimizerState>;

    /// Check `state` against this optimizer (kind, fixed hyper-parameters, group count, names
    /// per group, slots, shapes, step counts, lr / wd ranges) and copy its tensors, changing
    /// nothing; [`Optimizer::commit_import`] then swaps it in.
    fn prepare_import(&self, state: &OptimizerState) -> Result<PreparedImport>;

    /// Replace the whole state with a prepared import (from `prepare_import` on this optimizer).
    /// Parameters the import holds no entry for start afresh, as if they never stepped.
    fn commit_import(&mut self, prepared: PreparedImport) -> Result<()>;

    /// Replace the whole state with `state` (from [`Optimizer::export_state`] or a checkpoint),
    /// all-or-nothing: every check passes and every tensor is copied before anything changes.
    fn import_state(&mut self, state: &OptimizerState) -> Result<()> {
        let prepared = self.prepare_import(state)?;
        self.commit_import(prepared)
    }

    fn num_groups(&self) -> usize {
        self.groups().len()
    }
    fn lr(&self, group: usize) -> Result<f64> {
        Ok(self.groups().get(group)?.lr)
    }
    fn weight_decay(&self, group: usize) -> Result<f64> {
        Ok(self.groups().get(group)?.weight_decay)
    }
    /// Set the learning rate of one group (e.g. from a schedule, every iteration).
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.groups_mut().set_lr(group, lr)
    }
    /// Set the learning rate of every group.
    fn set_lr_all(&mut self, lr: f64) -> Result<()> {
        self.groups_mut().set_lr_all(lr)
    }
    /// Set the weight decay of one group (DINO schedules group 0 only).
    fn set_weight_decay(&mut self, group: usize, weight_decay: f64) -> Result<()> {
        self.groups_mut().set_weight_decay(group, weight_decay)
    }
    /// Every parameter, group by group.
    fn params(&self) -> Vec<Tensor> {
        self.groups()
            .iter()
            .flat_map(|g| g.params.iter().cloned())
            .collect()
    }
}

/// What a training loop does when its loss (or gradient norm) is NaN or infinite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnNonFinite {
    /// Return [`Error::NonFinite`]: the run stops, the weights are those of the last good step.
    #[default]
    Stop,
    /// Skip the optimizer step (the weights stay as they are), print a warning, and go on.
    Skip,
}

/// Check a value the loop reads back anyway (the loss it logs), before the optimizer step uses
/// the gradients: `Ok(true)` to step, `Ok(false)` to skip it, or the error. One NaN in the input
/// otherwise reaches every AdamW weight through the moments, silently.
pub fn check_step(
    op: &'static str,
    what: &'static str,
    step: u64,
    value: f32,
    policy: OnNonFinite,
) -> Result<bool> {
    if value.is_finite() {
        return Ok(true);
    }
    match policy {
        OnNonFinite::Stop => Err(Error::NonFinite {
            op,
            what,
            value,
            step,
        }),
        OnNonFinite::Skip => {
            eprintln!(
                "warning: {op}: non-finite {what} {value} at step {step}; optimizer step skipped"
            );
            Ok(false)
        }
    }
}
