//! `LayerNorm` over the last axis with learnable gamma (1) and beta (0).

use super::pytorch_layout::Layout;
use super::state::{Module, StateEntry};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::Tensor;

pub struct LayerNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(gpu: &Gpu, channels: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: Tensor::parameter(gpu, &vec![1.0; channels], &[channels])?,
            beta: Tensor::parameter(gpu, &vec![0.0; channels], &[channels])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(x, Some((&self.gamma, &self.beta)), self.eps)
    }
}

impl Module for LayerNorm {
    /// PyTorch's names: `weight` (gamma), `bias` (beta).
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        out.push(StateEntry::parameter(
            prefix,
            "weight",
            &self.gamma,
            Layout::Plain,
        ));
        out.push(StateEntry::parameter(
            prefix,
            "bias",
            &self.beta,
            Layout::Plain,
        ));
    }
}
