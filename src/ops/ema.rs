//! In-place exponential moving average and copy between two lists of tensors paired by position:
//! the teacher update of DINO / CADS and the teacher's initial copy of the student.
//! Kernel: shaders/ema.wgsl (four elements per invocation where 4 divides the tensor).
//! Reference: src/reference/ema.rs.
//!
//!   ema_update_:  t ← m·t + (1 − m)·s      (one fused launch per pair, read t and s, write t)
//!   copy_:        t ← s                    (a buffer-to-buffer copy on the GPU)
//!
//! Neither records a tape node nor reads anything back to the host: like an optimizer step they
//! mutate leaves outside autograd, so they need no `no_grad` around them. Every pair is checked
//! (same shape, same device, no shared buffer, no target listed twice) before the first launch,
//! so a bad list writes nothing. Matching tensors by name is the job of `nn::ema`.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

/// Invocations per workgroup of `ema_update` (must match `@workgroup_size` in the shader).
const WORKGROUP: u32 = 64;

crate::gpu::shader_params! {
    /// Mirrors `EmaParams` in shaders/ema.wgsl.
    struct EmaParams {
        n: u32,
        _pad0: u32,
        momentum: f32,
        one_minus_momentum: f32,
    }
}

const EMA_UPDATE: KernelSpec = KernelSpec {
    shader: "ema",
    source: include_str!("../../shaders/ema.wgsl"),
    entry: "ema_update",
    inputs: 1,
    outputs: 1,
    params: EmaParams::LAYOUT,
    constants: &[],
};

/// Four elements per invocation, for tensors of n % 4 == 0 values.
const EMA_UPDATE_4: KernelSpec = KernelSpec {
    entry: "ema_update_4",
    ..EMA_UPDATE
};

pub(crate) const KERNELS: &[KernelSpec] = &[EMA_UPDATE, EMA_UPDATE_4];

/// Check that `targets[i]` can be overwritten from `sources[i]` for every i: equal counts, equal
/// shapes, one device, no target sharing a buffer with its source, and no target buffer twice
/// (a second update of the same buffer would apply the average twice).
fn check_pairs(op: &'static str, targets: &[Tensor], sources: &[Tensor]) -> Result<()> {
    if targets.len() != sources.len() {
        return Err(Error::invalid(
            op,
            format!("as many sources as targets ({})", targets.len()),
            sources.len(),
        ));
    }
    let mut seen = HashSet::new();
    for (i, (t, s)) in targets.iter().zip(sources).enumerate() {
        if t.shape() != s.shape() {
            return Err(Error::shape(
                op,
                format!("source {i} of the target's shape {:?}", t.shape()),
                s.shape(),
            ));
        }
        t.check_same_gpu(op, s)?;
        if let Some(first) = targets.first() {
            first.check_same_gpu(op, t)?;
        }
        if t.numel() == 0 {
            continue;
        }
        if t.buffer() == s.buffer() {
            return Err(Error::invalid(
                op,
                format!("target {i} in a buffer of its own"),
                "the source's buffer",
            ));
        }
        // Identity of the pooled allocation (reshaped views of one tensor share it).
        if !seen.insert(std::sync::Arc::as_ptr(&t.inner.storage) as usize) {
            return Err(Error::invalid(
                op,
                "each target buffer once",
                format!("target {i} ({t:?}) shares a buffer with an earlier target"),
            ));
        }
    }
    Ok(())
}

/// `targets[i] ← momentum·targets[i] + (1 − momentum)·sources[i]` for every i, in place.
///
/// `momentum` ∈ [0, 1]: 1 leaves the targets unchanged, 0 copies the sources. One launch per
/// pair; nothing is written unless every pair passes the checks.
pub fn ema_update_(targets: &[Tensor], sources: &[Tensor], momentum: f64) -> Result<()> {
    const OP: &str = "ema_update_";
    if !(momentum.is_finite() && (0.0..=1.0).contains(&momentum)) {
        return Err(Error::invalid(OP, "a momentum in [0, 1]", momentum));
    }
    check_pairs(OP, targets, sources)?;
    for (t, s) in targets.iter().zip(sources) {
        let n = t.numel();
        if n == 0 {
            continue;
        }
        let params = EmaParams {
            n: n as u32,
            _pad0: 0,
            momentum: momentum as f32,
            // (1 − m) in f64 then rounded, as torch rounds the Python scalar `1 - m`.
            one_minus_momentum: (1.0 - momentum) as f32,
        };
        // Four elements per invocation where they divide the tensor (every weight of the PVT
        // models and the DINO heads).
        let (spec, invocations) = if n.is_multiple_of(4) {
            (&EMA_UPDATE_4, n / 4)
        } else {
            (&EMA_UPDATE, n)
        };
        t.gpu().dispatch(
            spec,
            &params,
            &[s.buffer()],
            &[t.buffer()],
            Grid::cover(invocations as u64, WORKGROUP),
        )?;
    }
    Ok(())
}

/// `targets[i] ← sources[i]` for every i, in place (GPU buffer copies in stream order). Nothing
/// is written unless every pair passes the checks.
pub fn copy_(targets: &[Tensor], sources: &[Tensor]) -> Result<()> {
    check_pairs("copy_", targets, sources)?;
    for (t, s) in targets.iter().zip(sources) {
        t.assign(s)?;
    }
    Ok(())
}
