//! The encoder's convolutions: `nn::Conv3d` layers with CADS's init, weight normal(0,
//! √(2 / fan_out)) and bias 0, where fan_out is what the authors' `_init_weights` computes:
//! `kernel_size[0] · kernel_size[1] · out_channels / groups`. For a 2D conv that is the usual
//! kH·kW·Cout/g; for a Conv3d it leaves out kW (kD·kH·Cout/g), so their volume convs start √kW
//! wider than Kaiming fan-out would (√7 for the 7³ stem conv, √3 for 3³ convs and the
//! depthwise, √sr for the SR convs). We follow their code. Image (2D) convs keep `[1, kH, kW, Cin/g, Cout]` weights and run
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
        let conv = Conv3d::new(
            gpu,
            rng,
            cin,
            cout,
            cfg,
            bias,
            ConvInit::KaimingNormalFanOut,
        )?;
        // Kaiming fan-out drew N(0, √(2 / (kD·kH·kW·Cout/g))); the authors' fan_out omits kW
        // for volume convs (module docs), i.e. a std √kW larger. Image convs have kD = 1 here
        // and PyTorch's (kH, kW) there: already equal.
        let widen = cfg.kernel[2] as f32;
        if !image && widen > 1.0 {
            let scale = widen.sqrt();
            let w: Vec<f32> = conv.weight.to_vec()?.iter().map(|v| v * scale).collect();
            conv.weight.write(&w)?;
        }
        Ok(ConvUnit { conv, image })
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
