//! Transposed 3D convolution whose kernel tiles the output without overlap (kernel = stride, no
//! padding, output padding or dilation; an anisotropic up-sampling such as PVT-UNet's [1, 2, 2]
//! level): one matmul and a shuffle, both recorded, so the backward is theirs.
//!
//! With Q = kD·kH·kW, every input voxel v = (n, i, j, l) writes the block
//!
//!   y[n, kD·i + a, kH·j + b, kW·l + e, co] = Σ_ci x[v, ci] · w[a, b, e, ci, co] (+ bias[co])
//!
//! so with W' = w permuted to [Ci, kD, kH, kW, Co] and flattened to [Ci, Q·Co], Y' = X · W' is
//! [voxels, Q·Co], and y is Y' with its axes [N·D, H, W, kD, kH, kW·Co] reordered to
//! [N·D, kD, H, kH, W, kW·Co] (rank 6: N with D and kW with Co stay adjacent). Backward through
//! the tape: dX = G'·W'ᵀ and dW' = Xᵀ·G' on the matmul kernels (the split-K path for the long
//! voxel axis), G' being the output gradient shuffled back. Under autocast the product is
//! [`super::linear_mixed`], the linear layer's (f16 operands, f32 accumulation, the f16 input
//! kept for backward), as every other matmul there.
//!
//! The k2s2 case keeps its own kernels (src/ops/conv_transpose3d.rs). Reference:
//! src/reference/conv_transpose3d.rs.

use super::config::ConvTranspose3dConfig;
use crate::error::Result;
use crate::tensor::Tensor;

/// `conv_transpose3d(x, w) + bias` for a config with
/// [`ConvTranspose3dConfig::tiles_without_overlap`]; shapes already validated by the caller:
/// x `[n, d, h, wd, ci]`, w `[kD, kH, kW, ci, co]`, bias `[co]`.
pub(super) fn forward(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    cfg: &ConvTranspose3dConfig,
    [n, d, h, wd, ci]: [usize; 5],
    co: usize,
) -> Result<Tensor> {
    let [kd, kh, kw] = cfg.kernel;
    let q = kd * kh * kw;
    let w_cols = w.permute(&[3, 0, 1, 2, 4])?.reshape(&[ci, q * co])?;
    let x_rows = x.reshape(&[n * d * h * wd, ci])?;
    let y_cols = if x.gpu().mixed_precision() {
        super::linear_mixed(&x_rows, &w_cols, None)?
    } else {
        super::matmul(&x_rows, &w_cols, false, false)?
    };
    let y = y_cols
        .reshape(&[n * d, h, wd, kd, kh, kw * co])?
        .permute(&[0, 3, 1, 4, 2, 5])?
        .reshape(&[n, kd * d, kh * h, kw * wd, co])?;
    match bias {
        Some(b) => super::add(&y, b),
        None => Ok(y),
    }
}
