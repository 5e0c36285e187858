//! `Linear`: y = x·W + b over the last axis. Weight stored `[in, out]` (the layout the matmul
//! kernel reads fastest); PyTorch's `[out, in]` is transposed by `load_pytorch`
//! ([`Layout::Linear`]).

use super::init;
use super::pytorch_layout::Layout;
use super::state::{weight_and_bias, Module, StateEntry};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{DType, Tensor};
use crate::util::Rng;

/// Under autocast, a [`Linear`] multiplies in f16 from this many rows on, and in f32 below.
///
/// Why: the f16 product casts the f32 master weight to f16 twice per step (forward, and again
/// in backward, so no second copy of the weights is held between them), 12 bytes moved per
/// weight element; the two products that read the weight (forward and input gradient) each save
/// 2 bytes per element per pass over it, about one pass per 32-row tile on the CPU tiles and
/// fewer where a GPU's cache holds the weight: they break even at 3 tiles (96 rows) on the CPU
/// tiles; 256 rows leave room for the launches and the caches, and a product of fewer rows is
/// bandwidth-bound on any GPU, so tensor cores would not speed it up either. The f32 path reads
/// the master weight directly and keeps an f32 input of fewer than `MIXED_MIN_ROWS · in` values.
/// In PVTv2 at 2×16×48×48 this sends stages 3 and 4 (36 and 8 rows) and the reduced `kv` layers
/// (2 rows) to f32: 92% of the encoder's linear weights. Measured in docs/kernel-tuning.md
/// ("Small linears stay f32 under autocast").
pub const MIXED_MIN_ROWS: usize = 256;

/// Rows of a linear's input `[..., in]`: the product of its leading axes.
fn rows(x: &Tensor) -> usize {
    let shape = x.shape();
    shape[..shape.len().saturating_sub(1)].iter().product()
}

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
    /// `SHADER_F16`, from [`MIXED_MIN_ROWS`] rows (the product of the leading axes) on, or when
    /// `x` already is f16, the input and the (f32 master) weight are cast to f16 and multiplied
    /// with f32 accumulation ([`crate::ops::linear_mixed`]; the tape keeps the f16 copy of the
    /// input); with fewer rows, elsewhere, and on a device without f16, the f32 path.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.gpu().mixed_precision() && (x.dtype() == DType::F16 || rows(x) >= MIXED_MIN_ROWS) {
            return crate::ops::linear_mixed(x, &self.weight, self.bias.as_ref());
        }
        crate::ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// [`Linear::forward`] of GELU(h), as one op that keeps only `h` for backward (GELU(h) is
    /// made again there): under autocast from [`MIXED_MIN_ROWS`] rows on, or for an f16 `h`,
    /// [`crate::ops::gelu_linear_mixed`] (keeps h's f16 rounding); otherwise
    /// [`crate::ops::gelu_linear`] in f32.
    pub fn forward_gelu(&self, h: &Tensor) -> Result<Tensor> {
        let (w, b) = (&self.weight, self.bias.as_ref());
        if h.dtype() == DType::F16 || (h.gpu().mixed_precision() && rows(h) >= MIXED_MIN_ROWS) {
            return crate::ops::gelu_linear_mixed(h, w, b);
        }
        crate::ops::gelu_linear(h, w, b)
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
