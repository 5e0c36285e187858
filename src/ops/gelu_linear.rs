//! `linear(gelu(h), w, bias)` as one recorded op that keeps `h` alone (the MLP tail of every
//! PVTv2 block: fc1 → depthwise conv → GELU → fc2).
//!
//! Why: as two ops the tape keeps both GELU's input h (for GELU') and its output a = GELU(h)
//! (fc2's input, for fc2's weight gradient), two tensors of the MLP's hidden width, the largest
//! activations of a block (mlp ratio 8 in stages 1 and 2). a is a function of h, so this op keeps
//! h and computes a again in backward: one elementwise pass per block for a hidden-width tensor
//! less per block alive from the forward to the backward.
//!
//! Forward: a = GELU(h) (a transient), y = a · w + bias. Backward, with g = ∂L/∂y:
//!   a = GELU(h) again;  ∂w = aᵀ g;  ∂bias = Σ_rows g;  ∂a = g wᵀ;  ∂h = ∂a · GELU'(h), written
//!   over ∂a.
//! Every launch is the one the two ops make, so values and gradients are theirs bit for bit.
//!
//! f32 only. Under autocast [`crate::nn::Linear::forward_gelu`] runs
//! [`crate::ops::gelu_linear_mixed`], which keeps h's f16 rounding alone the same way (an f16
//! form of this op that widened h and made GELU(h) in f32 had raised the encoder's amp peak at
//! 2×32×96×96 from 605,890,176 to 632,104,320 B; the mixed op's kernels read and write f16).

use super::elementwise::{gelu_backward_in_place, gelu_raw};
use super::matmul::{
    linear_dims, linear_grads, matmul_launch, matmul_launch_biased, LinearDims, MatmulKernel,
};
use crate::autograd::record;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// `linear(gelu(h), w, bias)`: h `[..., Cin]`, w `[Cin, Cout]`, bias `[Cout]`, all f32; output
/// `[..., Cout]`.
pub fn gelu_linear(h: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let op = "gelu_linear";
    let LinearDims {
        rows,
        cin,
        cout,
        out_shape,
    } = linear_dims(op, "h", h, w, bias)?;
    h.expect_dtype(op, DType::F32)?;
    let kernel = MatmulKernel::chosen(h.gpu())?;

    let h_rows = h.detach().reshape(&[rows, cin])?;
    let a = gelu_raw(&h_rows)?;
    let y = matmul_launch_biased(&a, w, false, false, kernel, bias)?.reshape(&out_shape)?;
    drop(a);

    let need = (h.requires_grad(), w.requires_grad());
    // ∂h reads h and w, ∂w reads h (for a): keep what the wanted gradients read.
    let h_kept = (need.0 || need.1).then_some(h_rows);
    let w_kept = need.0.then(|| w.detach());
    let h_shape = h.shape().to_vec();
    let bias_wanted = bias.map(|b| b.requires_grad());
    let mut inputs = vec![h, w];
    inputs.extend(bias);
    Ok(record(y, op, &inputs, move |g| {
        let g_rows = g.reshape(&[rows, cout])?;
        let mut gw = None;
        let mut gh = None;
        if let Some(h) = &h_kept {
            if need.1 {
                let a = gelu_raw(h)?;
                gw = Some(matmul_launch(&a, &g_rows, true, false, kernel)?);
            }
            if let Some(w) = &w_kept {
                let ga = matmul_launch(&g_rows, w, false, true, kernel)?;
                // ∂h over ∂a (this closure's own): one hidden-width tensor, not two.
                gh = Some(gelu_backward_in_place(h, ga)?.reshape(&h_shape)?);
            }
        }
        linear_grads(gh, gw, bias_wanted, &g_rows)
    }))
}
