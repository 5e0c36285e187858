//! Parameters and gradients with f64 twins, shared by tests/optim.rs and
//! tests/optim_properties.rs. Included with `#[path = "common/optim_params.rs"] mod optim_params;`
//! (not through `common/mod.rs`, so other test binaries do not build it).
#![allow(dead_code)]

use cads::util::Rng;
use cads::{Gpu, Gradients, Tensor};

pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A parameter on the GPU and its f64 twin, filled uniform in [-1, 1).
pub fn param(gpu: &Gpu, rng: &mut Rng, shape: &[usize]) -> (Vec<f64>, Tensor) {
    let n = shape.iter().product();
    let data = rng.vec_uniform(n, -1.0, 1.0);
    (to64(&data), Tensor::parameter(gpu, &data, shape).unwrap())
}

/// Random gradients for the parameters selected by `present`, as `Gradients` and f64 twins.
pub fn random_grads(
    gpu: &Gpu,
    rng: &mut Rng,
    params: &[Tensor],
    present: &[bool],
    scale: f32,
) -> (Gradients, Vec<Option<Vec<f64>>>) {
    let mut grads = Gradients::default();
    let mut twins = Vec::new();
    for (p, &on) in params.iter().zip(present) {
        if !on {
            twins.push(None);
            continue;
        }
        let g = rng.vec_uniform(p.numel(), -scale, scale);
        grads
            .accumulate(p.id(), Tensor::from_slice(gpu, &g, p.shape()).unwrap())
            .unwrap();
        twins.push(Some(to64(&g)));
    }
    (grads, twins)
}
