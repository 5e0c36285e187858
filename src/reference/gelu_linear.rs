//! Reference for src/ops/gelu_linear.rs: `y = GELU(h) · w + bias`, composed of the reference
//! GELU and matmul, so its backward is theirs chained: ∂w = aᵀG, ∂a = G wᵀ, ∂h = ∂a · GELU'(h)
//! with a = GELU(h), ∂bias = Σ_rows G.

use super::cast::round_to_f16;
use super::elementwise::{unary, unary_backward};
use super::matmul::{matmul, matmul_backward};
use super::Array;
use crate::ops::config::UnaryOp;

/// h `[M, Cin]`, w `[Cin, Cout]`, bias `[Cout]` → y `[M, Cout]`.
pub fn gelu_linear(h: &Array, w: &Array, bias: Option<&[f64]>) -> Array {
    let mut y = matmul(&unary(UnaryOp::Gelu, h), w, false, false);
    add_bias(&mut y, bias);
    y
}

/// `y[r, c] += bias[c]`.
fn add_bias(y: &mut Array, bias: Option<&[f64]>) {
    if let Some(b) = bias {
        let cout = b.len();
        for (i, v) in y.data.iter_mut().enumerate() {
            *v += b[i % cout];
        }
    }
}

/// `Σ_rows g` of a `[M, Cout]` gradient.
fn bias_grad(g: &Array, cout: usize) -> Array {
    let mut gb = Array::zeros(&[cout]);
    for (i, v) in g.data.iter().enumerate() {
        gb.data[i % cout] += v;
    }
    gb
}

/// Gradients of `L = Σ y·g` with respect to h, w and the bias.
pub fn gelu_linear_backward(h: &Array, w: &Array, g: &Array) -> (Array, Array, Array) {
    let a = unary(UnaryOp::Gelu, h);
    let (ga, gw) = matmul_backward(&a, w, false, false, g);
    (
        unary_backward(UnaryOp::Gelu, h, &ga),
        gw,
        bias_grad(g, w.shape[1]),
    )
}

/// Reference for src/ops/gelu_linear_mixed.rs: [`gelu_linear`] with h and w rounded to f16 and
/// GELU's output rounded to f16, the products and sums exact (the GPU's differ by f32
/// accumulation, and a16 by one f16 step where its f32 GELU lands on the other side of a
/// rounding boundary).
pub fn gelu_linear_mixed(h: &Array, w: &Array, bias: Option<&[f64]>) -> Array {
    let a = round_to_f16(&unary(UnaryOp::Gelu, &round_to_f16(h)));
    let mut y = matmul(&a, &round_to_f16(w), false, false);
    add_bias(&mut y, bias);
    y
}

/// Gradients of [`gelu_linear_mixed`] (`L = Σ y·g`) as the op computes them: g rounded to f16,
/// straight through the roundings of h, w and GELU's output; f32 results (not rounded).
pub fn gelu_linear_mixed_backward(h: &Array, w: &Array, g: &Array) -> (Array, Array, Array) {
    let h16 = round_to_f16(h);
    let a = round_to_f16(&unary(UnaryOp::Gelu, &h16));
    let (ga, gw) = matmul_backward(&a, &round_to_f16(w), false, false, &round_to_f16(g));
    (
        unary_backward(UnaryOp::Gelu, &h16, &ga),
        gw,
        bias_grad(g, w.shape[1]),
    )
}
