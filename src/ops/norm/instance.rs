//! InstanceNorm per channel over space (channels-last), alone and with LeakyReLU: the forward and
//! backward launches and the recorded ops.

use super::{
    block_rows, check_affine, finite_eps, InstanceNormParams, IN_APPLY, IN_APPLY_LEAKY,
    IN_BACK_INPUT, IN_BACK_PARTIAL, IN_FINALIZE, IN_PARTIAL,
};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Grid;
use crate::ops::elementwise::{leaky_relu, leaky_relu_backward_raw};
use crate::ops::reduce::{sum_rows_halves, sum_to_shape};
use crate::tensor::{Saved, Tensor};

fn in_dims(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    if x.rank() < 3 {
        return Err(Error::invalid(
            op,
            "[N, *spatial, C] with at least one spatial axis (rank >= 3)",
            format!("shape {:?}", x.shape()),
        ));
    }
    let (n, c) = (x.shape()[0], x.shape()[x.rank() - 1]);
    let s: usize = x.shape()[1..x.rank() - 1].iter().product();
    if s == 0 || c == 0 {
        return Err(Error::invalid(
            op,
            "non-empty spatial and channel axes",
            format!("shape {:?}", x.shape()),
        ));
    }
    Ok((n, s, c))
}

/// Forward launches (unrecorded): returns y and stats `[N, 2, C]` = (μ, rstd) per (n, c).
pub fn instance_norm_raw(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    instance_norm_launch(x, affine, eps, None)
}

/// [`instance_norm_raw`], with LeakyReLU of slope `leaky` (≥ 0) applied to y in the same pass.
fn instance_norm_launch(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    leaky: Option<f32>,
) -> Result<(Tensor, Tensor)> {
    let op = "instance_norm";
    finite_eps(op, eps)?;
    let (n, s, c) = in_dims(op, x)?;
    let has_affine = check_affine(op, x, affine, c)?;
    let gpu = x.gpu();
    let y = Tensor::uninit(gpu, op, x.shape())?;
    let stats = Tensor::uninit(gpu, op, &[n, 2, c])?;
    if n == 0 {
        return Ok((y, stats));
    }
    let block = block_rows(s);
    let n_blocks = s.div_ceil(block);
    let params = InstanceNormParams {
        batch: n as u32,
        spatial: s as u32,
        channels: c as u32,
        eps,
        affine: has_affine as u32,
        block_rows: block as u32,
        n_blocks: n_blocks as u32,
        act_slope: leaky.unwrap_or(0.0),
    };
    let partial = Tensor::uninit(gpu, op, &[n, n_blocks, 2, c])?;
    gpu.dispatch(
        &IN_PARTIAL,
        &params,
        &[x.buffer()],
        &[partial.buffer()],
        Grid::cover((n * n_blocks * c) as u64, 64),
    )?;
    gpu.dispatch(
        &IN_FINALIZE,
        &params,
        &[partial.buffer()],
        &[stats.buffer()],
        Grid::cover((n * c) as u64, 64),
    )?;
    apply_into(&y, x, &stats, affine, params, leaky)?;
    Ok((y, stats))
}

/// The normalisation's last pass into `y`: from x and its statistics, then LeakyReLU of slope
/// `leaky` when given (`params` as the statistics were computed with).
fn apply_into(
    y: &Tensor,
    x: &Tensor,
    stats: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    params: InstanceNormParams,
    leaky: Option<f32>,
) -> Result<()> {
    let (gamma, beta) = affine
        .map(|(g, b)| (g.buffer(), b.buffer()))
        .unwrap_or((x.buffer(), x.buffer()));
    x.gpu().dispatch(
        if leaky.is_some() {
            &IN_APPLY_LEAKY
        } else {
            &IN_APPLY
        },
        &params,
        &[x.buffer(), stats.buffer(), gamma, beta],
        &[y.buffer()],
        Grid::cover(x.numel() as u64, 256),
    )
}

/// y again from x and the statistics the forward computed (the same kernel on the same values:
/// the same bits), for a backward that kept neither y nor z.
fn instance_norm_reapply(
    x: &Tensor,
    stats: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let op = "instance_norm (recomputed)";
    let (n, s, c) = in_dims(op, x)?;
    let y = Tensor::uninit(x.gpu(), op, x.shape())?;
    if n == 0 {
        return Ok(y);
    }
    let params = InstanceNormParams {
        batch: n as u32,
        spatial: s as u32,
        channels: c as u32,
        eps: 0.0,
        affine: affine.is_some() as u32,
        block_rows: 0,
        n_blocks: 0,
        act_slope: 0.0,
    };
    apply_into(&y, x, stats, affine, params, None)?;
    Ok(y)
}

/// Backward launches (unrecorded): gx, and (gγ, gβ) when `param_grads`.
pub fn instance_norm_backward_raw(
    x: &Tensor,
    gamma: Option<&Tensor>,
    stats: &Tensor,
    g: &Tensor,
    param_grads: bool,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    instance_norm_backward_launch(x, gamma, stats, g, param_grads, 0.0)
}

/// gx of `z = leaky_relu(instance_norm(x), slope)` without affine, from z itself (slope > 0),
/// the statistics and g = ∂L/∂z: the kernels take x̂ = LeakyReLU⁻¹(z) and apply LeakyReLU' to g
/// (shaders/instance_norm_backward.wgsl, `normalized_and_grad`). Unrecorded.
fn instance_norm_leaky_backward_from_output(
    z: &Tensor,
    stats: &Tensor,
    g: &Tensor,
    slope: f32,
) -> Result<Tensor> {
    debug_assert!(slope > 0.0 && slope.is_finite());
    Ok(instance_norm_backward_launch(z, None, stats, g, false, slope)?.0)
}

/// The backward kernels over `x` (or over z when `act_slope > 0`, see
/// [`instance_norm_leaky_backward_from_output`]).
fn instance_norm_backward_launch(
    x: &Tensor,
    gamma: Option<&Tensor>,
    stats: &Tensor,
    g: &Tensor,
    param_grads: bool,
    act_slope: f32,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let op = "instance_norm_backward";
    if g.shape() != x.shape() {
        return Err(Error::shape(op, x.shape(), g.shape()));
    }
    let (n, s, c) = in_dims(op, x)?;
    let gpu = x.gpu();
    let gx = Tensor::uninit(gpu, op, x.shape())?;
    if n == 0 {
        let params = param_grads
            .then(|| Ok::<_, Error>((Tensor::zeros(gpu, &[c])?, Tensor::zeros(gpu, &[c])?)));
        return Ok((gx, params.transpose()?));
    }
    let block = block_rows(s);
    let n_blocks = s.div_ceil(block);
    let params = InstanceNormParams {
        batch: n as u32,
        spatial: s as u32,
        channels: c as u32,
        eps: 0.0,
        affine: gamma.is_some() as u32,
        block_rows: block as u32,
        n_blocks: n_blocks as u32,
        act_slope,
    };
    // partial [N, n_blocks, R, C] → sums [N, R, C]: (A, B) = (Σ_s g·x̂, Σ_s g) per (n, c), and
    // from the output (act_slope > 0) X = Σ_s x̂ to centre x̂ with (R = 3).
    let rows = if act_slope > 0.0 { 3 } else { 2 };
    let partial = Tensor::uninit(gpu, op, &[n, n_blocks, rows, c])?;
    gpu.dispatch(
        &IN_BACK_PARTIAL,
        &params,
        &[x.buffer(), stats.buffer(), g.buffer()],
        &[partial.buffer()],
        Grid::cover((n * n_blocks * c) as u64, 64),
    )?;
    let sums = sum_to_shape(&partial, &[n, 1, rows, c])?.reshape(&[n, rows, c])?;
    let gamma_buf = gamma.map(|t| t.buffer()).unwrap_or(x.buffer());
    gpu.dispatch(
        &IN_BACK_INPUT,
        &params,
        &[
            x.buffer(),
            stats.buffer(),
            g.buffer(),
            sums.buffer(),
            gamma_buf,
        ],
        &[gx.buffer()],
        Grid::cover(x.numel() as u64, 256),
    )?;
    if !param_grads {
        return Ok((gx, None));
    }
    let (ggamma, gbeta) = sum_rows_halves(&sums, n, c)?;
    Ok((gx, Some((ggamma, gbeta))))
}

/// InstanceNorm of a channels-last `[N, *spatial, C]` tensor: per (n, c), statistics over every
/// spatial position; `(x − μ)/sqrt(σ² + eps)·γ + β` with optional `[C]` affine (the CADS stem uses
/// none, eps 1e-5). Recorded for autograd.
pub fn instance_norm(x: &Tensor, affine: Option<(&Tensor, &Tensor)>, eps: f32) -> Result<Tensor> {
    let (y, stats) = instance_norm_raw(x, affine, eps)?;
    let xc = x.detach();
    let gamma = affine.map(|(g, _)| g.detach());
    let need_params = affine.is_some_and(|(g, b)| g.requires_grad() || b.requires_grad());
    let mut inputs = vec![x];
    if let Some((g, b)) = affine {
        inputs.extend([g, b]);
    }
    Ok(record(y, "instance_norm", &inputs, move |g| {
        let (gx, params) = instance_norm_backward_raw(&xc, gamma.as_ref(), &stats, g, need_params)?;
        let mut grads = vec![Some(gx)];
        if gamma.is_some() {
            let (gg, gb) = params.unzip();
            grads.extend([gg, gb]);
        }
        Ok(grads)
    }))
}

/// The smallest LeakyReLU slope from which [`instance_norm_leaky_relu`] without affine keeps
/// its output instead of its input: an f16 z = slope·y is normal for |y| ≥ 6.1e-5 / slope
/// (0.06 here), and below that its absolute error, ≤ 6e-8 / slope = 6e-5 in y, is far under
/// the normalised values' scale.
pub const MIN_SLOPE_FROM_OUTPUT: f32 = 1e-3;

/// `leaky_relu(instance_norm(x, affine, eps), slope)` as one recorded op: the LeakyReLU runs in
/// the normalisation's last pass (saves a pass over the activation forward,
/// docs/kernel-tuning.md, "InstanceNorm and LeakyReLU in one op").
///
/// What backward keeps: without affine and with slope ≥ [`MIN_SLOPE_FROM_OUTPUT`] (the stem
/// and the U-Net decoder, 0.01), only the output z and the statistics. z > 0 exactly where the
/// normalised y > 0, so y = LeakyReLU⁻¹(z) (z, or z / slope), and the norm's backward needs y
/// and rstd alone: x is not kept. z is what the next layer keeps anyway (in f32 the same
/// buffer; under autocast its f16 rounding, shared with the next conv, src/tensor/saved.rs), so
/// the op holds no activation of its own. y from z differs from (x − μ)·rstd by z / slope's
/// rounding (f32), or by z's f16 rounding under autocast (relative 2⁻¹¹ of y, after the mean
/// is out: no cancellation); the kernels centre the recovered y over each (n, c) so that
/// Σ_s ∂x stays 0, as it is exactly (a bias ahead of the norm gets no gradient).
/// With affine (y from z would divide by γ) or a smaller slope (0: z does not tell y where
/// y ≤ 0; tiny: z's f16 rounding would be subnormal for most negative y): x is
/// kept, with z for LeakyReLU' in f32; under autocast nothing else (y is recomputed from x and
/// the statistics), and the values and gradients are bit for bit the two ops'
/// (tests/instance_norm_leaky.rs). A negative or non-finite slope runs the two ops.
pub fn instance_norm_leaky_relu(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    slope: f32,
) -> Result<Tensor> {
    let op = "instance_norm_leaky_relu";
    if !(slope.is_finite() && slope >= 0.0) {
        return leaky_relu(&instance_norm(x, affine, eps)?, slope);
    }
    let (z, stats) = instance_norm_launch(x, affine, eps, Some(slope))?;
    if affine.is_none() && slope >= MIN_SLOPE_FROM_OUTPUT {
        let kept = Saved::keep_output_autocast(op, &z, &[x])?;
        return Ok(record(z, op, &[x], move |g| {
            let z = kept.value(op)?;
            Ok(vec![Some(instance_norm_leaky_backward_from_output(
                &z, &stats, g, slope,
            )?)])
        }));
    }
    let xc = x.detach();
    let kept_affine = affine.map(|(g, b)| (g.detach(), b.detach()));
    let need_params = affine.is_some_and(|(g, b)| g.requires_grad() || b.requires_grad());
    // z itself in f32 (no new bytes); nothing under autocast (y is recomputed in backward).
    let kept_z = (!x.gpu().mixed_precision()).then(|| z.detach());
    let mut inputs = vec![x];
    if let Some((g, b)) = affine {
        inputs.extend([g, b]);
    }
    Ok(record(z, op, &inputs, move |g| {
        let pair = kept_affine.as_ref().map(|(gm, bt)| (gm, bt));
        let sign_of_y = match &kept_z {
            Some(z) => z.clone(),
            None => instance_norm_reapply(&xc, &stats, pair)?,
        };
        let gy = leaky_relu_backward_raw(&sign_of_y, g, slope)?;
        drop(sign_of_y);
        let gamma = pair.map(|(gm, _)| gm);
        let (gx, params) = instance_norm_backward_raw(&xc, gamma, &stats, &gy, need_params)?;
        let mut grads = vec![Some(gx)];
        if gamma.is_some() {
            let (gg, gb) = params.unzip();
            grads.extend([gg, gb]);
        }
        Ok(grads)
    }))
}
