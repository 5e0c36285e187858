//! Reference for src/models/pvt: the PVTv2 block and encoder as a naive composition of the f64
//! reference ops (Linear = matmul + broadcast bias add, LayerNorm, InstanceNorm, conv3d,
//! attention, GELU, leaky ReLU), forward and a hand-written backward (the chain rule applied op
//! by op in reverse). It shares no code with the GPU model: only the parameter names (the
//! authors' PyTorch module names, see src/models/pvt/mod.rs) and the cads weight layouts
//! (Linear `[Cin, Cout]`, conv `[kD, kH, kW, Cin/groups, Cout]`).
//!
//! Images (2D) run as volumes with D = 1 and kernels `[1, k, k]`, exactly like the GPU path.
//! The constants are restated from ../shared/CADS.md rather than imported from the model, so a
//! wrong constant in the model fails the comparison tests.

mod block;
mod encoder;

pub use block::{block_backward, block_forward, BlockCache, BlockSpec};
pub use encoder::{encoder_backward, encoder_forward, EncoderCache, EncoderOutput, EncoderSpec};

use std::collections::HashMap;

use super::{conv3d as conv_ref, elementwise, matmul, norm, Array};
use crate::error::{Error, Result};
use crate::ops::config::{BinaryOp, Conv3dConfig};

/// LayerNorm eps inside blocks and after each stage.
pub const BLOCK_EPS: f64 = 1e-6;
/// LayerNorm eps of the patch embeddings and the SR path; InstanceNorm eps of the stem.
pub const EMBED_EPS: f64 = 1e-5;
/// Slope of the stem's leaky ReLU.
pub const LEAKY_SLOPE: f32 = 0.01;

const OP: &str = "reference::pvt";

/// Parameters by name (e.g. `attn.q.weight` for a block, `block1.0.attn.q.weight` for the
/// encoder), in cads layouts.
#[derive(Clone, Debug, Default)]
pub struct Params {
    map: HashMap<String, Array>,
}

impl Params {
    pub fn new() -> Params {
        Params::default()
    }
    pub fn insert(&mut self, name: impl Into<String>, value: Array) {
        self.map.insert(name.into(), value);
    }
    /// The parameter `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&Array> {
        self.map
            .get(name)
            .ok_or_else(|| Error::invalid(OP, format!("a parameter named {name}"), "none"))
    }
    fn optional(&self, name: &str) -> Option<&Array> {
        self.map.get(name)
    }
}

/// Gradients by parameter name, accumulated (a parameter used twice gets the sum).
#[derive(Clone, Debug, Default)]
pub struct Grads {
    map: HashMap<String, Array>,
}

impl Grads {
    /// The gradient of `name`, or an error when nothing reached it.
    pub fn get(&self, name: &str) -> Result<&Array> {
        self.map
            .get(name)
            .ok_or_else(|| Error::invalid(OP, format!("a gradient for {name}"), "none"))
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }
    fn add(&mut self, name: String, g: Array) {
        match self.map.get_mut(&name) {
            Some(prev) => {
                for (p, v) in prev.data.iter_mut().zip(&g.data) {
                    *p += v;
                }
            }
            None => {
                self.map.insert(name, g);
            }
        }
    }
}

/// The same data under another shape (row-major, so a reshape is free).
fn reshape(a: &Array, shape: &[usize]) -> Array {
    Array::new(a.data.clone(), shape)
}

/// `a + b`, same shapes (residual sums and gradient fan-in).
fn add(a: &Array, b: &Array) -> Array {
    elementwise::binary(BinaryOp::Add, a, b)
}

/// `y = x·W + b` over the last axis: x `[..., Cin]`, W `[Cin, Cout]`, b `[Cout]`.
fn linear(p: &Params, prefix: &str, x: &Array) -> Result<Array> {
    let (w, b) = (
        p.get(&format!("{prefix}weight"))?,
        p.get(&format!("{prefix}bias"))?,
    );
    let cin = w.shape[0];
    if x.shape.last() != Some(&cin) {
        return Err(Error::shape(
            OP,
            format!("[..., {cin}] into {prefix}"),
            &x.shape,
        ));
    }
    let rows = x.numel() / cin;
    // [..., Cin] → [rows, Cin] → [rows, Cout] → [..., Cout]
    let y = matmul::matmul(&reshape(x, &[rows, cin]), w, false, false);
    let y = elementwise::binary(BinaryOp::Add, &y, b);
    let mut shape = x.shape.clone();
    *shape.last_mut().expect("rank >= 1") = w.shape[1];
    Ok(reshape(&y, &shape))
}

/// Backward of [`linear`]: dx = g·Wᵀ, dW = xᵀ·g, db = Σ_rows g. Returns dx.
fn linear_backward(
    p: &Params,
    prefix: &str,
    x: &Array,
    g: &Array,
    grads: &mut Grads,
) -> Result<Array> {
    let (wn, bn) = (format!("{prefix}weight"), format!("{prefix}bias"));
    let (w, b) = (p.get(&wn)?, p.get(&bn)?);
    let (cin, cout) = (w.shape[0], w.shape[1]);
    let rows = x.numel() / cin;
    let g2 = reshape(g, &[rows, cout]);
    let (gx, gw) = matmul::matmul_backward(&reshape(x, &[rows, cin]), w, false, false, &g2);
    // The bias was broadcast over rows: its gradient sums them (the left operand's values are
    // not read by the Add backward, only its shape).
    let (_, gb) = elementwise::binary_backward(BinaryOp::Add, &Array::zeros(&[rows, cout]), b, &g2);
    grads.add(wn, gw);
    grads.add(bn, gb);
    Ok(reshape(&gx, &x.shape))
}

/// LayerNorm over the last axis with `{prefix}weight` (γ) and `{prefix}bias` (β).
fn layer_norm(p: &Params, prefix: &str, x: &Array, eps: f64) -> Result<Array> {
    let (g, b) = (
        p.get(&format!("{prefix}weight"))?,
        p.get(&format!("{prefix}bias"))?,
    );
    if x.shape.last() != Some(&g.numel()) {
        return Err(Error::shape(
            OP,
            format!("[..., {}] into {prefix}", g.numel()),
            &x.shape,
        ));
    }
    Ok(norm::layer_norm(x, Some((&g.data, &b.data)), eps))
}

fn layer_norm_backward(
    p: &Params,
    prefix: &str,
    x: &Array,
    eps: f64,
    g: &Array,
    grads: &mut Grads,
) -> Result<Array> {
    let gamma = p.get(&format!("{prefix}weight"))?;
    let r = norm::layer_norm_backward(x, Some(&gamma.data), eps, g);
    grads.add(format!("{prefix}weight"), r.gamma);
    grads.add(format!("{prefix}bias"), r.beta);
    Ok(r.x)
}

/// conv3d with `{prefix}weight` and, when present, `{prefix}bias`, on `[N, D, H, W, C]`.
fn conv(p: &Params, prefix: &str, x: &Array, cfg: &Conv3dConfig) -> Result<Array> {
    let w = p.get(&format!("{prefix}weight"))?;
    let fits = (0..3).all(|a| {
        conv_ref::out_extent(
            x.shape.get(a + 1).copied().unwrap_or(0),
            cfg.kernel[a],
            cfg.stride[a],
            cfg.padding[a],
            cfg.dilation[a],
        )
        .is_some()
    });
    if x.shape.len() != 5 || w.shape.len() != 5 || x.shape[4] != w.shape[3] * cfg.groups || !fits {
        return Err(Error::shape(
            OP,
            format!(
                "[N, D, H, W, Cin] fitting {prefix}weight {:?}, {cfg:?}",
                w.shape
            ),
            &x.shape,
        ));
    }
    Ok(conv_ref::conv3d(
        x,
        w,
        p.optional(&format!("{prefix}bias")),
        cfg,
    ))
}

/// Backward of [`conv`]: records dW (and db), returns dx.
fn conv_backward(
    p: &Params,
    prefix: &str,
    x: &Array,
    cfg: &Conv3dConfig,
    g: &Array,
    grads: &mut Grads,
) -> Result<Array> {
    let wn = format!("{prefix}weight");
    let w = p.get(&wn)?;
    grads.add(wn, conv_ref::conv3d_backward_weight(g, x, &w.shape, cfg));
    let bn = format!("{prefix}bias");
    if p.optional(&bn).is_some() {
        grads.add(bn, conv_ref::conv3d_backward_bias(g));
    }
    Ok(conv_ref::conv3d_backward_input(g, w, &x.shape, cfg))
}
