//! Gradient norms and clipping on the GPU. Kernels: shaders/optim_clip.wgsl.
//! Reference: `reference::optim::{clip_per_tensor, clip_global}`.
//!
//! Norms are a two-pass reduction without atomics: pass 1 writes one partial sum of squares per
//! chunk of 4096 elements (16384 on vec4 loads) of each gradient, pass 2 (one launch, one
//! workgroup per gradient) sums each gradient's partials and writes ‖g‖₂ into slot i of a `[k]`
//! norms tensor. The clip coefficient min(1, max_norm / (‖g‖ + 1e-6)) is evaluated on the
//! GPU from that tensor, so clipping needs no host round trip; the norms are read back once at the
//! end to be returned (for logging, as DINO does).
//!
//! Clipped gradients are written to FRESH tensors that replace the entries in `Gradients`: one
//! gradient tensor may be shared by several parameters (e.g. both operands of an add), so scaling
//! in place could scale it twice.
//!
//! Non-finite gradients give a non-finite norm, and the clipped values would be unspecified
//! (WGSL leaves `min` with NaN undefined). The norms are read back anyway (they are returned for
//! logging), so the check costs no extra host sync: a non-finite norm puts the unclipped
//! gradients back and returns [`Error::NonFinite`], and the caller stops or skips the step.

use std::collections::HashSet;

use super::check_grad;
use crate::autograd::Gradients;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::Tensor;

const SOURCE: &str = include_str!("../../shaders/optim_clip.wgsl");

/// Elements summed by one workgroup in pass 1 (256 invocations × 16).
const CHUNK: u32 = 4096;
/// ... in the vec4 pass 1 (256 invocations × 16 vec4: a quarter of the workgroups, so of their
/// reduction trees).
const CHUNK4: u32 = 16384;
/// The ε of DINO's `clip_gradients` and torch's `clip_grad_norm_`.
const CLIP_EPS: f32 = 1e-6;

crate::gpu::shader_params! {
    /// Mirrors `SumSquaresParams` in shaders/optim_clip.wgsl.
    struct SumSquaresParams {
        n: u32,
        chunk: u32,
        groups: u32,
        out_offset: u32,
        square_input: u32,
        sqrt_output: u32,
        _pad: [u32; 2],
    }
}

crate::gpu::shader_params! {
    /// Mirrors `ClipParams` in shaders/optim_clip.wgsl.
    struct ClipParams {
        n: u32,
        norm_index: u32,
        max_norm: f32,
        eps: f32,
    }
}

pub(super) const SUM_SQUARES: KernelSpec = KernelSpec {
    shader: "optim_clip",
    source: SOURCE,
    entry: "sum_squares",
    inputs: 1,
    outputs: 1,
    params: SumSquaresParams::LAYOUT,
    constants: &[],
};
pub(super) const CLIP_SCALE: KernelSpec = KernelSpec {
    shader: "optim_clip",
    source: SOURCE,
    entry: "clip_scale",
    inputs: 2,
    outputs: 1,
    params: ClipParams::LAYOUT,
    constants: &[],
};
/// Pass 1 on vec4 loads (n % 4 == 0), in chunks of [`CHUNK4`].
pub(super) const SUM_SQUARES4: KernelSpec = KernelSpec {
    entry: "sum_squares4",
    ..SUM_SQUARES
};
/// Four elements per invocation, for tensors of n % 4 == 0 values.
pub(super) const CLIP_SCALE_4: KernelSpec = KernelSpec {
    entry: "clip_scale_4",
    ..CLIP_SCALE
};

/// Launch `spec` (`sum_squares`, or `sum_squares4` with n and chunk multiples of 4) over the
/// first `n` elements of `x`, `chunk` elements per workgroup, writing `ceil(n / chunk)` results
/// into `out` from `out_offset`.
#[allow(clippy::too_many_arguments)]
fn sum_squares(
    spec: &KernelSpec,
    x: &Tensor,
    n: u32,
    chunk: u32,
    square: bool,
    sqrt: bool,
    out: &Tensor,
    out_offset: u32,
) -> Result<()> {
    let groups = n.div_ceil(chunk).max(1);
    let params = SumSquaresParams {
        n,
        chunk,
        groups,
        out_offset,
        square_input: square as u32,
        sqrt_output: sqrt as u32,
        _pad: [0; 2],
    };
    x.gpu().dispatch(
        spec,
        &params,
        &[x.buffer()],
        &[out.buffer()],
        Grid::Linear(groups as u64),
    )
}

/// Pass 1's kernel and chunk for a gradient of `n` values.
fn pass1(n: u32) -> (&'static KernelSpec, u32) {
    if n.is_multiple_of(4) {
        (&SUM_SQUARES4, CHUNK4)
    } else {
        (&SUM_SQUARES, CHUNK)
    }
}

/// `[k]` tensor of ‖g_i‖₂ for the given gradients (0 for an empty one).
///
/// Pass 1 of every gradient writes into one zeroed partials tensor, `slots` per gradient (the
/// most partials any gradient has; the unused ones stay 0), and ONE pass-2 launch sums them,
/// workgroup i over gradient i's slots: a step with k parameters launches k + 2 kernels, not
/// 2k (each pass-2 launch was a whole workgroup's reduction tree for a handful of values).
pub(super) fn norms_tensor(op: &'static str, grads: &[&Tensor]) -> Result<Tensor> {
    let gpu = grads[0].gpu();
    let count = |g: &Tensor| {
        let n = g.numel() as u32;
        n.div_ceil(pass1(n).1)
    };
    let slots = grads.iter().map(|g| count(g)).max().unwrap_or(0).max(1);
    let k = grads.len() as u32;
    let total = k.checked_mul(slots).ok_or_else(|| {
        Error::invalid(op, "fewer than 2^32 partial sums", format!("{k} x {slots}"))
    })?;
    let partials = Tensor::zeros(gpu, &[total as usize])?;
    for (i, g) in grads.iter().enumerate() {
        let n = g.numel() as u32;
        if n > 0 {
            let (spec, chunk) = pass1(n);
            sum_squares(spec, g, n, chunk, true, false, &partials, i as u32 * slots)?;
        }
    }
    let norms = Tensor::uninit(gpu, op, &[grads.len()])?;
    sum_squares(
        &SUM_SQUARES,
        &partials,
        total,
        slots,
        false,
        true,
        &norms,
        0,
    )?;
    Ok(norms)
}

/// Gradients of `params` that are present, validated; parameters listed twice are rejected.
pub(super) fn present_grads<'a>(
    op: &'static str,
    params: &[Tensor],
    grads: &'a Gradients,
) -> Result<Vec<(usize, &'a Tensor)>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in params.iter().enumerate() {
        if !seen.insert(p.id()) {
            return Err(Error::invalid(
                op,
                "each parameter once",
                format!("{p:?} listed twice"),
            ));
        }
        if let Some(g) = grads.get(p) {
            check_grad(op, p, g)?;
            out.push((i, g));
        }
    }
    Ok(out)
}

pub(super) fn check_max_norm(op: &'static str, max_norm: f64) -> Result<()> {
    if max_norm.is_finite() && max_norm >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(op, "a finite max_norm >= 0", max_norm))
    }
}

/// `x · min(1, max_norm / (norms[index] + 1e-6))` into a fresh tensor.
pub(super) fn clip_scaled(
    x: &Tensor,
    norms: &Tensor,
    index: usize,
    max_norm: f64,
) -> Result<Tensor> {
    let out = Tensor::uninit(x.gpu(), "clip_scale", x.shape())?;
    let n = x.numel();
    if n > 0 {
        let params = ClipParams {
            n: n as u32,
            norm_index: index as u32,
            max_norm: max_norm as f32,
            eps: CLIP_EPS,
        };
        let (spec, invocations) = if n.is_multiple_of(4) {
            (&CLIP_SCALE_4, n / 4)
        } else {
            (&CLIP_SCALE, n)
        };
        x.gpu().dispatch(
            spec,
            &params,
            &[x.buffer(), norms.buffer()],
            &[out.buffer()],
            Grid::cover(invocations as u64, 256),
        )?;
    }
    Ok(out)
}

/// Per-parameter L2 norms of the gradients (`None` where a parameter has no gradient).
pub fn grad_norms(params: &[Tensor], grads: &Gradients) -> Result<Vec<Option<f32>>> {
    const OP: &str = "grad_norms";
    let present = present_grads(OP, params, grads)?;
    let mut out = vec![None; params.len()];
    if present.is_empty() {
        return Ok(out);
    }
    let list: Vec<&Tensor> = present.iter().map(|(_, g)| *g).collect();
    let values = norms_tensor(OP, &list)?.to_vec()?;
    for ((i, _), v) in present.iter().zip(values) {
        out[*i] = Some(v);
    }
    Ok(out)
}

/// DINO `clip_gradients`: each gradient g of `params` is scaled by
/// min(1, max_norm / (‖g‖₂ + 1e-6)) separately (CADS: max_norm 0.3). Returns the norms measured
/// before clipping, aligned with `params` (`None` where a parameter has no gradient).
pub fn clip_grad_norm_per_tensor(
    params: &[Tensor],
    grads: &mut Gradients,
    max_norm: f64,
) -> Result<Vec<Option<f32>>> {
    const OP: &str = "clip_grad_norm_per_tensor";
    check_max_norm(OP, max_norm)?;
    let present: Vec<(usize, Tensor)> = present_grads(OP, params, grads)?
        .into_iter()
        .map(|(i, g)| (i, g.clone()))
        .collect();
    let mut out = vec![None; params.len()];
    if present.is_empty() {
        return Ok(out);
    }
    let list: Vec<&Tensor> = present.iter().map(|(_, g)| g).collect();
    let norms = norms_tensor(OP, &list)?;
    for (slot, (i, g)) in present.iter().enumerate() {
        let clipped = clip_scaled(g, &norms, slot, max_norm)?;
        grads.remove(&params[*i]);
        grads.accumulate(params[*i].id(), clipped)?;
    }
    let values = norms.to_vec()?;
    if let Some(&bad) = values.iter().find(|v| !v.is_finite()) {
        restore(params, grads, &present)?;
        return Err(non_finite(OP, bad));
    }
    for ((i, _), v) in present.iter().zip(values) {
        out[*i] = Some(v);
    }
    Ok(out)
}

/// [`clip_grad_norm_per_tensor`] without the host read: the norms measured before clipping
/// stay on the GPU, `[count]` in the order of the parameters that have a gradient (`None` when
/// none has). A training step calls this so nothing waits for the GPU.
pub fn clip_grad_norm_per_tensor_on_gpu(
    params: &[Tensor],
    grads: &mut Gradients,
    max_norm: f64,
) -> Result<Option<Tensor>> {
    const OP: &str = "clip_grad_norm_per_tensor_on_gpu";
    check_max_norm(OP, max_norm)?;
    let present: Vec<(usize, Tensor)> = present_grads(OP, params, grads)?
        .into_iter()
        .map(|(i, g)| (i, g.clone()))
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let list: Vec<&Tensor> = present.iter().map(|(_, g)| g).collect();
    let norms = norms_tensor(OP, &list)?;
    drop(list);
    // One gradient at a time: each unclipped gradient is released as soon as its clipped copy
    // is recorded, so the step holds the gradients once plus one tensor, not twice (at b1 scale
    // the gradients are ~0.47 GB; holding both was the steady-state peak of a CADS step).
    for (slot, (i, g)) in present.into_iter().enumerate() {
        let clipped = clip_scaled(&g, &norms, slot, max_norm)?;
        drop(g);
        grads.remove(&params[i]);
        grads.accumulate(params[i].id(), clipped)?;
    }
    Ok(Some(norms))
}

/// Put the unclipped gradients back (a non-finite norm made the clipped ones meaningless).
fn restore(params: &[Tensor], grads: &mut Gradients, present: &[(usize, Tensor)]) -> Result<()> {
    for (i, g) in present {
        grads.remove(&params[*i]);
        grads.accumulate(params[*i].id(), g.clone())?;
    }
    Ok(())
}

fn non_finite(op: &'static str, value: f32) -> Error {
    Error::NonFinite {
        op,
        what: "gradient norm (the gradients are left unclipped)",
        value,
        step: u64::MAX,
    }
}

/// torch `clip_grad_norm_` (L2): the total norm √(Σ_i ‖g_i‖²) over every gradient of `params`,
/// and every gradient scaled by the one factor min(1, max_norm / (total + 1e-6)). Returns the
/// total norm measured before clipping (0 when no parameter has a gradient).
pub fn clip_grad_norm(params: &[Tensor], grads: &mut Gradients, max_norm: f64) -> Result<f32> {
    const OP: &str = "clip_grad_norm";
    check_max_norm(OP, max_norm)?;
    let present: Vec<(usize, Tensor)> = present_grads(OP, params, grads)?
        .into_iter()
        .map(|(i, g)| (i, g.clone()))
        .collect();
    if present.is_empty() {
        return Ok(0.0);
    }
    let list: Vec<&Tensor> = present.iter().map(|(_, g)| g).collect();
    let norms = norms_tensor(OP, &list)?;
    let k = norms.numel() as u32;
    let total = Tensor::uninit(norms.gpu(), OP, &[1])?;
    sum_squares(&SUM_SQUARES, &norms, k, k, true, true, &total, 0)?;
    for (i, g) in &present {
        let clipped = clip_scaled(g, &total, 0, max_norm)?;
        grads.remove(&params[*i]);
        grads.accumulate(params[*i].id(), clipped)?;
    }
    let value = total.to_scalar()?;
    if !value.is_finite() {
        restore(params, grads, &present)?;
        return Err(non_finite(OP, value));
    }
    Ok(value)
}
