//! Values kept for backward, in half precision under autocast.
//!
//! A backward closure that reads a forward activation keeps it until the backward reaches it,
//! so the kept activations are most of a training step's memory. Under
//! `Precision::Mixed` (on a device with `SHADER_F16`) the ops whose PyTorch autocast
//! counterparts run in f16 — convolutions, activation functions, attention — keep the f16
//! rounding of the activation instead (half the bytes) and widen it back to f32 when their
//! backward runs; the f32 original returns to the pool as soon as the forward no longer uses it.
//! The forward itself still computes in f32 from the unrounded values, so only the gradients
//! see the rounding (relative 2⁻¹¹, the precision PyTorch's AMP computes those gradients in).
//! Norms, losses and parameters are never kept in f16 (the norms' backward subtracts the mean,
//! which would amplify the rounding).
//!
//! An activation of magnitude ≥ 65520 rounds to ±inf: its gradients then come out non-finite,
//! which dynamic loss scaling (src/optim) detects and skips, as with PyTorch's f16 activations.

use super::cast::cast_unrecorded;
use super::{DType, Tensor};
use crate::error::Result;

/// One value a backward reads, as the tape keeps it (see the module docs).
pub(crate) struct Saved {
    kept: Tensor,
    /// The original's type: what [`Saved::value`] gives back.
    dtype: DType,
}

impl Saved {
    /// Keep `t` (detached) for a backward. When `half` and `t` is f32, keep its f16 rounding
    /// instead; `half` is the op's decision, normally `t.gpu().mixed_precision()`.
    pub(crate) fn keep(op: &'static str, t: &Tensor, half: bool) -> Result<Saved> {
        let kept = if half && t.dtype() == DType::F32 {
            cast_unrecorded(op, &t.detach(), DType::F16)?
        } else {
            t.detach()
        };
        Ok(Saved {
            kept,
            dtype: t.dtype(),
        })
    }

    /// Keep `t` in f16 when the calling thread runs mixed precision on this device.
    pub(crate) fn keep_autocast(op: &'static str, t: &Tensor) -> Result<Saved> {
        Saved::keep(op, t, t.gpu().mixed_precision())
    }

    /// The value in its original type: the kept tensor itself, or a fresh f32 widening of the
    /// f16 copy (exact; freed when the caller drops it).
    pub(crate) fn value(&self, op: &'static str) -> Result<Tensor> {
        if self.kept.dtype() == self.dtype {
            Ok(self.kept.clone())
        } else {
            cast_unrecorded(op, &self.kept, self.dtype)
        }
    }
}
