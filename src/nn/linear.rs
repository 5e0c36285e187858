//! `Linear`: y = x·W + b over the last axis. Weight stored `[in, out]` (the layout the matmul
//! kernel reads fastest); PyTorch's `[out, in]` is transposed by `load_pytorch`
//! ([`Layout::Linear`]).

use super::init;
use super::pytorch_layout::Layout;
use super::state::{weight_and_bias, Module, StateEntry};
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

    /// `[..., in]` → `[..., out]`. Under `gpu.autocast(Precision::Mixed)` on a device with
    /// `SHADER_F16`, the input and the (f32 master) weight are cast to f16 and multiplied with
    /// f32 accumulation ([`crate::ops::linear_mixed`]; the tape keeps the f16 copies); elsewhere,
    /// and on a device without f16, the f32 path.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.gpu().mixed_precision() {
            return crate::ops::linear_mixed(x, &self.weight, self.bias.as_ref());
        }
        crate::ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Load PyTorch weights: `weight` `[out, in]` row-major, `bias` `[out]` exactly when the
    /// layer has one. Everything is checked before anything is written.
    pub fn load_pytorch(&self, weight: &[f32], bias: Option<&[f32]>) -> Result<()> {
        let data = Layout::Linear.from_pytorch(self.weight.shape(), weight)?;
        check_bias("Linear::load_pytorch", self.bias.as_ref(), bias)?;
        self.weight.write(&data)?;
        write_bias(self.bias.as_ref(), bias)
    }
}

/// A bias given exactly when the layer has one, of the layer's length.
pub(crate) fn check_bias(
    op: &'static str,
    have: Option<&Tensor>,
    given: Option<&[f32]>,
) -> Result<()> {
    match (have, given) {
        (Some(b), Some(v)) if v.len() != b.numel() => {
            Err(Error::shape(op, format!("bias [{}]", b.numel()), [v.len()]))
        }
        (Some(_), None) => Err(Error::invalid(op, "a bias (the layer has one)", "none")),
        (None, Some(_)) => Err(Error::invalid(op, "no bias (the layer has none)", "a bias")),
        _ => Ok(()),
    }
}

/// Write a bias checked by [`check_bias`].
pub(crate) fn write_bias(have: Option<&Tensor>, given: Option<&[f32]>) -> Result<()> {
    match (have, given) {
        (Some(b), Some(v)) => b.write(v),
        _ => Ok(()),
    }
}

impl Module for Linear {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        weight_and_bias(
            prefix,
            &self.weight,
            self.bias.as_ref(),
            Layout::Linear,
            out,
        );
    }
}
