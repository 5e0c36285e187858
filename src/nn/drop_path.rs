//! DropPath (stochastic depth): in training, each sample's residual branch is zeroed with
//! probability p and the survivors scaled by 1/(1 − p); identity in evaluation.

use super::state::{Module, StateEntry};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::util::Rng;

/// `x` of shape `[N, ...]`; one Bernoulli draw per sample from `rng` (seeded by the caller).
pub fn drop_path(x: &Tensor, prob: f32, training: bool, rng: &mut Rng) -> Result<Tensor> {
    if !(0.0..1.0).contains(&prob) {
        return Err(Error::invalid("drop_path", "probability in [0, 1)", prob));
    }
    if !training || prob == 0.0 {
        return Ok(x.clone());
    }
    if x.rank() == 0 {
        return Err(Error::shape("drop_path", "[N, ...]", x.shape()));
    }
    let n = x.shape()[0];
    let keep = 1.0 - prob;
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.bernoulli(keep as f64) {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    let mut mask_shape = vec![1; x.rank()];
    mask_shape[0] = n;
    let mask = Tensor::from_slice(x.gpu(), &mask, &mask_shape)?;
    crate::ops::mul(x, &mask)
}

/// DropPath as a layer: holds its probability, no state (timm's `DropPath` has none either, so
/// no key appears in a checkpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropPath {
    pub prob: f32,
}

impl DropPath {
    pub fn new(prob: f32) -> Result<DropPath> {
        if !(0.0..1.0).contains(&prob) {
            return Err(Error::invalid(
                "DropPath::new",
                "probability in [0, 1)",
                prob,
            ));
        }
        Ok(DropPath { prob })
    }

    pub fn forward(&self, x: &Tensor, training: bool, rng: &mut Rng) -> Result<Tensor> {
        drop_path(x, self.prob, training, rng)
    }
}

impl Module for DropPath {
    fn state(&self, _prefix: &str, _out: &mut Vec<StateEntry>) {}
}
