//! Reference for src/tensor/cast.rs: f32 ↔ f16 conversion and the f16 sum, through the `half`
//! crate (IEEE 754 binary16, round to nearest, ties to even; overflow to ±inf).

use half::f16;

use super::Array;

/// f32 values rounded to f16.
pub fn to_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// f16 values widened to f32 (exact).
pub fn to_f32(x: &[f16]) -> Vec<f32> {
    x.iter().map(|h| h.to_f32()).collect()
}

/// `a + b` of f16 values computed in f32 and rounded once to f16 (the GPU's `add_f16`).
pub fn add_f16(a: &[f16], b: &[f16]) -> Vec<f16> {
    a.iter()
        .zip(b)
        .map(|(x, y)| f16::from_f32(x.to_f32() + y.to_f32()))
        .collect()
}

/// The array's values (f32 values held in f64) rounded to f16 and back: what a tensor holds
/// after `to_dtype(F16)`.
pub fn round_to_f16(a: &Array) -> Array {
    Array::new(
        a.data
            .iter()
            .map(|&v| f16::from_f32(v as f32).to_f64())
            .collect(),
        &a.shape,
    )
}
