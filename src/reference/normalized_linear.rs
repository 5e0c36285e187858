//! Reference for src/ops/normalized_linear.rs: `y = x · W`, W = v with each column scaled to
//! unit L2 norm (clamped at eps), composed of the reference L2 normalisation and matmul, so its
//! backward is theirs chained: ∂L/∂W = xᵀG, then the normalisation's backward to v.

use super::loss::{l2_normalize, l2_normalize_backward};
use super::matmul::{matmul, matmul_backward};
use super::Array;

/// x `[M, B]`, v `[B, K]` → y `[M, K]`.
pub fn normalized_linear(x: &Array, v: &Array, eps: f64) -> Array {
    matmul(x, &l2_normalize(v, 0, eps), false, false)
}

/// Gradients of `L = Σ y·g` with respect to x and v.
pub fn normalized_linear_backward(x: &Array, v: &Array, eps: f64, g: &Array) -> (Array, Array) {
    let w = l2_normalize(v, 0, eps);
    let (gx, gw) = matmul_backward(x, &w, false, false, g);
    (gx, l2_normalize_backward(v, 0, eps, &gw))
}
