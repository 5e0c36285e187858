//! PVT-UNet: the 3D path of the CADS PVTv2 encoder under a convolutional U-Net decoder with deep
//! supervision (../shared/CADS.md, "PVT-UNet"; the decoder was not published, this is our
//! design, in the style of the same lab's CoTr and of nnU-Net).
//!
//! ```text
//! x [N, D, H, W, Cin]                               D, H, W multiples of (16, 32, 32)
//! encoder (PvtEncoder, volume path):
//!   skip  stride (2, 2, 2)    [.., stem]        stem's third conv unit
//!   s1    stride (2, 4, 4)    [.., E1]          stage 1 (after its LayerNorm)
//!   s2    stride (4, 8, 8)    [.., E2]
//!   s3    stride (8, 16, 16)  [.., E3]
//!   s4    stride (16, 32, 32) [.., E4]          bottleneck
//! decoder, level l = 3, 2, 1, 0 with skips (s3, s2, s1, skip) and h = s4 at the start:
//!   u = ConvTranspose3d(h), kernel = stride = the step between the two resolutions:
//!       (2, 2, 2) for l = 3, 2, 1; (1, 2, 2) for l = 0 (stage 1 → stem skip is anisotropic)
//!       channels → the skip's channels
//!   h = Block(concat[u, skip] along C)                 2·C_skip → C_skip
//! final: u = ConvTranspose3d k2 s2 (stem → final_channels), h = Block(u)   full resolution
//! heads: Conv 1³ (bias) on the final h and on each decoder level's h → K logits
//! ```
//!
//! Block = [Conv 3³ pad 1 (no bias) → InstanceNorm (no affine) → LeakyReLU(0.01)] × 2
//! ([`crate::models::unet::ConvBlock`]; a bias before InstanceNorm is cancelled by its mean).
//!
//! **Concatenation, not addition**, joins a skip: the block's first conv then learns how much of
//! the encoder's features (LayerNorm-scaled tokens) and of the up-sampled decoder features to
//! use, where a sum would force both onto one scale; it is also what nnU-Net and CoTr do. The
//! cost is the first conv's doubled input width.
//!
//! **Outputs** ([`PvtUnet::forward`]) are the logits of every head, full resolution first:
//! strides (1,1,1), (2,2,2), (2,4,4), (4,8,8), (8,16,16) ([`PvtUnet::output_strides`]), for the
//! deep-supervision loss of `segment::loss`. Inference reads index 0.
//!
//! **Names** (`nn::Module`): the encoder under `encoder.` with the authors' names inside
//! (`encoder.patch_embed1.proj.0.weight`, `encoder.block1.0.attn.q.weight`, …), then
//! `decoder.{l}.up.`, `decoder.{l}.block.conv{0,1}.`, `final.up.`, `final.block.conv{0,1}.`,
//! `heads.{i}.` (i = output index). A teacher file (the authors' converted checkpoint with
//! `backbone.`, a cads checkpoint's `model.teacher.` module, or a PVT-UNet file's `encoder.`)
//! loads into the encoder alone with [`PvtUnet::load_encoder`], strictly under its prefix; the
//! DINO heads and the 2D path's tensors are skipped by name.
//!
//! **Freezing**: [`PvtUnet::forward`] with `freeze_encoder` runs the encoder without recording,
//! so it gets no gradient (and costs no backward); [`PvtUnet::encoder_parameters`] and
//! [`PvtUnet::decoder_parameters`] split the parameters for separate learning rates.

use super::pvt::{Modality, PvtConfig, PvtEncoder};
use super::unet::{ConvBlock, UNet3dConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Conv3d, ConvInit, ConvTranspose3d, LoadOptions, LoadReport, Module, StateEntry};
use crate::ops::{Conv3dConfig, ConvTranspose3dConfig};
use crate::tensor::Tensor;
use crate::util::Rng;

/// Total stride of the network per axis (D, H, W): every input extent is a multiple of it.
pub const TOTAL_STRIDE: [usize; 3] = [16, 32, 32];

/// Encoder, decoder width and head settings of a [`PvtUnet`].
#[derive(Clone, Debug, PartialEq)]
pub struct PvtUnetConfig {
    /// The encoder (its image path is never built: PVT-UNet is volume-only).
    pub encoder: PvtConfig,
    /// Output classes K (background included).
    pub classes: usize,
    /// Channels of the full-resolution block after the final up-sampling.
    pub final_channels: usize,
    /// LeakyReLU slope of the decoder blocks (nnU-Net: 0.01).
    pub leaky_slope: f32,
    /// InstanceNorm eps of the decoder blocks (nnU-Net: 1e-5).
    pub eps: f32,
    /// Seed of the decoder's initialisation (the encoder has its own in `encoder.seed`).
    pub seed: u64,
}

impl Default for PvtUnetConfig {
    /// PVTv2-b1 encoder (CADS), 2 classes, 32 full-resolution channels.
    fn default() -> Self {
        PvtUnetConfig {
            encoder: PvtConfig {
                with_image_path: false,
                ..PvtConfig::default()
            },
            classes: 2,
            final_channels: 32,
            leaky_slope: 0.01,
            eps: 1e-5,
            seed: 0,
        }
    }
}

impl PvtUnetConfig {
    /// A few-thousand-parameter network for tests and lavapipe runs: encoder widths
    /// (8, 16, 32, 32), one block per stage, 8 stem and final channels.
    pub fn tiny(classes: usize) -> PvtUnetConfig {
        PvtUnetConfig {
            encoder: PvtConfig {
                in_channels: 1,
                stem_channels: 8,
                embed_dims: [8, 16, 32, 32],
                heads: [1, 2, 4, 4],
                mlp_ratios: [2, 2, 2, 2],
                depths: [1, 1, 1, 1],
                sr_ratios: [4, 2, 1, 1],
                drop_path_rate: 0.0,
                with_image_path: false,
                seed: 0,
            },
            classes,
            final_channels: 8,
            leaky_slope: 0.01,
            eps: 1e-5,
            seed: 0,
        }
    }
}

/// One decoder level: up-sampling to the skip's grid, then a block over the concatenation.
pub struct DecoderLevel {
    pub up: ConvTranspose3d,
    pub block: ConvBlock,
}

impl Module for DecoderLevel {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.up.state(&format!("{prefix}up."), out);
        self.block.state(&format!("{prefix}block."), out);
    }
}

/// The network; see the module docs.
pub struct PvtUnet {
    pub config: PvtUnetConfig,
    pub encoder: PvtEncoder,
    /// `decoder[l]` joins skip l (0: stem skip, 1..3: stages 1..3) with the level below.
    pub decoder: Vec<DecoderLevel>,
    /// Up-sampling from the stem skip's grid to full resolution and its block.
    pub final_level: DecoderLevel,
    /// `heads[i]`: logits at output index i (0 = full resolution, then decoder levels 0..3).
    pub heads: Vec<Conv3d>,
}

/// The step between decoder level l's grid and the grid below it.
fn level_step(l: usize) -> [usize; 3] {
    if l == 0 {
        [1, 2, 2]
    } else {
        [2, 2, 2]
    }
}

fn up(step: [usize; 3]) -> ConvTranspose3dConfig {
    ConvTranspose3dConfig {
        kernel: step,
        stride: step,
        ..ConvTranspose3dConfig::up2()
    }
}

impl PvtUnet {
    pub fn new(gpu: &Gpu, config: PvtUnetConfig) -> Result<PvtUnet> {
        let op = "PvtUnet::new";
        if config.classes < 2 || config.final_channels == 0 || config.encoder.in_channels == 0 {
            return Err(Error::invalid(
                op,
                "classes >= 2 (background included), final_channels >= 1, in_channels >= 1",
                format!(
                    "classes {}, final_channels {}, in_channels {}",
                    config.classes, config.final_channels, config.encoder.in_channels
                ),
            ));
        }
        let mut enc_cfg = config.encoder.clone();
        enc_cfg.with_image_path = false;
        let encoder = PvtEncoder::new(gpu, enc_cfg)?;
        let block_cfg = UNet3dConfig {
            in_channels: config.encoder.in_channels,
            classes: config.classes,
            widths: vec![config.final_channels],
            leaky_slope: config.leaky_slope,
            eps: config.eps,
        };
        let e = config.encoder.embed_dims;
        // Skip channels of decoder levels 0..3 (stem, stages 1..3); level l's input comes from
        // the level below: stage 4 for l = 3, decoder level l + 1 otherwise.
        let skip = [config.encoder.stem_channels, e[0], e[1], e[2]];
        let below = [skip[1], skip[2], skip[3], e[3]];
        let mut rng = Rng::new(config.seed);
        let mut decoder = Vec::with_capacity(4);
        for l in 0..4 {
            decoder.push(DecoderLevel {
                up: ConvTranspose3d::new(
                    gpu,
                    &mut rng,
                    below[l],
                    skip[l],
                    up(level_step(l)),
                    true,
                    ConvInit::TorchDefault,
                )?,
                block: ConvBlock::new(gpu, &mut rng, 2 * skip[l], skip[l], 1, &block_cfg)?,
            });
        }
        let f = config.final_channels;
        let final_level = DecoderLevel {
            up: ConvTranspose3d::new(
                gpu,
                &mut rng,
                skip[0],
                f,
                up([2, 2, 2]),
                true,
                ConvInit::TorchDefault,
            )?,
            block: ConvBlock::new(gpu, &mut rng, f, f, 1, &block_cfg)?,
        };
        let head_in = [f, skip[0], skip[1], skip[2], skip[3]];
        let heads = head_in
            .iter()
            .map(|&c| {
                Conv3d::new(
                    gpu,
                    &mut rng,
                    c,
                    config.classes,
                    Conv3dConfig::cube(1, 1, 0),
                    true,
                    ConvInit::TorchDefault,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PvtUnet {
            config,
            encoder,
            decoder,
            final_level,
            heads,
        })
    }

    /// Stride of each output (index 0 = full resolution) relative to the input, per axis.
    pub fn output_strides() -> [[usize; 3]; 5] {
        [[1, 1, 1], [2, 2, 2], [2, 4, 4], [4, 8, 8], [8, 16, 16]]
    }

    /// The nearest input extents the network accepts (multiples of [`TOTAL_STRIDE`], at least
    /// one stride per axis).
    pub fn nearest_valid(dhw: [usize; 3]) -> [usize; 3] {
        std::array::from_fn(|a| {
            let t = TOTAL_STRIDE[a];
            ((dhw[a] + t / 2) / t).max(1) * t
        })
    }

    /// Check `x` is `[N, D, H, W, Cin]` with D, H, W multiples of the total stride; the error
    /// names the nearest valid extents.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let op = "PvtUnet::forward";
        let cin = self.config.encoder.in_channels;
        match *x.shape() {
            [n, d, h, w, c] if c == cin && n > 0 => {
                let dhw = [d, h, w];
                if (0..3).all(|a| dhw[a] > 0 && dhw[a] % TOTAL_STRIDE[a] == 0) {
                    Ok(())
                } else {
                    Err(Error::invalid(
                        op,
                        format!(
                            "D, H, W multiples of the total stride {TOTAL_STRIDE:?} \
                             (nearest valid size: {:?})",
                            Self::nearest_valid(dhw)
                        ),
                        format!("{dhw:?}"),
                    ))
                }
            }
            _ => Err(Error::shape(op, format!("[N, D, H, W, {cin}]"), x.shape())),
        }
    }

    /// Logits of every head, full resolution first (see [`PvtUnet::output_strides`]):
    /// `[N, D/s_D, H/s_H, W/s_W, K]`. `training` turns drop-path on (drawn from `rng`);
    /// `freeze_encoder` runs the encoder without recording, so no gradient reaches it.
    pub fn forward(
        &self,
        x: &Tensor,
        training: bool,
        freeze_encoder: bool,
        rng: &mut Rng,
    ) -> Result<Vec<Tensor>> {
        self.check_input(x)?;
        let enc = if freeze_encoder {
            x.gpu()
                .no_grad(|| self.encoder.forward(x, Modality::Volume, training, rng))?
        } else {
            self.encoder.forward(x, Modality::Volume, training, rng)?
        };
        let mut outs = Vec::with_capacity(5);
        let mut h = enc.stages[3].clone(); // [N, D/16, H/32, W/32, E4]
        for l in (0..4).rev() {
            let skip = if l == 0 {
                &enc.skip
            } else {
                &enc.stages[l - 1]
            };
            let level = &self.decoder[l];
            let u = level.up.forward(&h)?; // the skip's grid, its channels
            if u.shape() != skip.shape() {
                return Err(Error::shape(
                    "PvtUnet::forward (skip)",
                    skip.shape(),
                    u.shape(),
                ));
            }
            let joined = Tensor::concat(&[&u, skip], -1)?; // [.., 2·C_skip]
            h = level.block.forward(&joined)?;
            outs.push(self.heads[l + 1].forward(&h)?);
        }
        let u = self.final_level.up.forward(&h)?; // [N, D, H, W, final]
        h = self.final_level.block.forward(&u)?;
        outs.push(self.heads[0].forward(&h)?);
        outs.reverse();
        Ok(outs)
    }

    /// Full-resolution logits only, without recording (inference).
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let mut rng = Rng::new(0);
        let mut outs = x.gpu().no_grad(|| self.forward(x, false, true, &mut rng))?;
        Ok(outs.swap_remove(0))
    }

    /// The encoder's parameters, named as in [`Module::named_parameters`] (`encoder.…`).
    pub fn encoder_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.encoder.parameters("encoder.", &mut out);
        out
    }

    /// Every other parameter (decoder levels, final level, heads), named.
    pub fn decoder_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (l, level) in self.decoder.iter().enumerate() {
            level.parameters(&format!("decoder.{l}."), &mut out);
        }
        self.final_level.parameters("final.", &mut out);
        for (i, head) in self.heads.iter().enumerate() {
            head.parameters(&format!("heads.{i}."), &mut out);
        }
        out
    }

    /// Initialise the encoder from a teacher safetensors file, strictly under its prefix:
    /// `backbone.` (the authors' teacher converted by scripts/convert_cads_checkpoint.py),
    /// `model.teacher.backbone.` / `model.teacher.` (a cads checkpoint), `encoder.` (a PVT-UNet
    /// file), or none (a bare encoder file), whichever holds `block1.0.attn.q.weight`. Keys
    /// outside the prefix (heads, the student, the optimizer), the DINO head under it
    /// (`head`) and the 2D path (`_2D`) are skipped; every volume-path tensor must be there with
    /// its shape, or nothing is written.
    pub fn load_encoder(&self, path: &str) -> Result<LoadReport> {
        let op = "PvtUnet::load_encoder";
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            op,
            path: path.to_string(),
            source,
        })?;
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::BadFile {
            op,
            path: path.to_string(),
            problem: e.to_string(),
        })?;
        let names = file.names();
        const PREFIXES: [&str; 5] = [
            "backbone.",
            "model.teacher.backbone.",
            "model.teacher.",
            "encoder.",
            "",
        ];
        let probe = "block1.0.attn.q.weight";
        let prefix = PREFIXES
            .iter()
            .find(|p| names.iter().any(|n| **n == format!("{p}{probe}")))
            .ok_or_else(|| {
                Error::invalid(
                    op,
                    format!("an encoder under one of the prefixes {PREFIXES:?} ({probe} present)"),
                    format!("{path} with {} keys and none of them", names.len()),
                )
            })?;
        let options = LoadOptions::strict()
            .take_prefix(prefix)
            .skip_prefix("head")
            .skip_containing("_2D");
        crate::nn::load_safetensors_bytes(&self.encoder, &bytes, path, &options)
    }
}

impl Module for PvtUnet {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.encoder.state(&format!("{prefix}encoder."), out);
        for (l, level) in self.decoder.iter().enumerate() {
            level.state(&format!("{prefix}decoder.{l}."), out);
        }
        self.final_level.state(&format!("{prefix}final."), out);
        for (i, head) in self.heads.iter().enumerate() {
            head.state(&format!("{prefix}heads.{i}."), out);
        }
    }
}
