//! Reference PVTv2 encoder (../shared/CADS.md, "Encoder"), volume or image path:
//!
//! ```text
//! stem:   h = LReLU(IN(Conv₀(x)))  Conv₀ 7³ s2 p3 (bias)       IN: no affine, eps 1e-5
//!         h = LReLU(IN(Conv₃(h)))  Conv 3³ p1 (no bias)
//!         h = LReLU(IN(Conv₆(h)))  → skip (stride 2)
//!         e = Conv_next(h)         3³ stride (1, 2, 2) p1 (bias)   net stride (2, 4, 4)
//! stage k = 1..4:
//!         e = Conv_k(vol)          3³ s2 p1 (bias), k > 1
//!         t = LN_embed(e as tokens [N, L, C])                (eps 1e-5)
//!         t = Block(t) for each block of the stage
//!         out_k = LN_k(t) as a volume [N, D, H, W, C]       (eps 1e-6); vol = out_k
//! ```
//! Images run every conv with kernel `[1, k, k]` (stride and padding 1/0 along D) on
//! `[N, 1, H, W, C]` and read the `_2D` convs; their outputs are reported as `[N, H, W, C]`.
//! Names are the authors' (`patch_embed1.proj.{0,3,6}`, `patch_embed1.proj_next`,
//! `patch_embed{k}.proj`; images `proj_2D`, `proj_next_2D`), see `models::pvt`.

use super::{
    block_backward, block_forward, conv, conv_backward, layer_norm, layer_norm_backward, reshape,
    BlockCache, BlockSpec, Grads, Params, BLOCK_EPS, EMBED_EPS, LEAKY_SLOPE, OP,
};
use crate::error::{Error, Result};
use crate::ops::{Conv3dConfig, UnaryOp};
use crate::reference::{elementwise, norm, Array};

/// The encoder's shape settings (the rest is read off the parameters).
#[derive(Clone, Copy, Debug)]
pub struct EncoderSpec {
    pub heads: [usize; 4],
    pub depths: [usize; 4],
    pub sr_ratios: [usize; 4],
    /// Image path (`[N, H, W, Cin]` input, `_2D` convs).
    pub image: bool,
}

impl EncoderSpec {
    /// A conv of kernel k, stride s, padding p along (D, H, W), flattened to D = 1 for images.
    fn conv(&self, k: usize, s: [usize; 3], pad: usize) -> Conv3dConfig {
        if self.image {
            Conv3dConfig::new([1, k, k])
                .stride([1, s[1], s[2]])
                .padding([0, pad, pad])
        } else {
            Conv3dConfig::new([k; 3]).stride(s).padding([pad; 3])
        }
    }
    fn suffix(&self) -> &'static str {
        if self.image {
            "_2D"
        } else {
            ""
        }
    }
    /// Stem conv `i` (0..4): name and geometry.
    fn stem(&self, i: usize) -> (String, Conv3dConfig) {
        let cfg = match i {
            0 => self.conv(7, [2; 3], 3),
            3 => self.conv(3, [1, 2, 2], 1),
            _ => self.conv(3, [1; 3], 1),
        };
        let name = if i == 3 {
            format!("patch_embed1.proj_next{}.", self.suffix())
        } else {
            format!("patch_embed1.proj{}.{}.", self.suffix(), 3 * i)
        };
        (name, cfg)
    }
    /// Patch-embed conv opening stage `s` (1..4, zero-based).
    fn embed(&self, s: usize) -> (String, Conv3dConfig) {
        (
            format!("patch_embed{}.proj{}.", s + 1, self.suffix()),
            self.conv(3, [2; 3], 1),
        )
    }
}

/// The skip and the four stage outputs, shaped as the GPU encoder's.
#[derive(Clone, Debug)]
pub struct EncoderOutput {
    pub skip: Array,
    pub stages: Vec<Array>,
}

struct StemLayer {
    input: Array,
    /// Conv output before the InstanceNorm.
    conv_out: Array,
    /// InstanceNorm output before the leaky ReLU.
    normed: Array,
}

struct Stage {
    /// Input volume of the patch-embed conv (stages 2..4).
    embed_in: Option<Array>,
    /// Conv output as tokens, before the embed LayerNorm.
    embedded: Array,
    /// 5-D shape of the conv output.
    volume_shape: Vec<usize>,
    blocks: Vec<BlockCache>,
    /// Tokens before the stage norm.
    last: Array,
}

/// Intermediates of [`encoder_forward`] for [`encoder_backward`].
pub struct EncoderCache {
    x_shape: Vec<usize>,
    stem: Vec<StemLayer>,
    /// Input of the last stem conv (the skip, 5-D).
    stem_last_in: Array,
    stages: Vec<Stage>,
}

fn block_spec(spec: &EncoderSpec, s: usize) -> BlockSpec {
    BlockSpec {
        heads: spec.heads[s],
        sr: spec.sr_ratios[s],
        image: spec.image,
    }
}

/// 5-D `[N, D, H, W, C]` → the reported shape (`[N, H, W, C]` for images).
fn reported(spec: &EncoderSpec, v: &Array) -> Array {
    if spec.image {
        let s = &v.shape;
        reshape(v, &[s[0], s[2], s[3], s[4]])
    } else {
        v.clone()
    }
}

/// Run the encoder on `x` (`[N, D, H, W, Cin]`, or `[N, H, W, Cin]` for images).
pub fn encoder_forward(
    p: &Params,
    spec: &EncoderSpec,
    x: &Array,
) -> Result<(EncoderOutput, EncoderCache)> {
    let rank = if spec.image { 4 } else { 5 };
    if x.shape.len() != rank {
        return Err(Error::shape(
            OP,
            if spec.image {
                "[N, H, W, Cin]"
            } else {
                "[N, D, H, W, Cin]"
            },
            &x.shape,
        ));
    }
    let mut vol = if spec.image {
        let s = &x.shape;
        reshape(x, &[s[0], 1, s[1], s[2], s[3]])
    } else {
        x.clone()
    };
    let mut stem = Vec::new();
    for i in 0..3 {
        let (name, cfg) = spec.stem(i);
        let conv_out = conv(p, &name, &vol, &cfg)?;
        let normed = norm::instance_norm(&conv_out, None, EMBED_EPS);
        let next = elementwise::unary(UnaryOp::LeakyRelu(LEAKY_SLOPE), &normed);
        stem.push(StemLayer {
            input: vol,
            conv_out,
            normed,
        });
        vol = next;
    }
    let skip = vol.clone();
    let (name, cfg) = spec.stem(3);
    vol = conv(p, &name, &skip, &cfg)?;
    let mut stages = Vec::new();
    let mut outputs = Vec::new();
    for s in 0..4 {
        let embed_in = if s > 0 {
            let (name, cfg) = spec.embed(s);
            let input = vol;
            vol = conv(p, &name, &input, &cfg)?;
            Some(input)
        } else {
            None
        };
        let sh = vol.shape.clone();
        let grid = [sh[1], sh[2], sh[3]];
        let (n, l, c) = (sh[0], sh[1] * sh[2] * sh[3], sh[4]);
        // [N, D, H, W, C] → tokens [N, L, C]
        let embedded = reshape(&vol, &[n, l, c]);
        let mut t = layer_norm(
            p,
            &format!("patch_embed{}.norm.", s + 1),
            &embedded,
            EMBED_EPS,
        )?;
        let mut blocks = Vec::new();
        for i in 0..spec.depths[s] {
            let (y, cache) = block_forward(
                p,
                &format!("block{}.{i}.", s + 1),
                &block_spec(spec, s),
                &t,
                grid,
            )?;
            blocks.push(cache);
            t = y;
        }
        let out = layer_norm(p, &format!("norm{}.", s + 1), &t, BLOCK_EPS)?;
        vol = reshape(&out, &sh);
        outputs.push(reported(spec, &vol));
        stages.push(Stage {
            embed_in,
            embedded,
            volume_shape: sh,
            blocks,
            last: t,
        });
    }
    let cache = EncoderCache {
        x_shape: x.shape.clone(),
        stem,
        stem_last_in: skip.clone(),
        stages,
    };
    Ok((
        EncoderOutput {
            skip: reported(spec, &skip),
            stages: outputs,
        },
        cache,
    ))
}

/// Backward of [`encoder_forward`] given dL/d(skip) and dL/d(stage k) in the reported shapes:
/// returns dL/dx and every parameter's gradient. A stage's output feeds both the loss and the
/// next stage, so its gradient is the sum of the two.
pub fn encoder_backward(
    p: &Params,
    spec: &EncoderSpec,
    cache: &EncoderCache,
    g_skip: &Array,
    g_stages: &[Array],
) -> Result<(Array, Grads)> {
    let mut grads = Grads::default();
    if g_stages.len() != 4 || g_skip.numel() != cache.stem_last_in.numel() {
        return Err(Error::invalid(
            OP,
            "a gradient for the skip and for each of the 4 stages",
            format!("{} stage gradients", g_stages.len()),
        ));
    }
    // Gradient reaching stage s's output volume from stage s + 1's patch embed.
    let mut from_next: Option<Array> = None;
    let mut g_stem_out = Array::zeros(&[0]);
    for s in (0..4).rev() {
        let st = &cache.stages[s];
        let (n, l, c) = (st.last.shape[0], st.last.shape[1], st.last.shape[2]);
        if g_stages[s].numel() != n * l * c {
            return Err(Error::shape(OP, [n, l, c], &g_stages[s].shape));
        }
        let mut g = reshape(&g_stages[s], &[n, l, c]);
        if let Some(extra) = &from_next {
            g = super::add(&g, &reshape(extra, &[n, l, c]));
        }
        g = layer_norm_backward(
            p,
            &format!("norm{}.", s + 1),
            &st.last,
            BLOCK_EPS,
            &g,
            &mut grads,
        )?;
        for (i, bc) in st.blocks.iter().enumerate().rev() {
            g = block_backward(
                p,
                &format!("block{}.{i}.", s + 1),
                &block_spec(spec, s),
                bc,
                &g,
                &mut grads,
            )?;
        }
        g = layer_norm_backward(
            p,
            &format!("patch_embed{}.norm.", s + 1),
            &st.embedded,
            EMBED_EPS,
            &g,
            &mut grads,
        )?;
        let g_vol = reshape(&g, &st.volume_shape);
        match &st.embed_in {
            Some(input) => {
                let (name, cfg) = spec.embed(s);
                from_next = Some(conv_backward(p, &name, input, &cfg, &g_vol, &mut grads)?);
            }
            None => g_stem_out = g_vol,
        }
    }
    let (name, cfg) = spec.stem(3);
    let g_last = conv_backward(p, &name, &cache.stem_last_in, &cfg, &g_stem_out, &mut grads)?;
    let mut g = super::add(&g_last, &reshape(g_skip, &g_last.shape));
    for (i, layer) in cache.stem.iter().enumerate().rev() {
        g = elementwise::unary_backward(UnaryOp::LeakyRelu(LEAKY_SLOPE), &layer.normed, &g);
        g = norm::instance_norm_backward(&layer.conv_out, None, EMBED_EPS, &g).x;
        let (name, cfg) = spec.stem(i);
        g = conv_backward(p, &name, &layer.input, &cfg, &g, &mut grads)?;
    }
    Ok((reshape(&g, &cache.x_shape), grads))
}
