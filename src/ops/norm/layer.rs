//! LayerNorm over the last axis: the forward and backward launches and the recorded op.

use super::layer_kept::LayerNormKept;
use super::{
    block_rows, check_affine, finite_eps, row_grid, LayerNormParams, LAYER_NORM_SHORT_ROW,
    LN_BACK_PARAMS, LN_BACK_THREAD, LN_BACK_WG, LN_THREAD, LN_WG,
};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Grid;
use crate::ops::reduce::sum_rows_halves;
use crate::ops::softmax::{thread_per_row, RowKernel};
use crate::tensor::Tensor;

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
