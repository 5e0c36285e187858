//! Bounds for f16 rounding (tests/mixed_precision.rs, tests/autocast.rs).

use cads::reference::{matmul as refmm, Array};

/// The unit roundoff of f16 (11-bit significand): a rounding errs by at most u relative.
pub const U: f64 = 1.0 / 2048.0;

/// Per-element bound ((2u + u²)·Σ_k|a_ik||b_kj| + 1e-5) of the f16 product against the exact
/// product of the f32 operands.
pub fn rounding_bound(a: &Array, b: &Array, ta: bool, tb: bool, factor: f64) -> Vec<f64> {
    let abs = |x: &Array| Array::new(x.data.iter().map(|v| v.abs()).collect(), &x.shape);
    refmm::matmul(&abs(a), &abs(b), ta, tb)
        .data
        .iter()
        .map(|s| factor * s + 1e-5)
        .collect()
}

pub fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) {
    let worst = got
        .iter()
        .zip(want)
        .zip(bound)
        .map(|((g, w), b)| (*g as f64 - w).abs() / b)
        .fold(0.0f64, f64::max);
    assert!(
        worst <= 1.0,
        "{what}: error reaches {worst:.3} of the f16 rounding bound"
    );
}
