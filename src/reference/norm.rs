//! Reference for src/ops/norm/: LayerNorm (last axis) and InstanceNorm (channels-last), f64.

use super::elementwise::{unary, unary_backward};
use super::Array;
use crate::ops::config::UnaryOp;

/// Gradients of a normalisation layer: to x, and to (γ, β) when affine.
pub struct NormGrads {
    pub x: Array,
    pub gamma: Array,
    pub beta: Array,
}

/// Normalise the groups of x (each a list of flat indices) with biased variance; `channel(i)`
/// gives the affine index of element i. Shared by both norms: only the grouping differs.
fn normalize(
    x: &Array,
    groups: &[Vec<usize>],
    channel: impl Fn(usize) -> usize,
    affine: Option<(&[f64], &[f64])>,
    eps: f64,
) -> Array {
    let mut y = Array::zeros(&x.shape);
    for idx in groups {
        let n = idx.len() as f64;
        let mean = idx.iter().map(|&i| x.data[i]).sum::<f64>() / n;
        let var = idx.iter().map(|&i| (x.data[i] - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for &i in idx {
            let xh = (x.data[i] - mean) * rstd;
            y.data[i] = match affine {
                Some((g, b)) => xh * g[channel(i)] + b[channel(i)],
                None => xh,
            };
        }
    }
    y
}

/// Backward of `normalize`: for each group with x̂ and ĝ = g·γ,
/// gx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)); gγ[c] = Σ g·x̂, gβ[c] = Σ g over every element of c.
fn normalize_backward(
    x: &Array,
    groups: &[Vec<usize>],
    channel: impl Fn(usize) -> usize,
    channels: usize,
    gamma: Option<&[f64]>,
    eps: f64,
    g: &Array,
) -> NormGrads {
    let mut gx = Array::zeros(&x.shape);
    let mut gg = Array::zeros(&[channels]);
    let mut gb = Array::zeros(&[channels]);
    for idx in groups {
        let n = idx.len() as f64;
        let mean = idx.iter().map(|&i| x.data[i]).sum::<f64>() / n;
        let var = idx.iter().map(|&i| (x.data[i] - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        let xh = |i: usize| (x.data[i] - mean) * rstd;
        let gh = |i: usize| g.data[i] * gamma.map_or(1.0, |gm| gm[channel(i)]);
        let m1 = idx.iter().map(|&i| gh(i)).sum::<f64>() / n;
        let m2 = idx.iter().map(|&i| gh(i) * xh(i)).sum::<f64>() / n;
        for &i in idx {
            gx.data[i] = rstd * (gh(i) - m1 - xh(i) * m2);
            gg.data[channel(i)] += g.data[i] * xh(i);
            gb.data[channel(i)] += g.data[i];
        }
    }
    NormGrads {
        x: gx,
        gamma: gg,
        beta: gb,
    }
}

fn ln_groups(x: &Array) -> (Vec<Vec<usize>>, usize) {
    let c = *x.shape.last().expect("layer_norm reference: rank >= 1");
    (
        (0..x.numel() / c)
            .map(|r| (r * c..(r + 1) * c).collect())
            .collect(),
        c,
    )
}

/// LayerNorm over the last axis.
pub fn layer_norm(x: &Array, affine: Option<(&[f64], &[f64])>, eps: f64) -> Array {
    let (groups, c) = ln_groups(x);
    normalize(x, &groups, |i| i % c, affine, eps)
}

pub fn layer_norm_backward(x: &Array, gamma: Option<&[f64]>, eps: f64, g: &Array) -> NormGrads {
    let (groups, c) = ln_groups(x);
    normalize_backward(x, &groups, |i| i % c, c, gamma, eps, g)
}

/// Groups of InstanceNorm on `[N, *spatial, C]`: one per (n, c), over every spatial position.
fn in_groups(x: &Array) -> (Vec<Vec<usize>>, usize) {
    let (n, c) = (
        x.shape[0],
        *x.shape.last().expect("instance_norm reference: rank >= 3"),
    );
    let s = x.numel() / (n * c).max(1);
    let mut groups = Vec::new();
    for b in 0..n {
        for ch in 0..c {
            groups.push((0..s).map(|sp| (b * s + sp) * c + ch).collect());
        }
    }
    (groups, c)
}

/// InstanceNorm: per (n, c) statistics over all spatial positions of a channels-last tensor.
pub fn instance_norm(x: &Array, affine: Option<(&[f64], &[f64])>, eps: f64) -> Array {
    let (groups, c) = in_groups(x);
    normalize(x, &groups, |i| i % c, affine, eps)
}

pub fn instance_norm_backward(x: &Array, gamma: Option<&[f64]>, eps: f64, g: &Array) -> NormGrads {
    let (groups, c) = in_groups(x);
    normalize_backward(x, &groups, |i| i % c, c, gamma, eps, g)
}

/// InstanceNorm then LeakyReLU of `slope` (src/ops/norm/instance.rs `instance_norm_leaky_relu`).
pub fn instance_norm_leaky_relu(
    x: &Array,
    affine: Option<(&[f64], &[f64])>,
    eps: f64,
    slope: f32,
) -> Array {
    unary(UnaryOp::LeakyRelu(slope), &instance_norm(x, affine, eps))
}

/// Its gradients: LeakyReLU's derivative at the normalised values, then InstanceNorm's backward.
pub fn instance_norm_leaky_relu_backward(
    x: &Array,
    affine: Option<(&[f64], &[f64])>,
    eps: f64,
    slope: f32,
    g: &Array,
) -> NormGrads {
    let y = instance_norm(x, affine, eps);
    let gy = unary_backward(UnaryOp::LeakyRelu(slope), &y, g);
    instance_norm_backward(x, affine.map(|(gamma, _)| gamma), eps, &gy)
}
