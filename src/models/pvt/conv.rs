//! The encoder's convolutions: `nn::Conv3d` layers with CADS's init (weight normal(0,
//! sqrt(2 / fan_out)), bias 0). Image (2D) convs keep `[1, kH, kW, Cin/g, Cout]` weights and run
//! on `[N, 1, H, W, C]` views, so both modalities share one kernel; their named state says
//! [`Layout::Conv2d`] (PyTorch `nn.Conv2d`, `[Cout, Cin/g, kH, kW]`), the volume convs
//! [`Layout::Conv3d`].

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::state::weight_and_bias;
use crate::nn::{Conv3d, ConvInit, Layout, Module, StateEntry};
use crate::ops::Conv3dConfig;
use crate::tensor::Tensor;
use crate::util::Rng;

pub struct ConvUnit {
    pub conv: Conv3d,
    /// Input and output are images `[N, H, W, C]` (D = 1 inside).
    pub image: bool,
}

impl ConvUnit {
    pub fn new(
        gpu: &Gpu,
        cin: usize,
        cout: usize,
        cfg: Conv3dConfig,
        bias: bool,
        image: bool,
        rng: &mut Rng,
    ) -> Result<ConvUnit> {
        if image && (cfg.kernel[0] != 1 || cfg.stride[0] != 1 || cfg.padding[0] != 0) {
            return Err(Error::invalid(
                "ConvUnit",
                "an image conv with kernel/stride 1 and padding 0 along D",
                format!("{cfg:?}"),
            ));
        }
        Ok(ConvUnit {
            conv: Conv3d::new(
                gpu,
                rng,
                cin,
                cout,
                cfg,
                bias,
                ConvInit::KaimingNormalFanOut,
            )?,
            image,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.image {
            return self.conv.forward(x);
        }
        let [n, h, w, c] = *x.shape() else {
            return Err(Error::shape("image conv", "[N, H, W, C]", x.shape()));
        };
        let y = self.conv.forward(&x.reshape(&[n, 1, h, w, c])?)?;
        let s = y.shape().to_vec();
        y.reshape(&[s[0], s[2], s[3], s[4]])
    }
}

impl Module for ConvUnit {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        let layout = if self.image {
            Layout::Conv2d
        } else {
            Layout::Conv3d
        };
        weight_and_bias(
            prefix,
            &self.conv.weight,
            self.conv.bias.as_ref(),
            layout,
            out,
        );
    }
}
