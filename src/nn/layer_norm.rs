//! `LayerNorm` over the last axis with learnable gamma (1) and beta (0).

use super::Module;
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
    fn parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}weight"), self.gamma.clone()));
        out.push((format!("{prefix}bias"), self.beta.clone()));
    }
}
