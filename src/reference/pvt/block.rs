//! Reference PVTv2 block on tokens `x [N, L, C]` laid out on a grid (D, H, W), L = D·H·W:
//!
//! ```text
//! h1 = LN₁(x)                          (eps 1e-6)
//! q  = h1·Wq + bq
//! r  = LN_sr(Conv_sr(h1 as [N, D, H, W, C]))   kernel = stride = sr, no padding (sr > 1; eps 1e-5)
//!    = h1                                       (sr = 1)
//! [k | v] = r·Wkv + bkv                 keys/values: the first and second C channels
//! a  = softmax(q_h·k_hᵀ · (C/heads)^-½) · v_h   per head h
//! x1 = x + a·Wproj + bproj
//! h2 = LN₂(x1)
//! f  = DwConv3³(h2·W1 + b1 as [N, D, H, W, rC])  (pad 1, groups rC, bias)
//! y  = x1 + GELU(f)·W2 + b2
//! ```
//! Drop path is the identity (evaluation). Images use D = 1: SR kernel `[1, sr, sr]` from
//! `attn.sr_2D`, and the depthwise 3³ kernel of which only the middle slice meets data.

use super::{
    add, conv, conv_backward, layer_norm, layer_norm_backward, linear, linear_backward, reshape,
    Grads, Params, BLOCK_EPS, EMBED_EPS, OP,
};
use crate::error::{Error, Result};
use crate::ops::{Conv3dConfig, UnaryOp};
use crate::reference::{attention as attention_ref, elementwise, Array};

/// What a block is, beyond its parameters.
#[derive(Clone, Copy, Debug)]
pub struct BlockSpec {
    pub heads: usize,
    /// Spatial-reduction ratio (1: keys and values from every token).
    pub sr: usize,
    /// Image tokens (D = 1, 2D SR conv `attn.sr_2D`).
    pub image: bool,
}

impl BlockSpec {
    fn sr_conv(&self) -> (&'static str, Conv3dConfig) {
        let s = self.sr;
        if self.image {
            (
                "attn.sr_2D.",
                Conv3dConfig::new([1, s, s]).stride([1, s, s]),
            )
        } else {
            ("attn.sr.", Conv3dConfig::cube(s, s, 0))
        }
    }
}

/// The forward's intermediates that its backward reads.
pub struct BlockCache {
    grid: [usize; 3],
    x: Array,
    h1: Array,
    q: Array,
    /// SR conv output `[N, D', H', W', C]` (before its LayerNorm), sr > 1.
    reduced: Option<Array>,
    kv_in: Array,
    k: Array,
    v: Array,
    attended: Array,
    x1: Array,
    h2: Array,
    /// fc1 output as a volume `[N, D, H, W, rC]`.
    hidden: Array,
    /// Depthwise conv output as tokens `[N, L, rC]`.
    mixed: Array,
    activated: Array,
}

fn split_last(a: &Array, c: usize) -> (Array, Array) {
    let rows = a.numel() / (2 * c);
    let mut shape = a.shape.clone();
    *shape.last_mut().expect("rank >= 1") = c;
    let (mut lo, mut hi) = (Vec::with_capacity(rows * c), Vec::with_capacity(rows * c));
    for r in 0..rows {
        lo.extend_from_slice(&a.data[r * 2 * c..r * 2 * c + c]);
        hi.extend_from_slice(&a.data[r * 2 * c + c..(r + 1) * 2 * c]);
    }
    (Array::new(lo, &shape), Array::new(hi, &shape))
}

fn concat_last(lo: &Array, hi: &Array) -> Array {
    let c = *lo.shape.last().expect("rank >= 1");
    let rows = lo.numel() / c;
    let mut data = Vec::with_capacity(2 * lo.numel());
    for r in 0..rows {
        data.extend_from_slice(&lo.data[r * c..(r + 1) * c]);
        data.extend_from_slice(&hi.data[r * c..(r + 1) * c]);
    }
    let mut shape = lo.shape.clone();
    *shape.last_mut().expect("rank >= 1") = 2 * c;
    Array::new(data, &shape)
}

fn dwconv_config(hidden: usize) -> Conv3dConfig {
    Conv3dConfig::cube(3, 1, 1).groups(hidden)
}

/// Forward of one block with parameters `{prefix}norm1.weight`, `{prefix}attn.q.weight`, ...
pub fn block_forward(
    p: &Params,
    prefix: &str,
    spec: &BlockSpec,
    x: &Array,
    grid: [usize; 3],
) -> Result<(Array, BlockCache)> {
    let c = p.get(&format!("{prefix}norm1.weight"))?.numel();
    let l = grid.iter().product::<usize>();
    if x.shape.len() != 3 || x.shape[1] != l || x.shape[2] != c {
        return Err(Error::shape(
            OP,
            format!("tokens [N, {l}, {c}] on {grid:?}"),
            &x.shape,
        ));
    }
    if spec.heads == 0 || c % spec.heads != 0 || spec.sr == 0 || (spec.image && grid[0] != 1) {
        return Err(Error::invalid(
            OP,
            format!("heads dividing {c}, sr >= 1 and D = 1 for images"),
            format!("{spec:?} on {grid:?}"),
        ));
    }
    let n = x.shape[0];
    let h1 = layer_norm(p, &format!("{prefix}norm1."), x, BLOCK_EPS)?;
    let q = linear(p, &format!("{prefix}attn.q."), &h1)?;
    let (reduced, kv_in) = if spec.sr > 1 {
        let (name, cfg) = spec.sr_conv();
        // [N, L, C] → [N, D, H, W, C] → [N, D', H', W', C] → [N, M, C]
        let vol = reshape(&h1, &[n, grid[0], grid[1], grid[2], c]);
        let reduced = conv(p, &format!("{prefix}{name}"), &vol, &cfg)?;
        let m = reduced.numel() / (n * c);
        let kv_in = layer_norm(
            p,
            &format!("{prefix}attn.norm."),
            &reshape(&reduced, &[n, m, c]),
            EMBED_EPS,
        )?;
        (Some(reduced), kv_in)
    } else {
        (None, h1.clone())
    };
    let kv = linear(p, &format!("{prefix}attn.kv."), &kv_in)?;
    let (k, v) = split_last(&kv, c);
    let scale = ((c / spec.heads) as f64).powf(-0.5);
    let attended = attention_ref::attention(&q, &k, &v, spec.heads, scale);
    let x1 = add(x, &linear(p, &format!("{prefix}attn.proj."), &attended)?);
    let h2 = layer_norm(p, &format!("{prefix}norm2."), &x1, BLOCK_EPS)?;
    let f1 = linear(p, &format!("{prefix}mlp.fc1."), &h2)?;
    let hid = f1.shape[2];
    // [N, L, rC] → [N, D, H, W, rC] for the depthwise conv, and back.
    let hidden = reshape(&f1, &[n, grid[0], grid[1], grid[2], hid]);
    let mixed = reshape(
        &conv(
            p,
            &format!("{prefix}mlp.dwconv.dwconv."),
            &hidden,
            &dwconv_config(hid),
        )?,
        &[n, l, hid],
    );
    let activated = elementwise::unary(UnaryOp::Gelu, &mixed);
    let y = add(&x1, &linear(p, &format!("{prefix}mlp.fc2."), &activated)?);
    let cache = BlockCache {
        grid,
        x: x.clone(),
        h1,
        q,
        reduced,
        kv_in,
        k,
        v,
        attended,
        x1,
        h2,
        hidden,
        mixed,
        activated,
    };
    Ok((y, cache))
}

/// Backward of [`block_forward`] given dL/dy = `g`: adds every parameter's gradient to `grads`
/// and returns dL/dx. Residuals fan the gradient out: dL/dx1 = g + (MLP branch), dL/dx = dL/dx1
/// + (attention branch).
pub fn block_backward(
    p: &Params,
    prefix: &str,
    spec: &BlockSpec,
    cache: &BlockCache,
    g: &Array,
    grads: &mut Grads,
) -> Result<Array> {
    let cc = cache;
    if g.shape != cc.x.shape {
        return Err(Error::shape(OP, &cc.x.shape, &g.shape));
    }
    let (n, l, c) = (cc.x.shape[0], cc.x.shape[1], cc.x.shape[2]);
    let grid = cc.grid;
    // MLP branch.
    let g_act = linear_backward(p, &format!("{prefix}mlp.fc2."), &cc.activated, g, grads)?;
    let g_mixed = elementwise::unary_backward(UnaryOp::Gelu, &cc.mixed, &g_act);
    let hid = g_mixed.shape[2];
    let g_mixed = reshape(&g_mixed, &[n, grid[0], grid[1], grid[2], hid]);
    let g_hidden = conv_backward(
        p,
        &format!("{prefix}mlp.dwconv.dwconv."),
        &cc.hidden,
        &dwconv_config(hid),
        &g_mixed,
        grads,
    )?;
    let g_h2 = linear_backward(
        p,
        &format!("{prefix}mlp.fc1."),
        &cc.h2,
        &reshape(&g_hidden, &[n, l, hid]),
        grads,
    )?;
    let g_x1 = add(
        g,
        &layer_norm_backward(
            p,
            &format!("{prefix}norm2."),
            &cc.x1,
            BLOCK_EPS,
            &g_h2,
            grads,
        )?,
    );
    // Attention branch.
    let g_att = linear_backward(
        p,
        &format!("{prefix}attn.proj."),
        &cc.attended,
        &g_x1,
        grads,
    )?;
    let scale = ((c / spec.heads) as f64).powf(-0.5);
    let (g_q, g_k, g_v) =
        attention_ref::attention_backward(&cc.q, &cc.k, &cc.v, spec.heads, scale, &g_att);
    let g_kv_in = linear_backward(
        p,
        &format!("{prefix}attn.kv."),
        &cc.kv_in,
        &concat_last(&g_k, &g_v),
        grads,
    )?;
    let mut g_h1 = linear_backward(p, &format!("{prefix}attn.q."), &cc.h1, &g_q, grads)?;
    match &cc.reduced {
        None => g_h1 = add(&g_h1, &g_kv_in),
        Some(reduced) => {
            let m = reduced.numel() / (n * c);
            let g_red = layer_norm_backward(
                p,
                &format!("{prefix}attn.norm."),
                &reshape(reduced, &[n, m, c]),
                EMBED_EPS,
                &g_kv_in,
                grads,
            )?;
            let (name, cfg) = spec.sr_conv();
            let vol = reshape(&cc.h1, &[n, grid[0], grid[1], grid[2], c]);
            let g_vol = conv_backward(
                p,
                &format!("{prefix}{name}"),
                &vol,
                &cfg,
                &reshape(&g_red, &reduced.shape),
                grads,
            )?;
            g_h1 = add(&g_h1, &reshape(&g_vol, &[n, l, c]));
        }
    }
    Ok(add(
        &g_x1,
        &layer_norm_backward(
            p,
            &format!("{prefix}norm1."),
            &cc.x,
            BLOCK_EPS,
            &g_h1,
            grads,
        )?,
    ))
}
