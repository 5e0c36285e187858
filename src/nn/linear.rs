//! `Linear`: y = x·W + b over the last axis. Weight stored `[in, out]` (the layout the matmul
//! kernel reads fastest); PyTorch's `[out, in]` is transposed by `load_pytorch`.

use super::init;
use super::Module;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::util::Rng;

/// How to initialise a `Linear`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinearInit {
    /// timm / PVT: trunc_normal(std) weight, zero bias (CADS uses std 0.02).
    TruncNormal(f64),
    /// PyTorch's default: U(±1/√in) for weight and bias.
    Torch,
}

pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    pub fn new(
        gpu: &Gpu,
        in_features: usize,
        out_features: usize,
        bias: bool,
        init_kind: LinearInit,
        rng: &mut Rng,
    ) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "Linear::new",
                "in and out features >= 1",
                format!("{in_features} -> {out_features}"),
            ));
        }
        let n = in_features * out_features;
        let (w, b) = match init_kind {
            LinearInit::TruncNormal(std) => {
                (init::trunc_normal(rng, n, std), vec![0.0; out_features])
            }
            LinearInit::Torch => (
                init::torch_default_weight(rng, n, in_features),
                init::torch_default_weight(rng, out_features, in_features),
            ),
        };
        Ok(Linear {
            weight: Tensor::parameter(gpu, &w, &[in_features, out_features])?,
            bias: if bias {
                Some(Tensor::parameter(gpu, &b, &[out_features])?)
            } else {
                None
            },
            in_features,
            out_features,
        })
    }

    /// `[..., in]` → `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Load PyTorch weights: `weight` `[out, in]` row-major, `bias` `[out]`.
    pub fn load_pytorch(&self, weight: &[f32], bias: Option<&[f32]>) -> Result<()> {
        let (i, o) = (self.in_features, self.out_features);
        if weight.len() != i * o {
            return Err(Error::shape(
                "Linear::load_pytorch",
                format!("weight [{o}, {i}]"),
                format!("{} values", weight.len()),
            ));
        }
        let mut w = vec![0.0; i * o];
        for r in 0..o {
            for c in 0..i {
                w[c * o + r] = weight[r * i + c];
            }
        }
        self.weight.write(&w)?;
        match (&self.bias, bias) {
            (Some(b), Some(data)) => b.write(data),
            (None, None) => Ok(()),
            (Some(_), None) => Err(Error::invalid(
                "Linear::load_pytorch",
                "a bias for a layer with bias",
                "none",
            )),
            (None, Some(_)) => Err(Error::invalid(
                "Linear::load_pytorch",
                "no bias for a layer without bias",
                "a bias",
            )),
        }
    }
}

impl Module for Linear {
    fn parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}weight"), self.weight.clone()));
        if let Some(b) = &self.bias {
            out.push((format!("{prefix}bias"), b.clone()));
        }
    }
}
