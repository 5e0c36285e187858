//! The DINO projection head of CADS (../shared/CADS.md, "Heads and loss"):
//!
//!   h = GELU(x·W₀ + b₀) → GELU(h·W₂ + b₂) → z = h·W₄ + b₄            (`mlp.0`, `mlp.2`, `mlp.4`)
//!   ẑ = z / max(‖z‖₂, 1e-12)                                           (F.normalize, per row)
//!   y = ẑ · W,  W[:, k] = g_k · v[:, k] / ‖v[:, k]‖₂,  g ≡ 1            (`last_layer`, no bias)
//!
//! The last layer is PyTorch's `weight_norm(Linear(bottleneck, K, bias=False))` with the norm
//! fixed at 1 (`norm_last_layer=True`: `weight_g` filled with 1 and frozen), so its effective
//! weight is v with every output row (PyTorch `[K, bottleneck]`) scaled to unit length. The
//! forward is `ops::normalized_linear(ẑ, v)`: ẑ · v with each output column scaled by
//! 1/‖v[:, k]‖ (the same as `ops::linear(ẑ, ops::l2_normalize(v, 0, eps))`, without writing
//! the normalised [bottleneck, K] weight), so the gradient reaches v as through the norm:
//!   ∂L/∂v[:, k] = (∂L/∂W[:, k] − ŵ_k·⟨ŵ_k, ∂L/∂W[:, k]⟩) / ‖v[:, k]‖,   ŵ_k = v[:, k]/‖v[:, k]‖.
//! `weight_g` is kept as a buffer `[K, 1]` of ones (listed by name so the authors' checkpoints
//! load strictly, never trained, never read by the forward since it is 1).
//!
//! Init as the authors: the MLP linears trunc-normal(0.02) with zero bias (their `_init_weights`
//! runs before `last_layer` exists); `weight_v` keeps PyTorch's Linear default U(±1/√in) (the
//! weight-norm reparametrisation leaves v as the original weight).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{init, Layout, Linear, LinearInit, Module, StateEntry};
use crate::ops;
use crate::tensor::Tensor;
use crate::util::Rng;

/// `F.normalize`'s eps (the bottleneck's L2 normalisation and the weight norm).
pub const NORMALIZE_EPS: f32 = 1e-12;

/// Sizes of a DINO head (the input size is the encoder stage's embed dim, given at build).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DinoHeadConfig {
    /// Width of the two hidden layers (2048).
    pub hidden_dim: usize,
    /// Bottleneck before the L2 normalisation (256).
    pub bottleneck_dim: usize,
    /// K, the number of prototypes = logits (60000 in CADS).
    pub out_dim: usize,
}

impl Default for DinoHeadConfig {
    fn default() -> Self {
        DinoHeadConfig {
            hidden_dim: 2048,
            bottleneck_dim: 256,
            out_dim: 60000,
        }
    }
}

impl DinoHeadConfig {
    pub fn validate(&self) -> Result<()> {
        if self.hidden_dim == 0 || self.bottleneck_dim == 0 || self.out_dim < 2 {
            return Err(Error::invalid(
                "DinoHeadConfig",
                "hidden and bottleneck dims >= 1 and out_dim >= 2",
                format!("{self:?}"),
            ));
        }
        Ok(())
    }
}

pub struct DinoHead {
    pub config: DinoHeadConfig,
    pub in_dim: usize,
    /// `mlp.0`, `mlp.2`, `mlp.4` (the Sequential's GELUs at 1 and 3 hold no state).
    pub mlp: [Linear; 3],
    /// `last_layer.weight_v`, stored `[bottleneck, K]` (PyTorch `[K, bottleneck]`).
    pub weight_v: Tensor,
    /// `last_layer.weight_g`, `[K, 1]` of ones (a buffer: frozen at 1).
    pub weight_g: Tensor,
}

impl DinoHead {
    pub fn new(gpu: &Gpu, in_dim: usize, config: DinoHeadConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let std = LinearInit::TruncNormal(0.02);
        let (h, b, k) = (config.hidden_dim, config.bottleneck_dim, config.out_dim);
        let mlp = [
            Linear::new(gpu, in_dim, h, true, std, rng)?,
            Linear::new(gpu, h, h, true, std, rng)?,
            Linear::new(gpu, h, b, true, std, rng)?,
        ];
        // PyTorch Linear default (kaiming_uniform a = √5): U(±1/√fan_in), fan_in = bottleneck.
        let v = init::torch_default_weight(rng, b * k, b);
        Ok(DinoHead {
            config,
            in_dim,
            mlp,
            weight_v: Tensor::parameter(gpu, &v, &[b, k])?,
            weight_g: Tensor::full(gpu, &[k, 1], 1.0)?,
        })
    }

    /// The effective last-layer weight `[bottleneck, K]`: each column v[:, k]/‖v[:, k]‖
    /// (recorded, so gradients flow to v).
    pub fn last_layer_weight(&self) -> Result<Tensor> {
        ops::l2_normalize(&self.weight_v, 0, NORMALIZE_EPS)
    }

    /// `[N, in]` → logits `[N, K]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 2 || x.shape()[1] != self.in_dim {
            return Err(Error::shape(
                "DinoHead::forward",
                format!("[N, {}]", self.in_dim),
                x.shape(),
            ));
        }
        let h = ops::gelu(&self.mlp[0].forward(x)?)?;
        let h = ops::gelu(&self.mlp[1].forward(&h)?)?;
        let z = self.mlp[2].forward(&h)?; // [N, bottleneck]
        let z = ops::l2_normalize(&z, -1, NORMALIZE_EPS)?;
        ops::normalized_linear(&z, &self.weight_v, NORMALIZE_EPS) // [N, K]
    }
}

impl Module for DinoHead {
    /// `mlp.0.`, `mlp.2.`, `mlp.4.`, then `last_layer.weight_g`, `last_layer.weight_v` (the
    /// order of PyTorch's `state_dict()` for a weight-normed Linear).
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        for (i, linear) in self.mlp.iter().enumerate() {
            linear.state(&format!("{prefix}mlp.{}.", 2 * i), out);
        }
        out.push(StateEntry::buffer(
            prefix,
            "last_layer.weight_g",
            &self.weight_g,
            Layout::Plain,
        ));
        out.push(StateEntry::parameter(
            prefix,
            "last_layer.weight_v",
            &self.weight_v,
            Layout::Linear,
        ));
    }
}
