//! Parameter initialisers (host side, seeded), matching the PyTorch / timm formulas CADS uses.

use crate::util::Rng;

/// timm `trunc_normal_(std)`: Normal(0, std) truncated to ±2 std.
pub fn trunc_normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n).map(|_| rng.trunc_normal(std) as f32).collect()
}

/// Normal(0, std).
pub fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * std) as f32).collect()
}

/// Uniform(−bound, bound).
pub fn uniform(rng: &mut Rng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| rng.range(-bound, bound) as f32).collect()
}

/// PyTorch's default `Linear`/`Conv` weight init, kaiming_uniform(a = √5): bound = 1/√fan_in.
pub fn torch_default_weight(rng: &mut Rng, n: usize, fan_in: usize) -> Vec<f32> {
    uniform(rng, n, 1.0 / (fan_in.max(1) as f64).sqrt())
}
