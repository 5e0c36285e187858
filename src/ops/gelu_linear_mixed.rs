//! `linear(gelu(h), w, bias)` under mixed precision, keeping only the f16 rounding of `h`: the
//! MLP tail of every PVTv2 block (fc1 → depthwise conv → GELU → fc2) under autocast.
//!
//! As two ops under autocast the tape keeps GELU's input and fc2's input, each an f16 tensor of
//! the MLP's hidden width (the largest activations of a block, mlp ratio 8 in stages 1 and 2),
//! and GELU's backward widens its copy to f32. This op keeps h16 alone and makes GELU's f16
//! output from it again in backward:
//!
//!   forward:   h16 = f16(h);  a16 = f16(GELU(h16));  y = a16 · f16(w) + bias   (f32 sums, f32 y)
//!   backward:  a16 again from h16;  ∂w = a16ᵀ g16;  ∂bias = Σ_rows g;  ∂a = g16 · f16(w)ᵀ;
//!              ∂h = ∂a · GELU'(h16), written over ∂a                        (f32 gradients)
//!
//! with g16 = f16(∂L/∂y). GELU runs on the rounded input, so the forward and the backward see
//! the same a16 bit for bit (the product of PyTorch's AMP, where the depthwise conv's output,
//! GELU's input, is f16 already). The gradients go straight through the roundings, as
//! [`crate::ops::linear_mixed`]'s do. h's f16 rounding is the one other consumers of `h` keep
//! ([`crate::tensor`]'s shared rounding). Kernels: src/ops/unary_f16.rs and the f16 matmuls;
//! reference: src/reference/gelu_linear.rs (`gelu_linear_mixed`).

use super::matmul::{linear_dims, linear_grads, LinearDims};
use super::matmul_f16::{matmul_f16_launch, matmul_f16_launch_biased, MatmulF16Kernel};
use super::unary_f16::{unary_backward_half_in_place, unary_half_raw};
use super::UnaryOp;
use crate::autograd::record;
use crate::error::Result;
use crate::tensor::{cast_unrecorded, half_rounding, DType, Tensor};

/// `linear(gelu(h), w, bias)` in mixed precision (see the module docs): h `[..., Cin]` f32 or
/// f16, w `[Cin, Cout]` f32 (the master weight), bias `[Cout]` f32; output `[..., Cout]` f32.
/// On a device without `SHADER_F16` the same values from f32 kernels (slower).
pub fn gelu_linear_mixed(h: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let op = "gelu_linear_mixed";
    let LinearDims {
        rows,
        cin,
        cout,
        out_shape,
    } = linear_dims(op, "h", h, w, bias)?;
    let kernel = MatmulF16Kernel::chosen(h.gpu())?;

    let h16 = half_rounding(op, h)?.reshape(&[rows, cin])?;
    let a16 = unary_half_raw(UnaryOp::Gelu, &h16)?;
    let w16 = cast_unrecorded(op, w, DType::F16)?;
    let y = matmul_f16_launch_biased(&a16, &w16, false, false, kernel, bias)?;
    drop((a16, w16));
    let y = y.reshape(&out_shape)?;

    let need = (h.requires_grad(), w.requires_grad());
    // ∂h reads h16 and w, ∂w reads h16 (for a16): keep what the wanted gradients read.
    let h_kept = (need.0 || need.1).then_some(h16);
    let w_kept = need.0.then(|| w.detach());
    let (h_shape, h_dtype) = (h.shape().to_vec(), h.dtype());
    let bias_wanted = bias.map(|b| b.requires_grad());
    let mut inputs = vec![h, w];
    inputs.extend(bias);
    Ok(record(y, op, &inputs, move |g| {
        let back = "gelu_linear_mixed backward";
        let g_rows = g.reshape(&[rows, cout])?;
        let g16 = cast_unrecorded(back, &g_rows, DType::F16)?;
        let mut gw = None;
        let mut gh = None;
        if let Some(h16) = &h_kept {
            if need.1 {
                let a16 = unary_half_raw(UnaryOp::Gelu, h16)?;
                gw = Some(matmul_f16_launch(&a16, &g16, true, false, kernel)?);
            }
            if let Some(w) = &w_kept {
                let w16 = cast_unrecorded(back, w, DType::F16)?;
                let ga = matmul_f16_launch(&g16, &w16, false, true, kernel)?;
                drop(w16);
                // ∂h over ∂a (this closure's own): one hidden-width f32 tensor, not two.
                let dh = unary_backward_half_in_place(UnaryOp::Gelu, h16, ga)?.reshape(&h_shape)?;
                gh = Some(match h_dtype {
                    DType::F32 => dh,
                    dtype => cast_unrecorded(back, &dh, dtype)?,
                });
            }
        }
        linear_grads(gh, gw, bias_wanted, &g_rows)
    }))
}
