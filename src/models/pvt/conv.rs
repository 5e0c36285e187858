//! The encoder's convolutions: one weight set each, run through the 3D conv kernels. Image
//! (2D) convs store `[1, kH, kW, Cin/g, Cout]` weights and run on `[N, 1, H, W, C]` views.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{init, Module};
use crate::ops::{conv3d, Conv3dConfig};
use crate::tensor::Tensor;
use crate::util::Rng;

pub struct ConvUnit {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub cfg: Conv3dConfig,
    /// Input and output are images `[N, H, W, C]` (D = 1 inside).
    pub image: bool,
}

impl ConvUnit {
    /// A conv with CADS's init: weight normal(0, sqrt(2 / fan_out)), bias 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cin: usize,
        cout: usize,
        cfg: Conv3dConfig,
        bias: bool,
        image: bool,
        rng: &mut Rng,
    ) -> Result<ConvUnit> {
        let k = cfg.kernel;
        if image && (k[0] != 1 || cfg.stride[0] != 1 || cfg.padding[0] != 0) {
            return Err(Error::invalid(
                "ConvUnit",
                "an image conv with kernel/stride 1 and padding 0 along D",
                format!("{cfg:?}"),
            ));
        }
        let cin_g = cin / cfg.groups;
        let fan_out = k[0] * k[1] * k[2] * cout / cfg.groups;
        let n = k[0] * k[1] * k[2] * cin_g * cout;
        let w = init::normal(rng, n, (2.0 / fan_out as f64).sqrt());
        Ok(ConvUnit {
            weight: Tensor::parameter(gpu, &w, &[k[0], k[1], k[2], cin_g, cout])?,
            bias: if bias {
                Some(Tensor::parameter(gpu, &vec![0.0; cout], &[cout])?)
            } else {
                None
            },
            cfg,
            image,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.image {
            return conv3d(x, &self.weight, self.bias.as_ref(), &self.cfg);
        }
        let [n, h, w, c] = *x.shape() else {
            return Err(Error::shape("image conv", "[N, H, W, C]", x.shape()));
        };
        let y = conv3d(
            &x.reshape(&[n, 1, h, w, c])?,
            &self.weight,
            self.bias.as_ref(),
            &self.cfg,
        )?;
        let s = y.shape().to_vec();
        y.reshape(&[s[0], s[2], s[3], s[4]])
    }

    /// Parameter count.
    pub fn numel(&self) -> usize {
        self.weight.numel() + self.bias.as_ref().map_or(0, |b| b.numel())
    }
}

impl Module for ConvUnit {
    fn parameters(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{prefix}weight"), self.weight.clone()));
        if let Some(b) = &self.bias {
            out.push((format!("{prefix}bias"), b.clone()));
        }
    }
}
