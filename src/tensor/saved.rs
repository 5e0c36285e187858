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
//! Losses and parameters are never kept in f16, nor the norms' inputs as they are (their
//! backward subtracts the mean, which would amplify a rounding of x); LayerNorm keeps the f16
//! rounding of its centred input x − μ instead (src/ops/norm/layer_kept.rs).
//!
//! An activation of magnitude ≥ 65520 rounds to ±inf: its gradients then come out non-finite,
//! which dynamic loss scaling (src/optim) detects and skips, as with PyTorch's f16 activations.

use std::sync::Arc;

use super::cast::cast_unrecorded;
use super::{DType, Tensor, TensorInner};
use crate::error::Result;

/// The f16 rounding of `t` (itself, detached, when it already is f16), unrecorded. One
/// activation is often read by several backwards — a norm's output by the q and kv
/// projections and the spatial-reduction conv, attention's output by attention and the output
/// projection — and each would keep its own copy; for a tensor the tape recorded, every caller
/// gets the same copy while any of them holds it (the link lives with the buffer,
/// `PooledBuffer::half_rounding`), so the activation is kept once. Only recorded tensors share:
/// op outputs are never written again (`Tensor::write` and `Tensor::assign`, which could,
/// drop the link), whereas leaves such as parameters change in place between uses.
pub(crate) fn half_rounding(op: &'static str, t: &Tensor) -> Result<Tensor> {
    half_rounding_shared(op, t, t.inner.node.is_some())
}

/// [`half_rounding`], linked for sharing when `shared` (a recorded tensor, or an op's fresh
/// output that is about to be recorded).
fn half_rounding_shared(op: &'static str, t: &Tensor, shared: bool) -> Result<Tensor> {
    if t.dtype() == DType::F16 {
        return Ok(t.detach());
    }
    let elements = t.numel() as u64;
    let existing = match shared {
        true => t.inner.storage.half_rounding(elements),
        false => None,
    };
    if let Some(storage) = existing {
        return Ok(Tensor {
            inner: Arc::new(TensorInner {
                gpu: t.gpu().clone(),
                storage,
                shape: t.shape().to_vec(),
                dtype: DType::F16,
                id: t.gpu().next_id(),
                requires_grad: false,
                node: None,
            }),
        });
    }
    let copy = cast_unrecorded(op, &t.detach(), DType::F16)?;
    if shared {
        t.inner
            .storage
            .set_half_rounding(elements, &copy.inner.storage);
    }
    Ok(copy)
}

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
            half_rounding(op, t)?
        } else {
            t.detach()
        };
        Ok(Saved {
            kept,
            dtype: t.dtype(),
        })
    }

    /// Keep `t` in f16 when the calling thread runs mixed precision on this device and records
    /// (under `no_grad` nothing reads what is kept: no rounding pass is spent on it).
    pub(crate) fn keep_autocast(op: &'static str, t: &Tensor) -> Result<Saved> {
        let gpu = t.gpu();
        Saved::keep(op, t, gpu.mixed_precision() && gpu.grad_enabled())
    }

    /// [`Saved::keep_autocast`] of the op's own output, which the op records next from
    /// `inputs`: its f16 rounding is shared with the later consumers of the output that keep
    /// one (attention's output feeds the output projection). Nothing is rounded when the op
    /// will not be recorded.
    pub(crate) fn keep_output_autocast(
        op: &'static str,
        out: &Tensor,
        inputs: &[&Tensor],
    ) -> Result<Saved> {
        let gpu = out.gpu();
        let recorded = gpu.grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        if !(recorded && gpu.mixed_precision() && out.dtype() == DType::F32) {
            return Saved::keep(op, out, false);
        }
        Ok(Saved {
            kept: half_rounding_shared(op, out, true)?,
            dtype: out.dtype(),
        })
    }

    /// The kept f16 copy when the original was f32 (for a backward that reads f16 directly).
    pub(crate) fn half(&self) -> Option<&Tensor> {
        (self.kept.dtype() == DType::F16 && self.dtype == DType::F32).then_some(&self.kept)
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
