//! Losses and L2 normalisation: cross-entropy with soft targets (the DINO loss), cross-entropy
//! with integer labels (as one-hot soft targets), mean-squared error, soft Dice, and `l2_normalize`.
//! Kernels: shaders/loss.wgsl, shaders/l2_normalize.wgsl. Reference: src/reference/loss.rs.

use super::elementwise::{sub, unary, UnaryOp};
use super::l2_normalize_wide;
use super::reduce::mean_all;
use super::softmax::{thread_per_row, RowKernel, SHORT_ROW};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec, ParamsLayout};
use crate::tensor::{normalize_axis, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `LossParams` in shaders/loss.wgsl.
    struct LossParams {
        rows: u32,
        cols: u32,
        mode: u32,
        _pad0: u32,
    }
}

crate::gpu::shader_params! {
    /// Mirrors `L2Params` in shaders/l2_normalize.wgsl.
    pub(crate) struct L2Params {
        pub(crate) outer: u32,
        pub(crate) axis_len: u32,
        pub(crate) inner: u32,
        pub(crate) eps: f32,
    }
}

const LOSS: &str = include_str!("../../shaders/loss.wgsl");
const L2: &str = include_str!("../../shaders/l2_normalize.wgsl");

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
const LOSS_LAYOUT: ParamsLayout = LossParams::LAYOUT;
pub(crate) const L2_LAYOUT: ParamsLayout = L2Params::LAYOUT;

const CE_ROWS_WG: KernelSpec = spec("loss", LOSS, "cross_entropy_rows_wg", 2, 2, LOSS_LAYOUT);
const CE_ROWS_THREAD: KernelSpec =
    spec("loss", LOSS, "cross_entropy_rows_thread", 2, 2, LOSS_LAYOUT);
const CE_BACKWARD: KernelSpec = spec("loss", LOSS, "cross_entropy_backward", 4, 1, LOSS_LAYOUT);
const L2_FORWARD: KernelSpec = spec("l2_normalize", L2, "l2_normalize_forward", 1, 2, L2_LAYOUT);
const L2_BACKWARD: KernelSpec = spec("l2_normalize", L2, "l2_normalize_backward", 3, 1, L2_LAYOUT);
/// Four adjacent lines per invocation (the inner extent a multiple of 4).
const L2_FORWARD4: KernelSpec = spec("l2_normalize", L2, "l2_normalize_forward4", 1, 2, L2_LAYOUT);
const L2_BACKWARD4: KernelSpec = spec(
    "l2_normalize",
    L2,
    "l2_normalize_backward4",
    3,
    1,
    L2_LAYOUT,
);

pub(crate) const KERNELS: &[KernelSpec] = &[
    CE_ROWS_WG,
    CE_ROWS_THREAD,
    CE_BACKWARD,
    L2_FORWARD,
    L2_BACKWARD,
    L2_FORWARD4,
    L2_BACKWARD4,
];

/// Per-row launch (unrecorded): returns the row losses `[rows]` and rowstats `[rows, 2]` =
/// (logsumexp of the logits, Σ targets).
pub fn soft_cross_entropy_raw(
    targets: &Tensor,
    logits: &Tensor,
    variant: RowKernel,
) -> Result<(Tensor, Tensor)> {
    let op = "soft_cross_entropy";
    targets.check_same_gpu(op, logits)?;
    if targets.shape() != logits.shape() {
        return Err(Error::shape(op, logits.shape(), targets.shape()));
    }
    if logits.rank() == 0 || logits.shape()[logits.rank() - 1] == 0 {
        return Err(Error::invalid(
            op,
            "[.., K] logits with K >= 1 classes",
            format!("shape {:?}", logits.shape()),
        ));
    }
    let cols = logits.shape()[logits.rank() - 1];
    let rows = logits.numel() / cols;
    let gpu = logits.gpu();
    let loss = Tensor::uninit(gpu, op, &[rows])?;
    let rowstats = Tensor::uninit(gpu, op, &[rows, 2])?;
    if rows == 0 {
        return Ok((loss, rowstats));
    }
    let params = LossParams {
        rows: rows as u32,
        cols: cols as u32,
        mode: 0,
        _pad0: 0,
    };
    let thread = thread_per_row(gpu, variant, cols, SHORT_ROW);
    let (spec, grid) = if thread {
        (&CE_ROWS_THREAD, Grid::cover(rows as u64, 64))
    } else {
        (&CE_ROWS_WG, Grid::Linear(rows as u64))
    };
    gpu.dispatch(
        spec,
        &params,
        &[targets.buffer(), logits.buffer()],
        &[loss.buffer(), rowstats.buffer()],
        grid,
    )?;
    Ok((loss, rowstats))
}

/// Backward launch (unrecorded): gradient to the logits (`to_targets = false`) or to the targets.
fn soft_cross_entropy_backward_raw(
    targets: &Tensor,
    logits: &Tensor,
    rowstats: &Tensor,
    g: &Tensor,
    to_targets: bool,
) -> Result<Tensor> {
    let op = "soft_cross_entropy_backward";
    let cols = logits.shape()[logits.rank() - 1];
    let rows = logits.numel() / cols;
    if g.numel() != rows {
        return Err(Error::shape(op, [rows], g.shape()));
    }
    let out = Tensor::uninit(logits.gpu(), op, logits.shape())?;
    if rows == 0 {
        return Ok(out);
    }
    let params = LossParams {
        rows: rows as u32,
        cols: cols as u32,
        mode: to_targets as u32,
        _pad0: 0,
    };
    logits.gpu().dispatch(
        &CE_BACKWARD,
        &params,
        &[
            targets.buffer(),
            logits.buffer(),
            rowstats.buffer(),
            g.buffer(),
        ],
        &[out.buffer()],
        Grid::cover(logits.numel() as u64, 256),
    )?;
    Ok(out)
}

/// Per-row soft cross-entropy `H(p, q)[b] = −Σ_k p[b, k]·log_softmax(s)[b, k]`, shape = logits'
/// shape without its last axis (`[1]` for a single row). `targets` p and `logits` s have the same
/// shape `[.., K]`; log_softmax is taken inside (stable logsumexp). Recorded: the gradient to s is
/// `g·(softmax(s)·Σp − p)`, to p (if it requires grad) `−g·log_softmax(s)`.
pub fn soft_cross_entropy_rows(targets: &Tensor, logits: &Tensor) -> Result<Tensor> {
    let (loss, rowstats) = soft_cross_entropy_raw(targets, logits, RowKernel::Auto)?;
    let rank = logits.rank();
    let out_shape: Vec<usize> = if rank == 1 {
        vec![1]
    } else {
        logits.shape()[..rank - 1].to_vec()
    };
    let loss = loss.reshape(&out_shape)?;
    let (pc, sc) = (targets.detach(), logits.detach());
    let (need_p, need_s) = (targets.requires_grad(), logits.requires_grad());
    Ok(record(
        loss,
        "soft_cross_entropy",
        &[targets, logits],
        move |g| {
            let gp = if need_p {
                Some(soft_cross_entropy_backward_raw(
                    &pc, &sc, &rowstats, g, true,
                )?)
            } else {
                None
            };
            let gs = if need_s {
                Some(soft_cross_entropy_backward_raw(
                    &pc, &sc, &rowstats, g, false,
                )?)
            } else {
                None
            };
            Ok(vec![gp, gs])
        },
    ))
}

/// Soft cross-entropy averaged over rows: `mean_b −Σ_k p[b, k]·log_softmax(s)[b, k]`, shape `[1]`.
/// The DINO loss: p = teacher probabilities (detached), s = student logits / τs.
pub fn soft_cross_entropy(targets: &Tensor, logits: &Tensor) -> Result<Tensor> {
    mean_all(&soft_cross_entropy_rows(targets, logits)?)
}

/// Cross-entropy with integer class labels (one per row of `logits [.., K]`), mean over rows,
/// computed as soft cross-entropy with one-hot targets.
pub fn cross_entropy_labels(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let op = "cross_entropy_labels";
    if logits.rank() == 0 || logits.shape()[logits.rank() - 1] == 0 {
        return Err(Error::invalid(
            op,
            "[.., K] logits with K >= 1 classes",
            format!("shape {:?}", logits.shape()),
        ));
    }
    let cols = logits.shape()[logits.rank() - 1];
    let rows = logits.numel() / cols;
    if labels.len() != rows {
        return Err(Error::shape(
            op,
            format!("{rows} labels"),
            format!("{} labels", labels.len()),
        ));
    }
    let mut one_hot = vec![0.0f32; rows * cols];
    for (r, &l) in labels.iter().enumerate() {
        if l >= cols {
            return Err(Error::invalid(
                op,
                format!("labels < {cols}"),
                format!("label {l} at row {r}"),
            ));
        }
        one_hot[r * cols + l] = 1.0;
    }
    let targets = Tensor::from_slice(logits.gpu(), &one_hot, logits.shape())?;
    soft_cross_entropy(&targets, logits)
}

/// Mean-squared error over all elements, `mean((a − b)²)`, shape `[1]`. `a` and `b` must have the
/// same shape (no broadcasting, so a mis-shaped target is an error, not a silent broadcast).
/// Composed of the recorded elementwise and reduce kernels, which carry its backward
/// (`ga = 2(a − b)/n`, `gb = −ga`).
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape("mse", a.shape(), b.shape()));
    }
    if a.numel() == 0 {
        return Err(Error::invalid("mse", "a non-empty tensor", "0 elements"));
    }
    mean_all(&unary(UnaryOp::Square, &sub(a, b)?)?)
}

/// Soft Dice loss of probabilities `p` against a target `t` in [0, 1] (same shape, no
/// broadcasting), pooled over every element, shape `[1]`:
///   L = 1 − (2·Σ p·t + s) / (Σ p + Σ t + s),
/// with smoothing s ≥ 0 (s > 0 keeps L defined when both sums are 0; nnU-Net uses 1e-5).
/// Composed of recorded elementwise and reduce kernels, which carry its backward: with
/// I = Σ p·t and U = Σ p + Σ t + s, ∂L/∂p_i = −(2·t_i·U − (2·I + s)) / U².
pub fn soft_dice_loss(p: &Tensor, t: &Tensor, smooth: f32) -> Result<Tensor> {
    let op = "soft_dice_loss";
    if p.shape() != t.shape() {
        return Err(Error::shape(op, p.shape(), t.shape()));
    }
    if p.numel() == 0 || !(smooth.is_finite() && smooth >= 0.0) {
        return Err(Error::invalid(
            op,
            "non-empty tensors and a finite smoothing >= 0",
            format!("{} elements, smoothing {smooth}", p.numel()),
        ));
    }
    use super::elementwise::{add, add_scalar, div, mul, scale};
    use super::reduce::sum_all;
    let intersection = sum_all(&mul(p, t)?)?; // [1]
    let union = add_scalar(&add(&sum_all(p)?, &sum_all(t)?)?, smooth)?; // [1]
    let ratio = div(&add_scalar(&scale(&intersection, 2.0)?, smooth)?, &union)?;
    add_scalar(&scale(&ratio, -1.0)?, 1.0)
}

/// Split `shape` around `axis` into (outer, axis extent, inner).
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// `x / max(‖x‖₂, eps)` along `axis` (torch `F.normalize(x, p=2, dim=axis, eps)`; its default
/// eps is 1e-12). Recorded for autograd.
pub fn l2_normalize(x: &Tensor, axis: isize, eps: f32) -> Result<Tensor> {
    let op = "l2_normalize";
    let a = normalize_axis(op, axis, x.rank())?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::invalid(op, "a finite eps > 0", eps));
    }
    let (outer, axis_len, inner) = around(x.shape(), a);
    let gpu = x.gpu();
    let y = Tensor::uninit(gpu, op, x.shape())?;
    let norms = Tensor::uninit(gpu, op, &[outer * inner])?;
    let params = L2Params {
        outer: outer as u32,
        axis_len: axis_len as u32,
        inner: inner as u32,
        eps,
    };
    if x.numel() == 0 {
        return Ok(y);
    }
    // Many adjacent lines: the wide kernels (l2_normalize_wide.rs); else four lines per
    // invocation where they are adjacent in fours, one otherwise.
    let wide = l2_normalize_wide::fits(outer, inner);
    let (forward, backward, lines) = if inner.is_multiple_of(4) {
        (&L2_FORWARD4, &L2_BACKWARD4, outer * inner / 4)
    } else {
        (&L2_FORWARD, &L2_BACKWARD, outer * inner)
    };
    if wide {
        l2_normalize_wide::forward(gpu, &params, x, &y, &norms)?;
    } else {
        gpu.dispatch(
            forward,
            &params,
            &[x.buffer()],
            &[y.buffer(), norms.buffer()],
            Grid::cover(lines as u64, 64),
        )?;
    }
    let xc = x.detach();
    Ok(record(y, op, &[x], move |g| {
        if g.shape() != xc.shape() {
            return Err(Error::shape("l2_normalize_backward", xc.shape(), g.shape()));
        }
        let gx = Tensor::uninit(g.gpu(), "l2_normalize_backward", xc.shape())?;
        if wide {
            l2_normalize_wide::backward(g.gpu(), &params, &xc, &norms, g, &gx)?;
        } else {
            g.gpu().dispatch(
                backward,
                &params,
                &[xc.buffer(), norms.buffer(), g.buffer()],
                &[gx.buffer()],
                Grid::cover(lines as u64, 64),
            )?;
        }
        Ok(vec![Some(gx)])
    }))
}
