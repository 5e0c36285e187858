//! Reference for src/ops/gelu_linear.rs: `y = GELU(h) · w + bias`, composed of the reference
//! GELU and matmul, so its backward is theirs chained: ∂w = aᵀG, ∂a = G wᵀ, ∂h = ∂a · GELU'(h)
//! with a = GELU(h), ∂bias = Σ_rows G.

use super::elementwise::{unary, unary_backward};
use super::matmul::{matmul, matmul_backward};
use super::Array;
use crate::ops::config::UnaryOp;

/// h `[M, Cin]`, w `[Cin, Cout]`, bias `[Cout]` → y `[M, Cout]`.
pub fn gelu_linear(h: &Array, w: &Array, bias: Option<&[f64]>) -> Array {
    let mut y = matmul(&unary(UnaryOp::Gelu, h), w, false, false);
    if let Some(b) = bias {
        let cout = b.len();
        for (i, v) in y.data.iter_mut().enumerate() {
            *v += b[i % cout];
        }
    }
    y
}

/// Gradients of `L = Σ y·g` with respect to h, w and the bias.
pub fn gelu_linear_backward(h: &Array, w: &Array, g: &Array) -> (Array, Array, Array) {
    let a = unary(UnaryOp::Gelu, h);
    let (ga, gw) = matmul_backward(&a, w, false, false, g);
    let cout = w.shape[1];
    let mut gb = Array::zeros(&[cout]);
    for (i, v) in g.data.iter().enumerate() {
        gb.data[i % cout] += v;
    }
    (unary_backward(UnaryOp::Gelu, h, &ga), gw, gb)
}
