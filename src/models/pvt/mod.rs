//! The PVTv2 encoder of CADS and PVT-UNet, switchable between CT volumes and 2D radiographs
//! (../shared/CADS.md, "Encoder").
//!
//! Volume path: conv stem (Conv 7³ s2 → IN → LReLU → [Conv 3³ → IN → LReLU] ×2 = the stride-2
//! skip → Conv 3³ stride (1, 2, 2)) → tokens → LN; then 4 stages of blocks, each stage after the
//! first opening with a Conv 3³ s2 patch embed → LN, and closing with a LayerNorm. Image path:
//! the same with 2D convs (last stem conv stride 2). Linear layers, LayerNorms and depthwise
//! convs are shared between the paths; stem, patch-embed and SR convs are per modality.
//!
//! Parameter names are the authors' (`models/PVTv2.py` of their public code, read from it; see
//! ../shared/CADS.md "Parameter names"), so their checkpoints load strictly by name:
//! - stem (`OverlapPatchEmbed_first`): the convs of the `proj` Sequential (conv, IN, LReLU) × 3
//!   are `patch_embed1.proj.{0,3,6}`, the stride-(1,2,2) conv is `patch_embed1.proj_next`; the
//!   image path's are `patch_embed1.proj_2D.{0,3,6}` and `patch_embed1.proj_next_2D` (Conv2d);
//! - stages 2-4: `patch_embed{k}.proj` (Conv3d) and `patch_embed{k}.proj_2D` (Conv2d), shared
//!   `patch_embed{k}.norm`;
//! - blocks: `block{k}.{i}.norm1`, `.attn.q`, `.attn.kv`, `.attn.proj`, `.attn.sr` (Conv3d) and
//!   `.attn.sr_2D` (Conv2d) when sr > 1, `.attn.norm`, `.norm2`, `.mlp.fc1`,
//!   `.mlp.dwconv.dwconv` (one depthwise Conv3d for both paths), `.mlp.fc2`; stage norms `norm{k}`.
//!
//! The state is listed in the authors' registration order, i.e. the order of PyTorch's
//! `state_dict()` (which their EMA pairs by position).
//!
//! Memory: with [`PvtEncoder::checkpoint_blocks`] each block's internals (attention, the MLP's
//! hidden activations) are recomputed in backward instead of kept (`nn::checkpoint_module`).

mod block;
mod config;
mod conv;
mod import;

pub use crate::nn::LoadReport;
pub use block::{Block, Grid3};
pub use config::{Modality, PvtConfig, BLOCK_EPS, EMBED_EPS, LEAKY_SLOPE};
pub use conv::ConvUnit;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{self, LayerNorm, Module, StateEntry};
use crate::ops::{self, Conv3dConfig};
use crate::tensor::Tensor;
use crate::util::Rng;
use std::sync::Arc;

/// The stem's convolutions for one modality.
pub struct Stem {
    pub convs: [ConvUnit; 4],
}

impl Stem {
    fn new(gpu: &Gpu, cfg: &PvtConfig, image: bool, rng: &mut Rng) -> Result<Stem> {
        let (s, e) = (cfg.stem_channels, cfg.embed_dims[0]);
        let k = |k: usize, st: [usize; 3], p: usize| {
            if image {
                Conv3dConfig::new([1, k, k])
                    .stride([1, st[1], st[2]])
                    .padding([0, p, p])
            } else {
                Conv3dConfig::new([k, k, k]).stride(st).padding([p, p, p])
            }
        };
        // Volume: stride (1, 2, 2) on top of the first conv's 2 gives (2, 4, 4); images: 2 × 2 = 4.
        let last_stride = [1, 2, 2];
        Ok(Stem {
            convs: [
                ConvUnit::new(
                    gpu,
                    cfg.in_channels,
                    s,
                    k(7, [2, 2, 2], 3),
                    true,
                    image,
                    rng,
                )?,
                ConvUnit::new(gpu, s, s, k(3, [1, 1, 1], 1), false, image, rng)?,
                ConvUnit::new(gpu, s, s, k(3, [1, 1, 1], 1), false, image, rng)?,
                ConvUnit::new(gpu, s, e, k(3, last_stride, 1), true, image, rng)?,
            ],
        })
    }

    /// (stride-2 skip, stem output before tokenisation).
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for conv in &self.convs[..3] {
            h = conv.forward(&h)?;
            h = ops::instance_norm_leaky_relu(&h, None, EMBED_EPS, LEAKY_SLOPE)?;
        }
        let out = self.convs[3].forward(&h)?;
        Ok((h, out))
    }
}

impl Module for Stem {
    /// `proj{sfx}.{0,3,6}.` (the Sequential's conv indices; IN and LReLU hold no state) and
    /// `proj_next{sfx}.`, with sfx = `_2D` for the image stem.
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        let sfx = if self.convs[0].image { "_2D" } else { "" };
        for (i, conv) in self.convs[..3].iter().enumerate() {
            conv.state(&format!("{prefix}proj{sfx}.{}.", 3 * i), out);
        }
        self.convs[3].state(&format!("{prefix}proj_next{sfx}."), out);
    }
}

/// Per-stage outputs of the encoder.
pub struct EncoderOutput {
    /// Stem output at stride 2 (`[N, D/2, H/2, W/2, stem]` or `[N, H/2, W/2, stem]`).
    pub skip: Tensor,
    /// Stage 1..4 outputs after the stage norm, as volumes `[N, D_k, H_k, W_k, C_k]` or images
    /// `[N, H_k, W_k, C_k]`.
    pub stages: Vec<Tensor>,
}

pub struct PvtEncoder {
    pub config: PvtConfig,
    pub stem: Stem,
    pub stem_image: Option<Stem>,
    pub embed_norm1: LayerNorm,
    /// Patch embeds of stages 2..4: (volume conv, image conv, LayerNorm).
    pub embeds: Vec<(ConvUnit, Option<ConvUnit>, LayerNorm)>,
    /// Per stage, its blocks (shared with the backward closures of checkpointed calls).
    pub blocks: Vec<Vec<Arc<Block>>>,
    pub norms: Vec<LayerNorm>,
    /// Activation checkpointing of the blocks (`nn::checkpoint_module`): a recorded forward
    /// keeps only each block's input and recomputes its internals in backward. Same values and
    /// gradients; less memory, one more block forward per step. Not part of the state.
    pub checkpoint_blocks: bool,
}

impl PvtEncoder {
    pub fn new(gpu: &Gpu, config: PvtConfig) -> Result<PvtEncoder> {
        config.validate()?;
        let mut rng = Rng::new(config.seed);
        let stem = Stem::new(gpu, &config, false, &mut rng)?;
        let stem_image = if config.with_image_path {
            Some(Stem::new(gpu, &config, true, &mut rng)?)
        } else {
            None
        };
        let mut embeds = Vec::new();
        for s in 1..4 {
            let (cin, cout) = (config.embed_dims[s - 1], config.embed_dims[s]);
            let vol = ConvUnit::new(
                gpu,
                cin,
                cout,
                Conv3dConfig::cube(3, 2, 1),
                true,
                false,
                &mut rng,
            )?;
            let img = if config.with_image_path {
                let cfg = Conv3dConfig::new([1, 3, 3])
                    .stride([1, 2, 2])
                    .padding([0, 1, 1]);
                Some(ConvUnit::new(gpu, cin, cout, cfg, true, true, &mut rng)?)
            } else {
                None
            };
            embeds.push((vol, img, LayerNorm::new(gpu, cout, EMBED_EPS)?));
        }
        let rates = config.drop_path_rates();
        let mut blocks = Vec::new();
        let mut b = 0;
        for s in 0..4 {
            let mut stage = Vec::new();
            for _ in 0..config.depths[s] {
                stage.push(Arc::new(Block::new(
                    gpu,
                    config.embed_dims[s],
                    config.heads[s],
                    config.mlp_ratios[s],
                    config.sr_ratios[s],
                    rates[b],
                    config.with_image_path,
                    &mut rng,
                )?));
                b += 1;
            }
            blocks.push(stage);
        }
        let norms = (0..4)
            .map(|s| LayerNorm::new(gpu, config.embed_dims[s], BLOCK_EPS))
            .collect::<Result<Vec<_>>>()?;
        Ok(PvtEncoder {
            embed_norm1: LayerNorm::new(gpu, config.embed_dims[0], EMBED_EPS)?,
            config,
            stem,
            stem_image,
            embeds,
            blocks,
            norms,
            checkpoint_blocks: false,
        })
    }

    /// Check the input against the modality and the strides. The stem output (the decoder's
    /// first skip) must be exact, so D, H, W must be multiples of the stem stride (2, 4, 4); every
    /// later stage rounds up (k3 s2 p1), which is how the CADS view 16×48×48 reaches 1×2×2 at
    /// stage 4; and each axis must be at least the total stride (16, 32, 32) so stage 4 is
    /// not empty. PVT-UNet adds the stricter divisibility its skip connections need.
    fn check_input(&self, x: &Tensor, modality: Modality) -> Result<()> {
        let op = "PvtEncoder::forward";
        let cin = self.config.in_channels;
        let total = self.config.total_stride();
        let stem = [2, 4, 4];
        let check = |dims: &[usize], axes: &[usize]| -> Result<()> {
            for (&v, &a) in dims.iter().zip(axes) {
                if v % stem[a] != 0 || v < total[a] {
                    let want: Vec<String> = axes
                        .iter()
                        .map(|&a| format!("a multiple of {} and at least {}", stem[a], total[a]))
                        .collect();
                    return Err(Error::invalid(
                        op,
                        format!(
                            "spatial extents {} (stem stride {stem:?}, total stride {total:?})",
                            want.join(" / ")
                        ),
                        format!("{dims:?}"),
                    ));
                }
            }
            Ok(())
        };
        match (modality, x.shape()) {
            (Modality::Volume, &[_, d, h, w, c]) if c == cin => check(&[d, h, w], &[0, 1, 2]),
            (Modality::Image, &[_, h, w, c]) if c == cin => {
                if self.stem_image.is_none() {
                    return Err(Error::invalid(
                        op,
                        "an encoder built with the image path",
                        "a volume-only encoder",
                    ));
                }
                check(&[h, w], &[1, 2])
            }
            (Modality::Volume, s) => Err(Error::shape(op, format!("[N, D, H, W, {cin}]"), s)),
            (Modality::Image, s) => Err(Error::shape(op, format!("[N, H, W, {cin}]"), s)),
        }
    }

    /// Run the encoder. `training` turns drop-path on (drawn from `rng`).
    pub fn forward(
        &self,
        x: &Tensor,
        modality: Modality,
        training: bool,
        rng: &mut Rng,
    ) -> Result<EncoderOutput> {
        self.check_input(x, modality)?;
        let stem = match modality {
            Modality::Volume => &self.stem,
            Modality::Image => self.stem_image.as_ref().expect("checked above"),
        };
        let (skip, h) = stem.forward(x)?;
        let mut stages = Vec::with_capacity(4);
        let mut vol = h;
        for s in 0..4 {
            if s > 0 {
                let (conv_v, conv_i, _) = &self.embeds[s - 1];
                vol = match modality {
                    Modality::Volume => conv_v.forward(&vol)?,
                    Modality::Image => conv_i.as_ref().expect("checked above").forward(&vol)?,
                };
            }
            let spatial = &vol.shape()[1..vol.rank() - 1];
            let grid: Grid3 = if spatial.len() == 3 {
                [spatial[0], spatial[1], spatial[2]]
            } else {
                [1, spatial[0], spatial[1]]
            };
            let (n, c) = (vol.shape()[0], self.config.embed_dims[s]);
            let l = grid[0] * grid[1] * grid[2];
            let norm = if s == 0 {
                &self.embed_norm1
            } else {
                &self.embeds[s - 1].2
            };
            let mut tokens = norm.forward(&vol.reshape(&[n, l, c])?)?;
            for block in &self.blocks[s] {
                tokens = if self.checkpoint_blocks {
                    nn::checkpoint_module(block, &[&tokens], rng, move |b, x, rng| {
                        b.forward(&x[0], grid, modality, training, rng)
                    })?
                } else {
                    block.forward(&tokens, grid, modality, training, rng)?
                };
            }
            let out = self.norms[s].forward(&tokens)?;
            let out_shape = match modality {
                Modality::Volume => vec![n, grid[0], grid[1], grid[2], c],
                Modality::Image => vec![n, grid[1], grid[2], c],
            };
            vol = out.reshape(&out_shape)?;
            stages.push(vol.clone());
        }
        Ok(EncoderOutput { skip, stages })
    }

    /// Named state of the parts `modality` uses (`None`: everything), in PyTorch's
    /// `state_dict()` order: per stage, the patch embed (stage 1: `proj`, `proj_next`, `proj_2D`,
    /// `proj_next_2D`, `norm`; later: `proj`, `norm`, `proj_2D`), the blocks, the stage norm.
    pub fn state_of(&self, p: &str, modality: Option<Modality>, out: &mut Vec<StateEntry>) {
        let image = modality != Some(Modality::Volume);
        let volume = modality != Some(Modality::Image);
        if volume {
            self.stem.state(&format!("{p}patch_embed1."), out);
        }
        if let (Some(stem), true) = (&self.stem_image, image) {
            stem.state(&format!("{p}patch_embed1."), out);
        }
        self.embed_norm1
            .state(&format!("{p}patch_embed1.norm."), out);
        for s in 0..4 {
            if s > 0 {
                let (vol, img, norm) = &self.embeds[s - 1];
                let k = s + 1;
                if volume {
                    vol.state(&format!("{p}patch_embed{k}.proj."), out);
                }
                norm.state(&format!("{p}patch_embed{k}.norm."), out);
                if let (Some(img), true) = (img, image) {
                    img.state(&format!("{p}patch_embed{k}.proj_2D."), out);
                }
            }
            for (i, block) in self.blocks[s].iter().enumerate() {
                block.state_of(&format!("{p}block{}.{i}.", s + 1), modality, out);
            }
            self.norms[s].state(&format!("{p}norm{}.", s + 1), out);
        }
    }

    /// Parameters of one modality's path (shared ones included), by name; `None`: all.
    pub fn named_parameters(&self, modality: Option<Modality>) -> Vec<(String, Tensor)> {
        let mut state = Vec::new();
        self.state_of("", modality, &mut state);
        state
            .into_iter()
            .filter(|e| e.kind == crate::nn::StateKind::Parameter)
            .map(|e| (e.name, e.tensor))
            .collect()
    }

    /// Total parameter count of one modality's path (or of everything with `None`).
    pub fn parameter_count(&self, modality: Option<Modality>) -> usize {
        self.named_parameters(modality)
            .iter()
            .map(|(_, t)| t.numel())
            .sum()
    }
}

impl Module for PvtEncoder {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.state_of(prefix, None, out);
    }
}
