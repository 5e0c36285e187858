//! Reference for src/ops/matmul_f16.rs: the matmul of f16 operands, in f64.
//!
//! Forward: the operands rounded to f16 and multiplied exactly (f64 holds every f16 product and
//! every sum here exactly enough): the GPU result differs from this only by its f32
//! accumulation. Backward: as the GPU computes it, the upstream gradient rounded to f16, the
//! transposed products of src/reference/matmul.rs on the rounded values, each gradient rounded
//! to f16 (the operands' type).

use super::cast::round_to_f16;
use super::matmul::{matmul, matmul_backward};
use super::Array;

/// `op_a(a) · op_b(b)` with `a` and `b` rounded to f16 first.
pub fn matmul_f16(a: &Array, b: &Array, ta: bool, tb: bool) -> Array {
    matmul(&round_to_f16(a), &round_to_f16(b), ta, tb)
}

/// (dA, dB) for upstream `g`, each rounded to f16 (see the module docs).
pub fn matmul_f16_backward(a: &Array, b: &Array, ta: bool, tb: bool, g: &Array) -> (Array, Array) {
    let (ga, gb) = matmul_backward(&round_to_f16(a), &round_to_f16(b), ta, tb, &round_to_f16(g));
    (round_to_f16(&ga), round_to_f16(&gb))
}
