//! Dynamic loss scaling with torch.amp.GradScaler's semantics. Kernel:
//! shaders/optim_loss_scale.wgsl. Reference: src/reference/loss_scale.rs.
//!
//! Low-precision gradients underflow; multiplying the loss by a large scale S before the
//! backward keeps them representable (every backward map is linear in its upstream gradient,
//! so all gradients come out multiplied by S). Before the optimizer sees them they are divided
//! by S again, and a step whose scaled gradients overflowed (inf or NaN anywhere) is skipped.
//! The scale adapts: ×`backoff_factor` after a skipped step, ×`growth_factor` after
//! `growth_interval` clean steps in a row (torch `_amp_update_scale_`):
//!
//! ```text
//! found_inf:  S ← f32(S·backoff),  tracker ← 0
//! otherwise:  tracker + 1 = interval ?  S ← f32(S·growth) if finite, tracker ← 0
//!                                     :  tracker ← tracker + 1
//! ```
//! (S is f32, the factors f64, the product in f64 rounded once to f32, as torch).
//!
//! One step, in the order that keeps clipping on UNSCALED gradients (torch's recipe):
//!
//! ```no_run
//! use cads::optim::{clip_grad_norm_unless_overflow, AdamW, LossScaler, LossScalerConfig, Optimizer};
//! # fn demo(gpu: &cads::Gpu, opt: &mut AdamW, params: &[cads::Tensor],
//! #         loss_of: impl Fn() -> cads::Result<cads::Tensor>) -> cads::Result<()> {
//! let mut scaler = LossScaler::new(gpu, LossScalerConfig::default())?;
//! for _ in 0..100 {
//!     let loss = loss_of()?;
//!     let mut grads = scaler.scale(&loss)?.backward()?;
//!     let check = scaler.unscale_and_check(params, &mut grads)?;
//!     clip_grad_norm_unless_overflow(params, &mut grads, 1.0, &check)?; // None on an overflow
//!     opt.step_unless_overflow(&grads, &check)?;
//!     scaler.update()?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Where the flag is read (no blocking read in the step)
//!
//! [`LossScaler::unscale_and_check`] is one pass over the gradients: each element is read once,
//! multiplied by 1/S and written back in place, and any non-finite value sets a one-word flag on
//! the device (one launch per distinct gradient buffer: wgpu binds a bounded number of buffers
//! per launch). The optimizer kernels read that flag and return before touching anything when it
//! is set, so a skipped step needs no host decision and the step records without waiting.
//!
//! The flag also travels to the host asynchronously, and the host uses it ONE STEP LATER:
//! - the scale arithmetic above runs on the host, torch-exactly in f64, when the next step needs
//!   S (its [`LossScaler::scale`]); by then the device has the next forward queued, so waiting
//!   for the previous step's flag (if it has not landed already) never idles it;
//! - AdamW's per-parameter step count t feeds the bias corrections, which the host computes in
//!   f64 as torch does; a skipped step must leave t unchanged (torch does not call
//!   `optimizer.step()`; its fused Adam subtracts found_inf from the step tensors), and a
//!   parameter whose first step was skipped has no state at all. The optimizers keep the host
//!   side of a loss-scaled step as [`Deferred`] and fold it in when the next step (or a state
//!   export) needs it.
//!
//! The alternative, reading the flag at once to decide on the host (torch's non-fused path,
//! `found_inf.item()`), would drain the device in every step before the optimizer is recorded.
//! Keeping S on the host also makes 1/S the f64 reciprocal rounded to f32 (torch's), and the
//! checkpoint state a pair of host numbers.
//!
//! Differences from torch, on purpose: the product g·(1/S) is checked too (see the shader), and
//! the scaler serves one optimizer per step.

use std::sync::{Arc, Mutex};

use super::{check_grad, clip_grad_norm, Optimizer};
use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::gpu::{Fence, Gpu, Grid, KernelSpec};
use crate::tensor::{PendingValues, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `UnscaleParams` in shaders/optim_loss_scale.wgsl.
    struct UnscaleParams {
        n: u32,
        inv_scale: f32,
        _pad: [u32; 2],
    }
}

pub(super) const UNSCALE_CHECK: KernelSpec = KernelSpec {
    shader: "optim_loss_scale",
    source: include_str!("../../shaders/optim_loss_scale.wgsl"),
    entry: "unscale_check",
    inputs: 0,
    outputs: 2,
    params: UnscaleParams::LAYOUT,
    constants: &[],
};

/// torch.amp.GradScaler's settings (its defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScalerConfig {
    /// The scale S of the first step (f32; 2^16).
    pub init_scale: f64,
    /// S ← S·growth after `growth_interval` clean steps in a row (> 1; 2).
    pub growth_factor: f64,
    /// S ← S·backoff after a step with an inf or NaN gradient (in (0, 1); 0.5).
    pub backoff_factor: f64,
    /// Clean steps in a row before S grows (≥ 1; 2000).
    pub growth_interval: u32,
}

impl Default for LossScalerConfig {
    fn default() -> Self {
        LossScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl LossScalerConfig {
    /// Reject factors torch rejects and a scale f32 cannot hold.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "LossScalerConfig";
        let s = self.init_scale as f32;
        if !(self.init_scale.is_finite() && s.is_finite() && s > 0.0) {
            return Err(Error::invalid(
                OP,
                "an init_scale > 0 that f32 holds",
                self.init_scale,
            ));
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return Err(Error::invalid(
                OP,
                "a finite growth_factor > 1",
                self.growth_factor,
            ));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return Err(Error::invalid(
                OP,
                "a backoff_factor in (0, 1)",
                self.backoff_factor,
            ));
        }
        if self.growth_interval == 0 {
            return Err(Error::invalid(OP, "a growth_interval >= 1", 0));
        }
        Ok(())
    }
}

/// What a checkpoint stores of a scaler (torch's `GradScaler.state_dict()`): the scale, the
/// clean steps since the last change, and the factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScalerState {
    pub scale: f32,
    /// Consecutive clean steps since the scale last changed (< growth_interval).
    pub growth_tracker: u32,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u32,
}

impl LossScalerState {
    /// The config these factors make, with this scale as the initial one.
    pub fn config(&self) -> LossScalerConfig {
        LossScalerConfig {
            init_scale: self.scale as f64,
            growth_factor: self.growth_factor,
            backoff_factor: self.backoff_factor,
            growth_interval: self.growth_interval,
        }
    }

    /// Reject a state no scaler can be in (factors, a tracker at or past the interval).
    pub fn validate(&self) -> Result<()> {
        self.config().validate()?;
        if self.growth_tracker >= self.growth_interval {
            return Err(Error::invalid(
                "LossScalerState",
                format!(
                    "a growth tracker < growth_interval {}",
                    self.growth_interval
                ),
                self.growth_tracker,
            ));
        }
        Ok(())
    }

    /// The state after one step (torch `_amp_update_scale_`, see the module docs).
    pub fn after_step(mut self, found_inf: bool) -> LossScalerState {
        if found_inf {
            self.scale = (self.scale as f64 * self.backoff_factor) as f32;
            self.growth_tracker = 0;
        } else if self.growth_tracker + 1 >= self.growth_interval {
            let grown = (self.scale as f64 * self.growth_factor) as f32;
            // Never grow past f32's range to inf.
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
        }
        self
    }
}

/// The outcome of one [`LossScaler::unscale_and_check`]: a one-word flag on the device (1.0 when
/// a gradient was inf or NaN, else 0.0), which the optimizer kernels read, and its read to the
/// host, started at once and collected when first asked for. Cloning shares both.
#[derive(Clone)]
pub struct OverflowCheck {
    inner: Arc<CheckInner>,
}

struct CheckInner {
    flag: Tensor,
    read: Mutex<FlagRead>,
}

enum FlagRead {
    /// On its way: the read and the stream position right after its copy.
    InFlight(PendingValues, Fence),
    Known(bool),
    /// The read failed (device lost); every later ask fails the same way.
    Failed(String),
}

impl std::fmt::Debug for OverflowCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.inner.read.lock().unwrap_or_else(|e| e.into_inner()) {
            FlagRead::InFlight(..) => "in flight".to_string(),
            FlagRead::Known(v) => format!("found_inf {v}"),
            FlagRead::Failed(e) => format!("failed: {e}"),
        };
        write!(f, "OverflowCheck({state})")
    }
}

impl OverflowCheck {
    /// Start the read of `flag` (after all work recorded so far).
    fn start(flag: Tensor) -> Result<OverflowCheck> {
        let values = flag.to_vec_async()?;
        let fence = flag.gpu().fence()?;
        Ok(OverflowCheck {
            inner: Arc::new(CheckInner {
                flag,
                read: Mutex::new(FlagRead::InFlight(values, fence)),
            }),
        })
    }

    /// The device flag `[1]` (1.0: skip the step).
    pub fn flag(&self) -> &Tensor {
        &self.inner.flag
    }

    /// Whether the read has landed (one non-blocking device poll).
    pub fn is_known(&self) -> Result<bool> {
        let read = self.inner.read.lock().unwrap_or_else(|e| e.into_inner());
        match &*read {
            FlagRead::InFlight(values, _) => values.ready(),
            FlagRead::Known(_) => Ok(true),
            FlagRead::Failed(reason) => Err(lost(reason)),
        }
    }

    /// Whether any gradient was inf or NaN, i.e. whether the step was skipped. Waits for the
    /// device only if the flag has not landed yet; the work recorded since is submitted first,
    /// so the device runs it while the host waits for this one word.
    pub fn found_inf(&self) -> Result<bool> {
        const OP: &str = "OverflowCheck::found_inf";
        let mut read = self.inner.read.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match std::mem::replace(&mut *read, FlagRead::Failed("in use".into())) {
            FlagRead::Known(v) => Ok(v),
            FlagRead::Failed(reason) => Err(reason),
            FlagRead::InFlight(values, fence) => {
                let landed = || -> Result<Vec<f32>> {
                    if !values.ready()? {
                        self.inner.flag.gpu().flush()?;
                        fence.wait()?;
                    }
                    values.wait()
                };
                match landed() {
                    Ok(v) if v == [0.0] => Ok(false),
                    Ok(v) if v == [1.0] => Ok(true),
                    Ok(v) => Err(format!("{OP}: a flag of 0 or 1, got {v:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        *read = match &outcome {
            Ok(v) => FlagRead::Known(*v),
            Err(reason) => FlagRead::Failed(reason.clone()),
        };
        outcome.map_err(|reason| lost(&reason))
    }
}

fn lost(reason: &str) -> Error {
    Error::DeviceLost {
        op: "OverflowCheck::found_inf",
        reason: reason.to_string(),
    }
}

/// The host-side effect of a loss-scaled optimizer step, held until its flag is read: per
/// `(group, index)`, the state the parameter has if the step was taken. Discarded when the
/// step was skipped, so step counts and first-step states stay as they were.
pub(crate) struct Deferred<T> {
    pub check: OverflowCheck,
    pub entries: Vec<(usize, usize, T)>,
}

impl<T> Deferred<T> {
    /// Whether the step was taken (waits for the flag if needed).
    pub fn taken(&self) -> Result<bool> {
        Ok(!self.check.found_inf()?)
    }

    /// The state of `(group, index)` if the step was taken and changed it.
    pub fn get(&self, group: usize, index: usize) -> Result<Option<&T>> {
        if !self.taken()? {
            return Ok(None);
        }
        Ok(self
            .entries
            .iter()
            .find(|(g, i, _)| (*g, *i) == (group, index))
            .map(|(_, _, t)| t))
    }
}

/// The skip flag an optimizer launch binds: the check's, or (unscaled step) a zero word the
/// optimizer keeps in `cache`.
pub(crate) fn skip_flag(
    op: &'static str,
    cache: &mut Option<Tensor>,
    check: Option<&OverflowCheck>,
    param: &Tensor,
) -> Result<Tensor> {
    if let Some(c) = check {
        param.check_same_gpu(op, c.flag())?;
        return Ok(c.flag().clone());
    }
    match cache {
        Some(zero) if zero.gpu().same(param.gpu()) => Ok(zero.clone()),
        _ => {
            let zero = Tensor::zeros(param.gpu(), &[1])?;
            *cache = Some(zero.clone());
            Ok(zero)
        }
    }
}

/// [`clip_grad_norm`] in a loss-scaled step: when the gradients overflowed (the check's flag
/// is set) their norm is inf or NaN and the optimizer step is skipped anyway, so that is
/// `Ok(None)` (gradients left unclipped) instead of [`Error::NonFinite`]. The flag is waited for
/// only then, after the clip's own read of the norm.
pub fn clip_grad_norm_unless_overflow(
    params: &[Tensor],
    grads: &mut Gradients,
    max_norm: f64,
    check: &OverflowCheck,
) -> Result<Option<f32>> {
    match clip_grad_norm(params, grads, max_norm) {
        Ok(norm) => Ok(Some(norm)),
        Err(Error::NonFinite { .. }) if check.found_inf()? => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where a scaler is in torch's per-step protocol.
enum Stage {
    Ready,
    Unscaled(OverflowCheck),
    Stepped(OverflowCheck),
}

/// Dynamic loss scaling for one optimizer (see the module docs).
pub struct LossScaler {
    gpu: Gpu,
    /// Scale, tracker and factors as of the last step folded in.
    state: LossScalerState,
    stage: Stage,
    /// The check of the last `update`d step, not yet folded into `state`.
    unapplied: Option<OverflowCheck>,
    /// Steps skipped so far (folded in).
    skipped: u64,
}

impl std::fmt::Debug for LossScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossScaler")
            .field("state", &self.state)
            .field("unapplied", &self.unapplied)
            .finish()
    }
}

impl LossScaler {
    pub fn new(gpu: &Gpu, config: LossScalerConfig) -> Result<LossScaler> {
        config.validate()?;
        Ok(LossScaler {
            gpu: gpu.clone(),
            state: LossScalerState {
                scale: config.init_scale as f32,
                growth_tracker: 0,
                growth_factor: config.growth_factor,
                backoff_factor: config.backoff_factor,
                growth_interval: config.growth_interval,
            },
            stage: Stage::Ready,
            unapplied: None,
            skipped: 0,
        })
    }

    /// Fold the last updated step's outcome into the scale (waits for its flag if needed).
    pub fn settle(&mut self) -> Result<()> {
        if let Some(check) = &self.unapplied {
            let found_inf = check.found_inf()?;
            self.state = self.state.after_step(found_inf);
            self.skipped += found_inf as u64;
            self.unapplied = None;
        }
        Ok(())
    }

    /// The current state, with the last updated step folded in (waits for its flag if needed).
    pub fn state(&self) -> Result<LossScalerState> {
        match &self.unapplied {
            None => Ok(self.state),
            Some(check) => Ok(self.state.after_step(check.found_inf()?)),
        }
    }

    /// The scale the next [`LossScaler::scale`] multiplies by.
    pub fn current_scale(&self) -> Result<f32> {
        Ok(self.state()?.scale)
    }

    /// The scale the last [`LossScaler::scale`] multiplied by, without reading the device: the
    /// scale that step ran with (a skipped step halves the next one's). For per-step logs that
    /// must not wait for the step's overflow flag.
    pub fn last_used_scale(&self) -> f32 {
        self.state.scale
    }

    /// Optimizer steps skipped so far (an inf or NaN gradient), the last updated one included.
    pub fn skipped_steps(&self) -> Result<u64> {
        Ok(match &self.unapplied {
            None => self.skipped,
            Some(check) => self.skipped + check.found_inf()? as u64,
        })
    }

    /// Continue from a checkpoint's state (scale, tracker and factors, as torch's
    /// `load_state_dict`). Only between steps.
    pub fn load_state(&mut self, state: &LossScalerState) -> Result<()> {
        const OP: &str = "LossScaler::load_state";
        state.validate()?;
        if !matches!(self.stage, Stage::Ready) {
            return Err(Error::invalid(
                OP,
                "a scaler between steps (after update)",
                "one in the middle of a step",
            ));
        }
        self.state = *state;
        self.unapplied = None;
        Ok(())
    }

    /// `loss · S`, recorded: its backward carries S into every gradient.
    pub fn scale(&mut self, loss: &Tensor) -> Result<Tensor> {
        self.settle()?;
        crate::ops::elementwise::scale(loss, self.state.scale)
    }

    /// Divide the gradients of `params` by S in place and check them for inf / NaN: one pass
    /// over each distinct gradient buffer (a buffer several parameters share is unscaled once).
    /// Returns the check the optimizer step reads. Once per step, before clipping (which must
    /// see unscaled gradients) and before the optimizer step.
    pub fn unscale_and_check(
        &mut self,
        params: &[Tensor],
        grads: &mut Gradients,
    ) -> Result<OverflowCheck> {
        const OP: &str = "LossScaler::unscale_and_check";
        match self.stage {
            Stage::Ready => {}
            Stage::Unscaled(_) => {
                return Err(Error::invalid(
                    OP,
                    "one unscale per step (then step and update)",
                    "a second unscale since the last update",
                ))
            }
            Stage::Stepped(_) => {
                return Err(Error::invalid(
                    OP,
                    "unscale before the optimizer step",
                    "an unscale after step",
                ))
            }
        }
        self.settle()?;
        // Validate everything before the first launch.
        let mut buffers: Vec<(&Tensor, usize)> = Vec::new();
        for p in params {
            if !self.gpu.same(p.gpu()) {
                return Err(Error::invalid(
                    OP,
                    "parameters on the scaler's device",
                    format!("{p:?} on another device"),
                ));
            }
            let Some(g) = grads.get(p) else { continue };
            check_grad(OP, p, g)?;
            match buffers.iter_mut().find(|(b, _)| b.buffer() == g.buffer()) {
                Some((_, n)) => *n = (*n).max(g.numel()),
                None => buffers.push((g, g.numel())),
            }
        }
        // torch: the reciprocal in f64, rounded to f32 ("FP32 division can be imprecise").
        let inv_scale = (1.0 / self.state.scale as f64) as f32;
        let flag = Tensor::zeros(&self.gpu, &[1])?;
        for (g, n) in buffers {
            if n == 0 {
                continue;
            }
            let params = UnscaleParams {
                n: n as u32,
                inv_scale,
                _pad: [0; 2],
            };
            self.gpu.dispatch(
                &UNSCALE_CHECK,
                &params,
                &[],
                &[g.buffer(), flag.buffer()],
                Grid::cover(n as u64, 256),
            )?;
        }
        let check = OverflowCheck::start(flag)?;
        self.stage = Stage::Unscaled(check.clone());
        Ok(check)
    }

    /// torch `scaler.step(optimizer)`: unscale and check the gradients of the optimizer's
    /// parameters unless [`LossScaler::unscale_and_check`] already did this step, then the
    /// optimizer step, skipped on the device when a gradient overflowed.
    pub fn step(&mut self, optimizer: &mut dyn Optimizer, grads: &mut Gradients) -> Result<()> {
        let check = match &self.stage {
            Stage::Ready => self.unscale_and_check(&optimizer.params(), grads)?,
            Stage::Unscaled(check) => check.clone(),
            Stage::Stepped(_) => {
                return Err(Error::invalid(
                    "LossScaler::step",
                    "one optimizer step per update",
                    "a second step since the last update",
                ))
            }
        };
        optimizer.step_unless_overflow(grads, &check)?;
        self.stage = Stage::Stepped(check);
        Ok(())
    }

    /// End the step: its outcome decides the next scale (folded in when the next step asks for
    /// it, see the module docs).
    pub fn update(&mut self) -> Result<()> {
        let check = match std::mem::replace(&mut self.stage, Stage::Ready) {
            Stage::Unscaled(c) | Stage::Stepped(c) => c,
            Stage::Ready => {
                return Err(Error::invalid(
                    "LossScaler::update",
                    "an unscale_and_check (or step) since the last update",
                    "none: no inf check was recorded",
                ))
            }
        };
        self.settle()?;
        self.unapplied = Some(check);
        Ok(())
    }
}
