//! LayerNorm (last axis) and InstanceNorm (per channel over space, channels-last).
//! Kernels: shaders/layer_norm.wgsl, shaders/layer_norm_backward.wgsl, shaders/instance_norm.wgsl,
//! shaders/instance_norm_backward.wgsl. Reference: src/reference/norm.rs.
//!
//! Both save (μ, rstd) in the forward pass and recompute x̂ = (x − μ)·rstd in the backward pass.
//! Every reduction over many rows (γ/β gradients, InstanceNorm statistics over D·H·W) is two-level
//! — per-block partials, then a sum over blocks — so no float atomics are needed and the result is
//! deterministic.

use super::elementwise::{leaky_relu, leaky_relu_backward_raw};
use super::layer_norm_kept::LayerNormKept;
use super::reduce::{sum_rows_halves, sum_to_shape};
use super::softmax::{thread_per_row, RowKernel};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec, ParamsLayout};
use crate::tensor::{Saved, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `LayerNormParams` in shaders/layer_norm.wgsl and shaders/layer_norm_backward.wgsl.
    struct LayerNormParams {
        rows: u32,
        cols: u32,
        eps: f32,
        affine: u32,
        block_rows: u32,
        n_blocks: u32,
        _pad: [u32; 2],
    }
}

crate::gpu::shader_params! {
    /// Mirrors `InstanceNormParams` in shaders/instance_norm.wgsl and instance_norm_backward.wgsl.
    struct InstanceNormParams {
        batch: u32,
        spatial: u32,
        channels: u32,
        eps: f32,
        affine: u32,
        block_rows: u32,
        n_blocks: u32,
        /// LeakyReLU's slope in `instance_norm_apply_leaky`; in the backward kernels, > 0 when
        /// they read the fused op's output z instead of x (`normalized_and_grad`); else unused.
        act_slope: f32,
    }
}

const LN: &str = include_str!("../../shaders/layer_norm.wgsl");
const LN_BACK: &str = include_str!("../../shaders/layer_norm_backward.wgsl");
const IN: &str = include_str!("../../shaders/instance_norm.wgsl");
const IN_BACK: &str = include_str!("../../shaders/instance_norm_backward.wgsl");

const fn spec(
    shader: &'static str,
    source: &'static str,
    entry: &'static str,
    inputs: u32,
    outputs: u32,
    params: ParamsLayout,
) -> KernelSpec {
    KernelSpec {
        shader,
        source,
        entry,
        inputs,
        outputs,
        params,
        constants: &[],
    }
}
const LN_LAYOUT: ParamsLayout = LayerNormParams::LAYOUT;
const IN_LAYOUT: ParamsLayout = InstanceNormParams::LAYOUT;

const LN_WG: KernelSpec = spec("layer_norm", LN, "layer_norm_wg", 3, 2, LN_LAYOUT);
const LN_THREAD: KernelSpec = spec("layer_norm", LN, "layer_norm_thread", 3, 2, LN_LAYOUT);
const LN_BACK_WG: KernelSpec = spec(
    "layer_norm_backward",
    LN_BACK,
    "layer_norm_backward_input_wg",
    4,
    1,
    LN_LAYOUT,
);
const LN_BACK_THREAD: KernelSpec = spec(
    "layer_norm_backward",
    LN_BACK,
    "layer_norm_backward_input_thread",
    4,
    1,
    LN_LAYOUT,
);
const LN_BACK_PARAMS: KernelSpec = spec(
    "layer_norm_backward",
    LN_BACK,
    "layer_norm_backward_params",
    3,
    1,
    LN_LAYOUT,
);
const IN_PARTIAL: KernelSpec = spec(
    "instance_norm",
    IN,
    "instance_norm_partial",
    1,
    1,
    IN_LAYOUT,
);
const IN_FINALIZE: KernelSpec = spec(
    "instance_norm",
    IN,
    "instance_norm_finalize",
    1,
    1,
    IN_LAYOUT,
);
const IN_APPLY: KernelSpec = spec("instance_norm", IN, "instance_norm_apply", 4, 1, IN_LAYOUT);
const IN_APPLY_LEAKY: KernelSpec = spec(
    "instance_norm",
    IN,
    "instance_norm_apply_leaky",
    4,
    1,
    IN_LAYOUT,
);
const IN_BACK_PARTIAL: KernelSpec = spec(
    "instance_norm_backward",
    IN_BACK,
    "instance_norm_backward_partial",
    3,
    1,
    IN_LAYOUT,
);
const IN_BACK_INPUT: KernelSpec = spec(
    "instance_norm_backward",
    IN_BACK,
    "instance_norm_backward_input",
    5,
    1,
    IN_LAYOUT,
);

pub(crate) const KERNELS: &[KernelSpec] = &[
    LN_WG,
    LN_THREAD,
    LN_BACK_WG,
    LN_BACK_THREAD,
    LN_BACK_PARAMS,
    IN_PARTIAL,
    IN_FINALIZE,
    IN_APPLY,
    IN_APPLY_LEAKY,
    IN_BACK_PARTIAL,
    IN_BACK_INPUT,
];

/// On a GPU adapter, LayerNorm rows at most this long run one invocation per row (PVT widths
/// are 64..512); see [`thread_per_row`].
pub const LAYER_NORM_SHORT_ROW: usize = 256;

/// Rows per block of a two-level reduction over `rows`: about √rows, so both levels have similar
/// work and the first level has enough invocations to fill the device.
fn block_rows(rows: usize) -> usize {
    ((rows as f64).sqrt().ceil() as usize).max(1)
}

/// Check an optional (γ, β) pair against `channels`; returns whether affine is on.
fn check_affine(
    op: &'static str,
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    channels: usize,
) -> Result<bool> {
    let Some((gamma, beta)) = affine else {
        return Ok(false);
    };
    for t in [gamma, beta] {
        x.check_same_gpu(op, t)?;
        if t.shape() != [channels] {
            return Err(Error::shape(op, [channels], t.shape()));
        }
    }
    Ok(true)
}

fn finite_eps(op: &'static str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid(op, "a finite eps >= 0", eps));
    }
    Ok(())
}

fn row_grid(rows: usize, thread: bool) -> Grid {
    if thread {
        Grid::cover(rows as u64, 64)
    } else {
        Grid::Linear(rows as u64)
    }
}

fn ln_dims(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    if x.rank() == 0 {
        return Err(Error::invalid(op, "a tensor of rank >= 1", "rank 0"));
    }
    let cols = x.shape()[x.rank() - 1];
    if cols == 0 {
        return Err(Error::invalid(op, "a non-empty last axis", "0 channels"));
    }
    Ok((x.numel() / cols, cols))
}

/// Forward launch (unrecorded): returns y and the saved stats `[rows, 2]` = (μ, rstd).
pub fn layer_norm_raw(
    x: &Tensor,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    variant: RowKernel,
) -> Result<(Tensor, Tensor)> {
    let op = "layer_norm";
    finite_eps(op, eps)?;
    let (rows, cols) = ln_dims(op, x)?;
    let has_affine = check_affine(op, x, affine, cols)?;
    let y = Tensor::uninit(x.gpu(), op, x.shape())?;
    let stats = Tensor::uninit(x.gpu(), op, &[rows, 2])?;
    if rows == 0 {
        return Ok((y, stats));
    }
    let params = LayerNormParams {
        rows: rows as u32,
        cols: cols as u32,
        eps,
        affine: has_affine as u32,
        block_rows: 0,
        n_blocks: 0,
        _pad: [0; 2],
    };
    let (gamma, beta) = affine
        .map(|(g, b)| (g.buffer(), b.buffer()))
        .unwrap_or((x.buffer(), x.buffer()));
    let thread = thread_per_row(x.gpu(), variant, cols, LAYER_NORM_SHORT_ROW);
    let spec = if thread { &LN_THREAD } else { &LN_WG };
    x.gpu().dispatch(
        spec,
        &params,
        &[x.buffer(), gamma, beta],
        &[y.buffer(), stats.buffer()],
        row_grid(rows, thread),
    )?;
    Ok((y, stats))
}

/// Backward launches (unrecorded): gx, and (gγ, gβ) when `param_grads`.
pub fn layer_norm_backward_raw(
    x: &Tensor,
    gamma: Option<&Tensor>,
    stats: &Tensor,
    g: &Tensor,
    param_grads: bool,
    variant: RowKernel,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let op = "layer_norm_backward";
    if g.shape() != x.shape() {
        return Err(Error::shape(op, x.shape(), g.shape()));
    }
    let (rows, cols) = ln_dims(op, x)?;
    let gx = Tensor::uninit(x.gpu(), op, x.shape())?;
    if rows == 0 {
        let params = param_grads.then(|| {
            Ok::<_, Error>((
                Tensor::zeros(x.gpu(), &[cols])?,
                Tensor::zeros(x.gpu(), &[cols])?,
            ))
        });
        return Ok((gx, params.transpose()?));
    }
    let block = block_rows(rows);
    let n_blocks = rows.div_ceil(block);
    let params = LayerNormParams {
        rows: rows as u32,
        cols: cols as u32,
        eps: 0.0,
        affine: gamma.is_some() as u32,
        block_rows: block as u32,
        n_blocks: n_blocks as u32,
        _pad: [0; 2],
    };
    let gamma_buf = gamma.map(|t| t.buffer()).unwrap_or(x.buffer());
    let thread = thread_per_row(x.gpu(), variant, cols, LAYER_NORM_SHORT_ROW);
    let spec = if thread { &LN_BACK_THREAD } else { &LN_BACK_WG };
    let gpu = x.gpu();
    gpu.dispatch(
        spec,
        &params,
        &[x.buffer(), stats.buffer(), g.buffer(), gamma_buf],
        &[gx.buffer()],
        row_grid(rows, thread),
    )?;
    if !param_grads {
        return Ok((gx, None));
    }
    // partial [n_blocks, 2, C] → sum over blocks → [1, 2, C]: row 0 is gγ, row 1 is gβ.
    let partial = Tensor::uninit(gpu, op, &[n_blocks, 2, cols])?;
    gpu.dispatch(
        &LN_BACK_PARAMS,
        &params,
        &[x.buffer(), stats.buffer(), g.buffer()],
        &[partial.buffer()],
        Grid::cover((n_blocks * cols) as u64, 64),
    )?;
    let (ggamma, gbeta) = sum_rows_halves(&partial, n_blocks, cols)?;
    Ok((gx, Some((ggamma, gbeta))))
}

/// LayerNorm over the last axis: `(x − μ)/sqrt(σ² + eps)·γ + β`, with `affine = Some((γ, β))`
/// of shape `[C]` or none. CADS uses eps 1e-6 in blocks and stage norms, 1e-5 in patch-embed and
/// SR norms. Recorded for autograd (gradients to x, γ and β).
pub fn layer_norm(x: &Tensor, affine: Option<(&Tensor, &Tensor)>, eps: f32) -> Result<Tensor> {
    let (y, stats) = layer_norm_raw(x, affine, eps, RowKernel::Auto)?;
    let (rows, cols) = ln_dims("layer_norm", x)?;
    let kept = LayerNormKept::new(x, stats, rows, cols)?;
    let x_shape = x.shape().to_vec();
    let gamma = affine.map(|(g, _)| g.detach());
    let need_params = affine.is_some_and(|(g, b)| g.requires_grad() || b.requires_grad());
    let mut inputs = vec![x];
    if let Some((g, b)) = affine {
        inputs.extend([g, b]);
    }
    Ok(record(y, "layer_norm", &inputs, move |g| {
        let (xk, stats) = kept.input_and_stats(&x_shape)?;
        let (gx, params) =
            layer_norm_backward_raw(&xk, gamma.as_ref(), &stats, g, need_params, RowKernel::Auto)?;
        let mut grads = vec![Some(gx)];
        if gamma.is_some() {
            let (gg, gb) = params.unzip();
            grads.extend([gg, gb]);
        }
        Ok(grads)
    }))
}

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
