//! Reference for src/ops/dw_mlp_mixed.rs: the PVTv2 MLP `fc2(GELU(DWConv(fc1(x))))` with the
//! op's f16 roundings, composed of the reference matmul, conv3d and GELU with exact products and
//! sums (the GPU's differ by f32 accumulation, and a rounded value by one f16 step where its f32
//! lands on the other side of a rounding boundary). The plain [`dw_mlp`] (no rounding) is what
//! finite differences check the straight-through gradients against.

use super::cast::round_to_f16;
use super::conv3d::{conv3d, conv3d_backward_bias, conv3d_backward_input, conv3d_backward_weight};
use super::elementwise::{unary, unary_backward};
use super::matmul::matmul;
use super::Array;
use crate::ops::config::Conv3dConfig;
use crate::ops::config::UnaryOp;

/// The MLP's parameters: fc1 `[C, hidden]` + `[hidden]`, the depthwise conv `[3, 3, 3, 1,
/// hidden]` + `[hidden]`, fc2 `[hidden, Cout]` + `[Cout]`.
pub struct DwMlp {
    pub w1: Array,
    pub b1: Array,
    pub wd: Array,
    pub bd: Array,
    pub w2: Array,
    pub b2: Array,
}

/// Gradients of `L = Σ y·g` in the order of [`DwMlp`], after ∂x.
pub struct DwMlpGrads {
    pub x: Array,
    pub w1: Array,
    pub b1: Array,
    pub wd: Array,
    pub bd: Array,
    pub w2: Array,
    pub b2: Array,
}

fn depthwise_cfg(hidden: usize) -> Conv3dConfig {
    Conv3dConfig::cube(3, 1, 1).groups(hidden)
}

/// `a · w + b` of a `[rows, in]` a.
fn linear(a: &Array, w: &Array, b: &Array) -> Array {
    let mut y = matmul(a, w, false, false);
    let cout = b.numel();
    for (i, v) in y.data.iter_mut().enumerate() {
        *v += b.data[i % cout];
    }
    y
}

/// `a` `[rows, C]` as the volume `[grid…, C]` (`grid` = [N, D, H, W]) and back.
fn as_volume(a: &Array, grid: [usize; 4]) -> Array {
    let c = a.shape[1];
    Array::new(a.data.clone(), &[grid[0], grid[1], grid[2], grid[3], c])
}
fn as_rows(a: &Array) -> Array {
    let c = *a.shape.last().expect("rank >= 1");
    Array::new(a.data.clone(), &[a.numel() / c, c])
}

/// Σ over rows of a `[rows, C]` array.
fn column_sums(a: &Array) -> Array {
    conv3d_backward_bias(a)
}

/// The MLP without rounding: x `[rows, C]` tokens of the grid [N, D, H, W] → `[rows, Cout]`.
pub fn dw_mlp(x: &Array, grid: [usize; 4], p: &DwMlp) -> Array {
    let h1 = linear(x, &p.w1, &p.b1);
    let cfg = depthwise_cfg(h1.shape[1]);
    let h2 = as_rows(&conv3d(&as_volume(&h1, grid), &p.wd, Some(&p.bd), &cfg));
    linear(&unary(UnaryOp::Gelu, &h2), &p.w2, &p.b2)
}

/// The op's kept and recomputed activations: x16, h1 (f16), h2 (f16), a = f16(GELU(h2)).
struct Mixed {
    x16: Array,
    h1: Array,
    h2: Array,
    a: Array,
}

fn mixed_activations(x: &Array, grid: [usize; 4], p: &DwMlp) -> Mixed {
    let x16 = round_to_f16(x);
    let h1 = round_to_f16(&linear(&x16, &round_to_f16(&p.w1), &p.b1));
    let cfg = depthwise_cfg(h1.shape[1]);
    let h2 = round_to_f16(&as_rows(&conv3d(
        &as_volume(&h1, grid),
        &p.wd,
        Some(&p.bd),
        &cfg,
    )));
    let a = round_to_f16(&unary(UnaryOp::Gelu, &h2));
    Mixed { x16, h1, h2, a }
}

/// The MLP as src/ops/dw_mlp_mixed.rs computes it (module docs there).
pub fn dw_mlp_mixed(x: &Array, grid: [usize; 4], p: &DwMlp) -> Array {
    let m = mixed_activations(x, grid, p);
    linear(&m.a, &round_to_f16(&p.w2), &p.b2)
}

/// `f16((g16 · f16(w)ᵀ) ⊙ op'(h16))`: the op's fused input gradient through fc2 and the
/// activation (src/ops/linear_unary_backward_x16.rs). g16 `[rows, K]`, w `[N, K]`, h16 `[rows, N]`.
pub fn linear_unary_backward_half(op: UnaryOp, g16: &Array, w: &Array, h16: &Array) -> Array {
    let ga = matmul(g16, &round_to_f16(w), false, true);
    round_to_f16(&unary_backward(op, h16, &ga))
}

/// Gradients of [`dw_mlp_mixed`] as the op computes them: straight through every rounding, the
/// hidden gradients rounded to f16, the others exact.
pub fn dw_mlp_mixed_backward(x: &Array, grid: [usize; 4], p: &DwMlp, g: &Array) -> DwMlpGrads {
    let m = mixed_activations(x, grid, p);
    let hidden = m.h1.shape[1];
    let cfg = depthwise_cfg(hidden);
    let g16 = round_to_f16(g);
    let w2 = matmul(&m.a, &g16, true, false);
    let gh2 = linear_unary_backward_half(UnaryOp::Gelu, &g16, &p.w2, &m.h2);
    let h1_vol = as_volume(&m.h1, grid);
    let gh2_vol = as_volume(&gh2, grid);
    let wd = conv3d_backward_weight(&gh2_vol, &h1_vol, &p.wd.shape, &cfg);
    let gh1 = round_to_f16(&as_rows(&conv3d_backward_input(
        &gh2_vol,
        &p.wd,
        &h1_vol.shape,
        &cfg,
    )));
    DwMlpGrads {
        x: matmul(&gh1, &round_to_f16(&p.w1), false, true),
        w1: matmul(&m.x16, &gh1, true, false),
        b1: column_sums(&gh1),
        wd,
        bd: column_sums(&gh2),
        w2,
        b2: column_sums(g),
    }
}
