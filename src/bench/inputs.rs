//! Fresh random inputs for benchmark cases.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::util::Rng;

/// Uniform(−1, 1) tensor of `shape`.
pub(crate) fn random(gpu: &Gpu, rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_slice(gpu, &rng.vec_uniform(n, -1.0, 1.0), shape)
}

/// `random`, as a leaf that requires grad (for forward + backward cases).
pub(crate) fn random_param(gpu: &Gpu, rng: &mut Rng, shape: &[usize]) -> Result<Tensor> {
    Ok(random(gpu, rng, shape)?.requires_grad_(true))
}
