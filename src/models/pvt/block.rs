//! The PVTv2 block: `x += DropPath(SRA(LN(x)))`, `x += DropPath(MLP(LN(x)))` (pre-norm).
//!
//! SRA: q = Linear(C, C)(x); keys/values from `LN(Conv(kernel = stride = sr)(x))` when sr > 1
//! (else from x), kv = Linear(C, 2C); softmax attention with scale head_dim^-0.5; proj.
//! MLP: fc1 (C → rC), depthwise Conv 3³ (pad 1, bias), GELU, fc2 (rC → C). Images run the same
//! 3D depthwise kernel with D = 1, so only its middle slice touches data.

use super::config::{Modality, BLOCK_EPS, EMBED_EPS};
use super::conv::ConvUnit;
use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::{drop_path, LayerNorm, Linear, LinearInit, Module, StateEntry, MIXED_MIN_ROWS};
use crate::ops::{self, Conv3dConfig};
use crate::tensor::Tensor;
use crate::util::Rng;

/// Spatial grid of a token sequence: (D, H, W); D = 1 for images.
pub type Grid3 = [usize; 3];

pub struct Block {
    pub norm1: LayerNorm,
    pub q: Linear,
    pub kv: Linear,
    pub proj: Linear,
    /// (volume SR conv, image SR conv, SR LayerNorm) when sr > 1.
    pub sr: Option<(ConvUnit, Option<ConvUnit>, LayerNorm)>,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub dwconv: ConvUnit,
    pub fc2: Linear,
    pub heads: usize,
    pub drop_path: f32,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        dim: usize,
        heads: usize,
        mlp_ratio: usize,
        sr: usize,
        drop_path: f32,
        with_image: bool,
        rng: &mut Rng,
    ) -> Result<Block> {
        let lin =
            |i, o, rng: &mut Rng| Linear::new(gpu, i, o, true, LinearInit::TruncNormal(0.02), rng);
        let hidden = dim * mlp_ratio;
        let sr = if sr > 1 {
            let vol = ConvUnit::new(
                gpu,
                dim,
                dim,
                Conv3dConfig::cube(sr, sr, 0),
                true,
                false,
                rng,
            )?;
            let img = if with_image {
                let cfg = Conv3dConfig::new([1, sr, sr]).stride([1, sr, sr]);
                Some(ConvUnit::new(gpu, dim, dim, cfg, true, true, rng)?)
            } else {
                None
            };
            Some((vol, img, LayerNorm::new(gpu, dim, EMBED_EPS)?))
        } else {
            None
        };
        Ok(Block {
            norm1: LayerNorm::new(gpu, dim, BLOCK_EPS)?,
            q: lin(dim, dim, rng)?,
            kv: lin(dim, 2 * dim, rng)?,
            proj: lin(dim, dim, rng)?,
            sr,
            norm2: LayerNorm::new(gpu, dim, BLOCK_EPS)?,
            fc1: lin(dim, hidden, rng)?,
            dwconv: ConvUnit::new(
                gpu,
                hidden,
                hidden,
                Conv3dConfig::cube(3, 1, 1).groups(hidden),
                true,
                false,
                rng,
            )?,
            fc2: lin(hidden, dim, rng)?,
            heads,
            drop_path,
        })
    }

    /// Spatial-reduction attention on tokens `[N, L, C]` laid out on `grid`.
    fn attention(&self, x: &Tensor, grid: Grid3, modality: Modality) -> Result<Tensor> {
        let [n, _, c] = *x.shape() else {
            unreachable!("tokens are [N, L, C]")
        };
        let q = self.q.forward(x)?;
        let kv_in = match &self.sr {
            None => x.clone(),
            Some((vol, img, norm)) => {
                let reduced = match modality {
                    Modality::Volume => {
                        vol.forward(&x.reshape(&[n, grid[0], grid[1], grid[2], c])?)?
                    }
                    Modality::Image => {
                        let img = img.as_ref().ok_or_else(|| {
                            crate::Error::invalid(
                                "PVT block",
                                "an encoder built with the image path",
                                "a volume-only encoder",
                            )
                        })?;
                        img.forward(&x.reshape(&[n, grid[1], grid[2], c])?)?
                    }
                };
                let m = reduced.numel() / (n * c);
                norm.forward(&reduced.reshape(&[n, m, c])?)?
            }
        };
        let kv = self.kv.forward(&kv_in)?;
        let k = kv.slice(-1, 0, c)?;
        let v = kv.slice(-1, c, c)?;
        let a = ops::attention(&q, &k, &v, self.heads)?;
        self.proj.forward(&a)
    }

    fn mlp(&self, x: &Tensor, grid: Grid3) -> Result<Tensor> {
        let [n, l, _] = *x.shape() else {
            unreachable!("tokens are [N, L, C]")
        };
        // Under mixed precision: one op keeping the f16 fc1 output alone, its hidden gradients in
        // f16 (ops::dw_mlp_mixed); the layers' own path below is the f32 one.
        let (hidden, out) = (self.fc1.weight.shape()[1], self.fc2.weight.shape()[1]);
        let dw = &self.dwconv.conv;
        if x.gpu().mixed_precision()
            && n * l >= MIXED_MIN_ROWS
            && ops::dw_mlp_mixed_fits(hidden, out)
            && dw.config == Conv3dConfig::cube(3, 1, 1).groups(hidden)
        {
            return ops::dw_mlp_mixed(
                x,
                grid,
                (&self.fc1.weight, self.fc1.bias.as_ref()),
                (&dw.weight, dw.bias.as_ref()),
                (&self.fc2.weight, self.fc2.bias.as_ref()),
            );
        }
        // Tokens → volume (D = 1 for images), depthwise 3³ conv, back to tokens. fc1's output
        // goes out of scope before fc2 runs: under autocast the conv keeps only its f16
        // rounding, so the f32 tensor (the block's widest) is freed here, not after fc2.
        let h = {
            let h = self.fc1.forward(x)?;
            let hidden = h.shape()[2];
            let vol = h.reshape(&[n, grid[0], grid[1], grid[2], hidden])?;
            self.dwconv
                .forward(&vol)?
                .reshape(&[n, grid[0] * grid[1] * grid[2], hidden])?
        };
        // fc2(GELU(h)) keeping h alone: GELU(h) is made again in backward (ops::gelu_linear).
        self.fc2.forward_gelu(&h)
    }

    pub fn forward(
        &self,
        x: &Tensor,
        grid: Grid3,
        modality: Modality,
        training: bool,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let a = self.attention(&self.norm1.forward(x)?, grid, modality)?;
        let x = ops::add(x, &drop_path(&a, self.drop_path, training, rng)?)?;
        let m = self.mlp(&self.norm2.forward(&x)?, grid)?;
        ops::add(&x, &drop_path(&m, self.drop_path, training, rng)?)
    }
}

impl Block {
    /// Named state of the parts `modality` uses (`None`: all), in the authors' registration
    /// order (`Block`: norm1, attn, norm2, mlp; `Attention`: q, kv, proj, sr_2D, sr, norm), so
    /// the list pairs by position with PyTorch's `state_dict()`.
    pub fn state_of(&self, p: &str, modality: Option<Modality>, out: &mut Vec<StateEntry>) {
        let image = modality != Some(Modality::Volume);
        let volume = modality != Some(Modality::Image);
        self.norm1.state(&format!("{p}norm1."), out);
        self.q.state(&format!("{p}attn.q."), out);
        self.kv.state(&format!("{p}attn.kv."), out);
        self.proj.state(&format!("{p}attn.proj."), out);
        if let Some((vol, img, norm)) = &self.sr {
            if let (Some(img), true) = (img, image) {
                img.state(&format!("{p}attn.sr_2D."), out);
            }
            if volume {
                vol.state(&format!("{p}attn.sr."), out);
            }
            norm.state(&format!("{p}attn.norm."), out);
        }
        self.norm2.state(&format!("{p}norm2."), out);
        self.fc1.state(&format!("{p}mlp.fc1."), out);
        // One depthwise Conv3d for both paths (images run it with D = 1).
        self.dwconv.state(&format!("{p}mlp.dwconv.dwconv."), out);
        self.fc2.state(&format!("{p}mlp.fc2."), out);
    }
}

impl Module for Block {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.state_of(prefix, None, out);
    }
}
