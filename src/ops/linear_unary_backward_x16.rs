//! The input gradient through an activation and a linear in one pass on f16 activations (the MLP
//! tail's backward under mixed precision, src/ops/dw_mlp_mixed.rs):
//!
//!   dh = f16( (g16 · f16(W)ᵀ) ⊙ u'(h16) )
//!
//! for y = u(h)·W + b with W `[N, K]` the f32 master weight, g16 `[rows, K]` the rounded upstream
//! gradient and h16 `[rows, N]` the kept pre-activation. Where the f32 path holds ∂a and writes
//! ∂h over it (one f32 tensor of the hidden width), this writes one f16 tensor. Kernel:
//! shaders/linear_unary_backward_x16.wgsl (no `enable f16`: it runs on every adapter). Reference:
//! `reference::dw_mlp::linear_unary_backward_half`.

use super::config::UnaryOp;
use crate::error::{Error, Result};
use crate::gpu::{Grid, KernelSpec};
use crate::tensor::{cast_unrecorded, DType, Tensor};

crate::gpu::shader_params! {
    /// Mirrors `LinearUnaryParams` in shaders/linear_unary_backward_x16.wgsl.
    struct LinearUnaryParams {
        rows: u32,
        k: u32,
        n: u32,
        op: u32,
        alpha: f32,
        _pad: [u32; 3],
    }
}

const SOURCE: &str = concat!(
    include_str!("../../shaders/linear_unary_backward_x16.wgsl"),
    include_str!("../../shaders/unary_math.wgsl"),
    include_str!("../../shaders/f16_bits.wgsl")
);

const KERNEL: KernelSpec = KernelSpec {
    shader: "linear_unary_backward_x16",
    source: SOURCE,
    entry: "linear_unary_backward_x16_in_place",
    inputs: 2,
    outputs: 1,
    params: LinearUnaryParams::LAYOUT,
    constants: &[],
};

pub(crate) const KERNELS: &[KernelSpec] = &[KERNEL];

/// Rows per workgroup and column groups of 4 per workgroup (the shader's constants).
const ROWS: usize = 8;
const GROUPS: usize = 64;

/// `f16((g16 · f16(w)ᵀ) ⊙ op'(h16))`, f16 `[rows, N]`, written over h16 (which the caller owns
/// and gives up); unrecorded. g16 `[rows, K]` and h16 `[rows, N]` f16, w `[N, K]` f32; K even,
/// N % 4 == 0.
pub(crate) fn linear_unary_backward_half_in_place(
    op: UnaryOp,
    g16: &Tensor,
    w: &Tensor,
    h16: Tensor,
) -> Result<Tensor> {
    let name = "linear_unary_backward (f16)";
    g16.expect_dtype(name, DType::F16)?;
    h16.expect_dtype(name, DType::F16)?;
    w.expect_dtype(name, DType::F32)?;
    let (&[rows, k], &[n, kw], &[hr, hn]) = (g16.shape(), w.shape(), h16.shape()) else {
        return Err(Error::invalid(
            name,
            "g [rows, K], w [N, K], h [rows, N]",
            format!("{:?}, {:?}, {:?}", g16.shape(), w.shape(), h16.shape()),
        ));
    };
    if kw != k || hr != rows || hn != n || k % 2 != 0 || n % 4 != 0 || k == 0 {
        return Err(Error::invalid(
            name,
            "g [rows, K], w [N, K], h [rows, N] with K even and N % 4 == 0",
            format!("{:?}, {:?}, {:?}", g16.shape(), w.shape(), h16.shape()),
        ));
    }
    g16.check_same_gpu(name, w)?;
    g16.check_same_gpu(name, &h16)?;
    let gpu = g16.gpu();
    if rows == 0 || n == 0 {
        return Ok(h16);
    }
    // f16(W)ᵀ, [K, N]: the weight is small next to the activations.
    let wt16 = cast_unrecorded(name, &w.transpose_last2()?, DType::F16)?;
    let (code, alpha) = op.code();
    let params = LinearUnaryParams {
        rows: rows as u32,
        k: k as u32,
        n: n as u32,
        op: code,
        alpha,
        _pad: [0; 3],
    };
    let blocks = rows.div_ceil(ROWS);
    let z = blocks.div_ceil(65_535);
    let grid = Grid::Xyz(
        (n / 4).div_ceil(GROUPS) as u32,
        blocks.div_ceil(z) as u32,
        z as u32,
    );
    gpu.dispatch_f16_aware(
        &KERNEL,
        &params,
        &[g16.buffer(), wt16.buffer()],
        &[h16.buffer()],
        grid,
    )?;
    Ok(h16)
}
