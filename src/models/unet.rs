//! A small 3D convolutional U-Net (nnU-Net-style blocks) over channels-last volumes.
//!
//! With widths `[c0, c1, .., c_{L−1}]` (L levels, level l at resolution 1/2^l):
//!
//! ```text
//! encoder l = 0:   x [N, D, H, W, Cin] → Block(Cin → c0, stride 1)              = s0
//! encoder l ≥ 1:   s_{l−1} → Block(c_{l−1} → c_l, first conv stride 2)          = s_l
//! decoder l = L−2 … 0:
//!   u = ConvTranspose3d k2 s2 (c_{l+1} → c_l) of the level below   [N, D/2^l, .., c_l]
//!   h = Block(concat[u, s_l] along C (2·c_l) → c_l)
//! head: Conv 1³ (c0 → classes) with bias                        → logits [N, D, H, W, K]
//! ```
//!
//! Block = [Conv 3³ (pad 1, no bias) → InstanceNorm (no affine, eps) → LeakyReLU(slope)] × 2.
//! A conv bias before InstanceNorm would be subtracted again by the mean, so the block convs
//! carry none. D, H, W must be divisible by 2^(L−1) so that every up-sampling lands exactly on
//! its skip. Convs use Kaiming-normal fan-out init, the transposed convs and head PyTorch's
//! default (see `nn::conv` and `nn::conv_transpose`).

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Conv3d, ConvInit, ConvTranspose3d, Module, StateEntry};
use crate::ops::{self, Conv3dConfig, ConvTranspose3dConfig};
use crate::tensor::Tensor;
use crate::util::Rng;

/// Channels, depth and block hyper-parameters of a [`UNet3d`].
#[derive(Clone, Debug, PartialEq)]
pub struct UNet3dConfig {
    pub in_channels: usize,
    /// Output channels K of the head (2 for foreground/background with cross-entropy).
    pub classes: usize,
    /// Channels per level, top (full resolution) first; its length is the number of levels.
    pub widths: Vec<usize>,
    /// Negative slope of the LeakyReLU (nnU-Net: 0.01).
    pub leaky_slope: f32,
    /// InstanceNorm epsilon (nnU-Net: 1e-5).
    pub eps: f32,
}

impl Default for UNet3dConfig {
    fn default() -> Self {
        UNet3dConfig {
            in_channels: 1,
            classes: 2,
            widths: vec![8, 16],
            leaky_slope: 0.01,
            eps: 1e-5,
        }
    }
}

/// Two Conv 3³ → InstanceNorm → LeakyReLU units; the first conv may have stride 2.
pub struct ConvBlock {
    pub convs: [Conv3d; 2],
    slope: f32,
    eps: f32,
}

impl ConvBlock {
    pub fn new(
        gpu: &Gpu,
        rng: &mut Rng,
        cin: usize,
        cout: usize,
        stride: usize,
        cfg: &UNet3dConfig,
    ) -> Result<ConvBlock> {
        let conv = |rng: &mut Rng, cin, s| {
            Conv3d::new(
                gpu,
                rng,
                cin,
                cout,
                Conv3dConfig::cube(3, s, 1),
                false,
                ConvInit::KaimingNormalFanOut,
            )
        };
        Ok(ConvBlock {
            convs: [conv(rng, cin, stride)?, conv(rng, cout, 1)?],
            slope: cfg.leaky_slope,
            eps: cfg.eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?;
            h = ops::instance_norm_leaky_relu(&h, None, self.eps, self.slope)?;
        }
        Ok(h)
    }
}

impl Module for ConvBlock {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        for (i, conv) in self.convs.iter().enumerate() {
            conv.state(&format!("{prefix}conv{i}."), out);
        }
    }
}

/// The U-Net; see the module docs for the architecture.
pub struct UNet3d {
    pub config: UNet3dConfig,
    /// One block per level, top first.
    pub encoder: Vec<ConvBlock>,
    /// `ups[l]`: level l+1 → level l.
    pub ups: Vec<ConvTranspose3d>,
    /// `decoder[l]`: the block after the skip concatenation at level l (levels 0..L−1).
    pub decoder: Vec<ConvBlock>,
    pub head: Conv3d,
}

impl UNet3d {
    pub fn new(gpu: &Gpu, rng: &mut Rng, config: UNet3dConfig) -> Result<UNet3d> {
        let w = &config.widths;
        if w.is_empty() || w.contains(&0) || config.in_channels == 0 || config.classes == 0 {
            return Err(Error::invalid(
                "UNet3d::new",
                "at least one level, non-zero widths, input channels and classes",
                format!("{config:?}"),
            ));
        }
        let mut encoder = Vec::with_capacity(w.len());
        for l in 0..w.len() {
            let (cin, stride) = if l == 0 {
                (config.in_channels, 1)
            } else {
                (w[l - 1], 2)
            };
            encoder.push(ConvBlock::new(gpu, rng, cin, w[l], stride, &config)?);
        }
        let mut ups = Vec::with_capacity(w.len() - 1);
        let mut decoder = Vec::with_capacity(w.len() - 1);
        for l in 0..w.len() - 1 {
            ups.push(ConvTranspose3d::new(
                gpu,
                rng,
                w[l + 1],
                w[l],
                ConvTranspose3dConfig::up2(),
                true,
                ConvInit::TorchDefault,
            )?);
            decoder.push(ConvBlock::new(gpu, rng, 2 * w[l], w[l], 1, &config)?);
        }
        let head = Conv3d::new(
            gpu,
            rng,
            w[0],
            config.classes,
            Conv3dConfig::cube(1, 1, 0),
            true,
            ConvInit::TorchDefault,
        )?;
        Ok(UNet3d {
            config,
            encoder,
            ups,
            decoder,
            head,
        })
    }

    /// Logits `[N, D, H, W, K]` of `x` `[N, D, H, W, Cin]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let op = "UNet3d::forward";
        let levels = self.encoder.len();
        let factor = 1usize << (levels - 1);
        let cin = self.config.in_channels;
        let ok = matches!(*x.shape(), [_, d, h, w, c]
            if c == cin && [d, h, w].iter().all(|&e| e > 0 && e % factor == 0));
        if !ok {
            return Err(Error::shape(
                op,
                format!("[N, D, H, W, {cin}] with D, H, W multiples of {factor}"),
                x.shape(),
            ));
        }
        let mut skips = Vec::with_capacity(levels);
        let mut h = x.clone();
        for block in &self.encoder {
            h = block.forward(&h)?;
            skips.push(h.clone());
        }
        for l in (0..levels - 1).rev() {
            let up = self.ups[l].forward(&h)?; // [N, D/2^l, H/2^l, W/2^l, c_l]
            let joined = Tensor::concat(&[&up, &skips[l]], -1)?; // [.., 2·c_l]
            h = self.decoder[l].forward(&joined)?;
        }
        self.head.forward(&h)
    }
}

impl Module for UNet3d {
    /// Names: `encoder.{l}.conv{0,1}.weight`, `up.{l}.{weight,bias}`,
    /// `decoder.{l}.conv{0,1}.weight`, `head.{weight,bias}`.
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        for (l, block) in self.encoder.iter().enumerate() {
            block.state(&format!("{prefix}encoder.{l}."), out);
        }
        for (l, (up, block)) in self.ups.iter().zip(&self.decoder).enumerate() {
            up.state(&format!("{prefix}up.{l}."), out);
            block.state(&format!("{prefix}decoder.{l}."), out);
        }
        self.head.state(&format!("{prefix}head."), out);
    }
}
