//! Per-tensor gradient clipping measured on the GPU and applied by the optimizer as it reads
//! each gradient ([`Optimizer::step_clipped`]), instead of a pass that writes clipped copies.
//!
//! [`clip_norms_per_tensor_on_gpu`] measures ‖g_i‖₂ of every present gradient (the norm passes
//! of clip.rs) and returns a [`GradClip`]: the norms tensor, each parameter's slot in it, and
//! max_norm. AdamW multiplies each gradient by c = min(1, max_norm / (‖g‖ + 1e-6)) inside its
//! update kernel, the expression of the copy pass, so the update is bit for bit that of
//! [`clip_grad_norm_per_tensor_on_gpu`] followed by [`Optimizer::step`] (tested) and the
//! gradients are read once instead of three times (read, write the copy, read it). An optimizer
//! without the fused form clips into copies first (the trait's default).
//!
//! [`clip_grad_norm_per_tensor_on_gpu`]: super::clip_grad_norm_per_tensor_on_gpu

use std::collections::HashMap;

use super::clip::{check_max_norm, clip_scaled, norms_tensor, present_grads};
use super::{Optimizer, OverflowCheck};
use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Per-tensor clipping measured, not yet applied (see the module docs).
#[derive(Clone)]
pub struct GradClip {
    norms: Tensor,
    /// Parameter id → its slot in `norms`.
    slots: HashMap<u64, u32>,
    max_norm: f64,
}

impl GradClip {
    /// ‖g_i‖₂ before clipping, `[count]` in the order of the parameters that had a gradient.
    pub fn norms(&self) -> &Tensor {
        &self.norms
    }

    /// The max_norm the gradients are clipped to.
    pub fn max_norm(&self) -> f64 {
        self.max_norm
    }

    /// The slot of `param`'s norm; an error when its gradient was not measured (a gradient added
    /// after the norms were taken would otherwise go unclipped).
    pub(crate) fn slot(&self, op: &'static str, param: &Tensor) -> Result<u32> {
        param.check_same_gpu(op, &self.norms)?;
        self.slots.get(&param.id()).copied().ok_or_else(|| {
            Error::invalid(
                op,
                "a gradient whose norm the clip measured",
                format!("{param:?} had no gradient then"),
            )
        })
    }

    /// `g` clipped into a fresh tensor.
    pub(crate) fn clipped(&self, op: &'static str, param: &Tensor, g: &Tensor) -> Result<Tensor> {
        let slot = self.slot(op, param)?;
        clip_scaled(g, &self.norms, slot as usize, self.max_norm)
    }
}

/// The norms of DINO's `clip_gradients` (each gradient of `params` to be scaled by
/// min(1, max_norm / (‖g‖₂ + 1e-6)) separately), measured on the GPU and left for the
/// optimizer to apply; `None` when no parameter has a gradient. `grads` is not changed.
pub fn clip_norms_per_tensor_on_gpu(
    params: &[Tensor],
    grads: &Gradients,
    max_norm: f64,
) -> Result<Option<GradClip>> {
    const OP: &str = "clip_norms_per_tensor_on_gpu";
    check_max_norm(OP, max_norm)?;
    let present = present_grads(OP, params, grads)?;
    if present.is_empty() {
        return Ok(None);
    }
    let list: Vec<&Tensor> = present.iter().map(|(_, g)| *g).collect();
    let norms = norms_tensor(OP, &list)?;
    let slots = present
        .iter()
        .enumerate()
        .map(|(slot, (i, _))| (params[*i].id(), slot as u32))
        .collect();
    Ok(Some(GradClip {
        norms,
        slots,
        max_norm,
    }))
}

/// The trait's default [`Optimizer::step_clipped`]: every gradient of the optimizer's
/// parameters clipped into a copy, then the plain step (both copies and originals are held
/// until it is recorded).
pub(crate) fn step_with_copies<O: Optimizer + ?Sized>(
    opt: &mut O,
    grads: &Gradients,
    check: Option<&OverflowCheck>,
    clip: &GradClip,
) -> Result<()> {
    const OP: &str = "Optimizer::step_clipped";
    let mut clipped = Gradients::default();
    for group in opt.groups().iter() {
        for p in &group.params {
            if let Some(g) = grads.get(p) {
                clipped.accumulate(p.id(), clip.clipped(OP, p, g)?)?;
            }
        }
    }
    match check {
        Some(check) => opt.step_unless_overflow(&clipped, check),
        None => opt.step(&clipped),
    }
}
