//! Checks of the elementwise, pooling, resampling and loss families, forward and backward: every
//! unary op on a vec4-divisible and a ragged length, the binary ops under broadcasting (the row
//! and flat kernels), max and average pooling (strided, padded), nearest and linear resampling
//! (both corner conventions), the L2 normalisation along rows and down columns (the wide column
//! kernels past 1024 columns), the column-normalised linear on each of its three paths (at most
//! 8 rows, the products on v, the composition), the MLP tail linear(GELU(h)) in f32 and mixed
//! precision, the unary kernels on f16 storage, and the soft cross-entropy.

use super::Run;
use crate::error::Result;
use crate::ops::unary_f16::{
    unary_backward_half_in_place, unary_backward_half_raw, unary_half_raw,
};
use crate::ops::{self, BinaryOp, Pool3dConfig, ResampleMode, UnaryOp};
use crate::reference::cast::round_to_f16;
use crate::reference::Array;
use crate::reference::{
    dw_mlp as rdm, elementwise as re, gelu_linear as rgl, loss as rl, normalized_linear as rnl,
    pool as rp, resample as rr,
};
use crate::tensor::{DType, Tensor};
use crate::util::{Tolerance, F32_ACCUM, F32_GRAD, F32_POINTWISE};

const BINARY: [BinaryOp; 6] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
];

/// Inputs of a unary check: [0.2, 3) for the ops defined on positive values, else [−3, 3).
fn input_range(op: UnaryOp) -> (f32, f32) {
    if op.needs_positive_input() {
        (0.2, 3.0)
    } else {
        (-3.0, 3.0)
    }
}

pub(super) fn elementwise(run: &mut Run) -> Result<()> {
    for op in UnaryOp::SAMPLES {
        let name = op.name();
        if !run.wants("unary", name) {
            continue;
        }
        let (lo, hi) = input_range(op);
        // 540 elements run four per invocation (the vec4 entries), 555 one.
        for shape in [[3, 36, 5], [3, 37, 5]] {
            let case = format!("{shape:?} in [{lo}, {hi})");
            run.check("unary", name, name, &case, |run, cmp| {
                let (x, tx) = run.uniform(&shape, lo, hi, true)?;
                let y = ops::unary(op, &tx)?;
                cmp.tensor("forward", &y, &re::unary(op, &x), F32_POINTWISE);
                let (g, tg) = run.random(&shape, false)?;
                let grads = y.backward_with(&tg)?;
                cmp.grad(
                    "grad x",
                    &grads,
                    &tx,
                    &re::unary_backward(op, &x, &g),
                    F32_GRAD,
                );
                Ok(())
            });
        }
    }
    // Broadcast against a middle and a leading axis, a row vector (a bias), equal shapes.
    let shapes: [(&[usize], &[usize]); 3] = [
        (&[4, 1, 6], &[5, 1]),
        (&[3, 8], &[8]),
        (&[2, 3, 4], &[2, 3, 4]),
    ];
    for op in BINARY {
        let name = format!("{op:?}").to_lowercase();
        if !run.wants("binary", &name) {
            continue;
        }
        for (sa, sb) in shapes {
            let case = format!("{sa:?} with {sb:?}");
            run.check("binary", &name, &name, &case, |run, cmp| {
                let (a, ta) = run.uniform(sa, 0.5, 2.0, true)?;
                let (b, tb) = run.uniform(sb, 0.5, 2.0, true)?;
                let y = ops::binary(op, &ta, &tb)?;
                cmp.tensor("forward", &y, &re::binary(op, &a, &b), F32_POINTWISE);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let (ga, gb) = re::binary_backward(op, &a, &b, &g);
                cmp.grad("grad a", &grads, &ta, &ga, F32_GRAD);
                cmp.grad("grad b", &grads, &tb, &gb, F32_GRAD);
                Ok(())
            });
        }
    }
    Ok(())
}

/// One f16 step of a rounded result (2⁻¹⁰ relative: the device's f32 value and the exact one
/// may round to neighbours), f16's subnormal spacing near 0.
const HALF_STEP: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-3,
};

/// The unary kernels on f16 storage (mixed precision; where the device has `SHADER_F16`):
/// `op(x16)` rounded to f16, and `g · op'(x16)` reading the f16 input (into a new tensor and
/// over g).
pub(super) fn unary_f16(run: &mut Run) -> Result<()> {
    if !run.gpu.features().f16 {
        return Ok(());
    }
    for op in UnaryOp::SAMPLES {
        let name = op.name();
        if !run.wants("unary_f16", name) {
            continue;
        }
        let (lo, hi) = input_range(op);
        for shape in [[3, 36, 5], [3, 37, 5]] {
            let case = format!("{shape:?} in [{lo}, {hi})");
            run.check("unary_f16", name, name, &case, |run, cmp| {
                let (x, tx) = run.uniform(&shape, lo, hi, false)?;
                let x16 = tx.to_dtype(DType::F16)?;
                let xr = round_to_f16(&x);
                let y = unary_half_raw(op, &x16)?;
                cmp.tensor("forward", &y, &round_to_f16(&re::unary(op, &xr)), HALF_STEP);
                let (g, tg) = run.random(&shape, false)?;
                let gx = unary_backward_half_raw(op, &x16, &tg)?;
                let want = re::unary_backward(op, &xr, &g);
                cmp.tensor("grad x", &gx, &want, F32_GRAD);
                // The in-place form, over a copy of g.
                let g_own = crate::ops::scale(&tg, 1.0)?;
                let gx = unary_backward_half_in_place(op, &x16, g_own)?;
                cmp.tensor("grad x in place", &gx, &want, F32_GRAD);
                Ok(())
            });
        }
    }
    Ok(())
}

/// Against the reference of the rounded computation: f32 accumulation, and a GELU output one
/// f16 step off the reference's (2⁻¹¹·3 for |h| ≤ 3) in a few terms of a sum.
const MIXED_TAIL: Tolerance = Tolerance {
    abs: 2e-3,
    rel: 1e-3,
};

/// The MLP tail, linear(GELU(h)) keeping h alone (its own backward recomputes GELU): the f32 op,
/// and the mixed-precision one where the device has f16.
pub(super) fn gelu_linear(run: &mut Run) -> Result<()> {
    type Op = fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>;
    type Forward = fn(&Array, &Array, Option<&[f64]>) -> Array;
    type Backward = fn(&Array, &Array, &Array) -> (Array, Array, Array);
    // (variant, op, its reference forward and backward, tolerances of the output and gradients)
    let variants: [(&str, Op, Forward, Backward, Tolerance, Tolerance); 2] = [
        (
            "auto",
            ops::gelu_linear,
            rgl::gelu_linear,
            rgl::gelu_linear_backward,
            F32_ACCUM,
            F32_GRAD,
        ),
        (
            "mixed",
            ops::gelu_linear_mixed,
            rgl::gelu_linear_mixed,
            rgl::gelu_linear_mixed_backward,
            MIXED_TAIL,
            MIXED_TAIL,
        ),
    ];
    for (variant, op, forward, backward, out_tol, grad_tol) in variants {
        if (variant == "mixed" && !run.gpu.features().f16) || !run.wants("gelu_linear", variant) {
            continue;
        }
        for (rows, cin, cout) in [(300, 64, 24), (15, 6, 7)] {
            let case = format!("h[{rows}, {cin}] to {cout}");
            run.check("gelu_linear", variant, variant, &case, |run, cmp| {
                let (h, th) = run.uniform(&[rows, cin], -3.0, 3.0, true)?;
                let (w, tw) = run.random(&[cin, cout], true)?;
                let (b, tb) = run.random(&[cout], true)?;
                let y = op(&th, &tw, Some(&tb))?;
                cmp.tensor("forward", &y, &forward(&h, &w, Some(&b.data)), out_tol);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let (gh, gw, gb) = backward(&h, &w, &g);
                cmp.grad("grad h", &grads, &th, &gh, grad_tol);
                cmp.grad("grad w", &grads, &tw, &gw, grad_tol);
                cmp.grad("grad bias", &grads, &tb, &gb, grad_tol);
                Ok(())
            });
        }
    }
    Ok(())
}

/// Against the reference of the rounded computation: f32 accumulation, and a rounded value (h1,
/// h2, GELU's output, ∂h2, ∂h1) one f16 step off the reference's in a few terms of a sum.
const MIXED_MLP: Tolerance = Tolerance {
    abs: 3e-3,
    rel: 2e-3,
};

/// The PVT MLP under mixed precision as one op (ops::dw_mlp_mixed: f16 hidden activations and
/// gradients, the depthwise conv and the fused fc2 backward on f16 kernels), where the device has
/// f16: whole windows of 4 along W, a ragged W, and a hidden width of 80 channel groups (two
/// workgroups along the channels on a GPU's 64 lanes, ten on a CPU's 8; two column workgroups of
/// the fused fc2 backward).
pub(super) fn dw_mlp(run: &mut Run) -> Result<()> {
    if !run.gpu.features().f16 || !run.wants("dw_mlp", "mixed") {
        return Ok(());
    }
    let cases = [
        (2, [2, 3, 4], 8, 16, 8),
        (1, [3, 4, 7], 12, 24, 6),
        (1, [2, 3, 5], 8, 320, 4),
    ];
    for (n, grid, c, hidden, cout) in cases {
        let l: usize = grid.iter().product();
        let case = format!("x[{n}, {l}, {c}] grid {grid:?} hidden {hidden} to {cout}");
        run.check("dw_mlp", "mixed", "mixed", &case, |run, cmp| {
            // Weights at PyTorch's default scale 1/√fan_in: hidden values of order 1.
            let mut param = |shape: &[usize], fan_in: usize| {
                let s = 1.0 / (fan_in as f32).sqrt();
                run.uniform(shape, -s, s, true)
            };
            let (w1, tw1) = param(&[c, hidden], c)?;
            let (b1, tb1) = param(&[hidden], c)?;
            let (wd, twd) = param(&[3, 3, 3, 1, hidden], 27)?;
            let (bd, tbd) = param(&[hidden], 27)?;
            let (w2, tw2) = param(&[hidden, cout], hidden)?;
            let (b2, tb2) = param(&[cout], hidden)?;
            let (x, tx) = run.uniform(&[n, l, c], -2.0, 2.0, true)?;
            let y = ops::dw_mlp_mixed(
                &tx,
                grid,
                (&tw1, Some(&tb1)),
                (&twd, Some(&tbd)),
                (&tw2, Some(&tb2)),
            )?;
            let p = rdm::DwMlp {
                w1,
                b1,
                wd,
                bd,
                w2,
                b2,
            };
            let grid4 = [n, grid[0], grid[1], grid[2]];
            let x = Array::new(x.data, &[n * l, c]);
            let want_y = rdm::dw_mlp_mixed(&x, grid4, &p);
            cmp.tensor(
                "forward",
                &y,
                &Array::new(want_y.data, y.shape()),
                MIXED_MLP,
            );
            let (g, tg) = run.random(y.shape(), false)?;
            let grads = y.backward_with(&tg)?;
            let want =
                rdm::dw_mlp_mixed_backward(&x, grid4, &p, &Array::new(g.data, &[n * l, cout]));
            let want_x = Array::new(want.x.data, &[n, l, c]);
            cmp.grad("grad x", &grads, &tx, &want_x, MIXED_MLP);
            cmp.grad("grad fc1 w", &grads, &tw1, &want.w1, MIXED_MLP);
            cmp.grad("grad fc1 bias", &grads, &tb1, &want.b1, MIXED_MLP);
            cmp.grad("grad dwconv w", &grads, &twd, &want.wd, MIXED_MLP);
            cmp.grad("grad dwconv bias", &grads, &tbd, &want.bd, MIXED_MLP);
            cmp.grad("grad fc2 w", &grads, &tw2, &want.w2, MIXED_MLP);
            cmp.grad("grad fc2 bias", &grads, &tb2, &want.b2, MIXED_MLP);
            Ok(())
        });
    }
    Ok(())
}

pub(super) fn pooling(run: &mut Run) -> Result<()> {
    let padded = Pool3dConfig {
        kernel: [3; 3],
        stride: [2; 3],
        padding: [1; 3],
        count_include_pad: false,
    };
    let cases = [
        ("k2 s2", [1, 4, 6, 6, 8], Pool3dConfig::cube(2)),
        ("k3 s2 p1, pad not counted", [2, 5, 5, 7, 4], padded),
    ];
    for (family, max) in [("max_pool3d", true), ("avg_pool3d", false)] {
        if !run.wants(family, "auto") {
            continue;
        }
        for (label, shape, cfg) in &cases {
            let case = format!("{label} x{shape:?}");
            run.check(family, "auto", "auto", &case, |run, cmp| {
                let (x, tx) = run.random(shape, true)?;
                let y = if max {
                    ops::max_pool3d(&tx, cfg)?
                } else {
                    ops::avg_pool3d(&tx, cfg)?
                };
                cmp.tensor("forward", &y, &rp::pool3d(&x, cfg, max), F32_POINTWISE);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let want = rp::pool3d_backward(&x, cfg, max, &g);
                cmp.grad("grad x", &grads, &tx, &want, F32_GRAD);
                Ok(())
            });
        }
    }
    let modes = [
        (ResampleMode::Nearest, "nearest"),
        (
            ResampleMode::Linear {
                align_corners: false,
            },
            "linear",
        ),
        (
            ResampleMode::Linear {
                align_corners: true,
            },
            "linear_align_corners",
        ),
    ];
    for (mode, name) in modes {
        if !run.wants("resample", name) {
            continue;
        }
        let shape = [1, 3, 4, 5, 4];
        for size in [[5, 7, 6], [2, 2, 3]] {
            let case = format!("x{shape:?} to {size:?}");
            run.check("resample", name, name, &case, |run, cmp| {
                let (x, tx) = run.random(&shape, true)?;
                let y = ops::resample(&tx, size, mode)?;
                cmp.tensor("forward", &y, &rr::resample(&x, size, mode), F32_ACCUM);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let want = rr::resample_backward(&shape, size, mode, &g);
                cmp.grad("grad x", &grads, &tx, &want, F32_GRAD);
                Ok(())
            });
        }
    }
    Ok(())
}

pub(super) fn losses(run: &mut Run) -> Result<()> {
    let eps = 1e-12f32;
    if run.wants("l2_normalize", "auto") {
        // Rows; columns of a head-like weight (the wide column kernels from 1024 columns on).
        let cases: [(&[usize], usize); 3] = [(&[9, 40], 1), (&[16, 36], 0), (&[24, 1028], 0)];
        for (shape, axis) in cases {
            let case = format!("{shape:?} along axis {axis}");
            run.check("l2_normalize", "auto", "auto", &case, |run, cmp| {
                let (x, tx) = run.random(shape, true)?;
                let y = ops::l2_normalize(&tx, axis as isize, eps)?;
                let want = rl::l2_normalize(&x, axis, eps as f64);
                cmp.tensor("forward", &y, &want, F32_ACCUM);
                let (g, tg) = run.random(shape, false)?;
                let grads = y.backward_with(&tg)?;
                let want = rl::l2_normalize_backward(&x, axis, eps as f64, &g);
                cmp.grad("grad x", &grads, &tx, &want, F32_GRAD);
                Ok(())
            });
        }
    }
    if run.wants("normalized_linear", "auto") {
        // (rows, K, columns): at most 8 rows, the products on v (K ≥ 1024, K % 4 = 0), the
        // composition (K under 1024).
        let cases = [
            (6, 24, 1028, "few rows"),
            (12, 16, 1024, "products on v"),
            (5, 16, 60, "composed"),
        ];
        for (rows, k, cols, path) in cases {
            let case = format!("{path}: x[{rows}, {k}] v[{k}, {cols}]");
            run.check("normalized_linear", "auto", path, &case, |run, cmp| {
                let (x, tx) = run.random(&[rows, k], true)?;
                let (v, tv) = run.random(&[k, cols], true)?;
                let y = ops::normalized_linear(&tx, &tv, eps)?;
                let want = rnl::normalized_linear(&x, &v, eps as f64);
                cmp.tensor("forward", &y, &want, F32_ACCUM);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let (gx, gv) = rnl::normalized_linear_backward(&x, &v, eps as f64, &g);
                cmp.grad("grad x", &grads, &tx, &gx, F32_GRAD);
                cmp.grad("grad v", &grads, &tv, &gv, F32_GRAD);
                Ok(())
            });
        }
    }
    if run.wants("soft_cross_entropy", "auto") {
        // Short rows, and rows long enough for a workgroup per row on a GPU (the DINO head's
        // output is 60000 wide).
        for shape in [[37, 49], [3, 3000]] {
            let case = format!("{}x{}", shape[0], shape[1]);
            run.check("soft_cross_entropy", "auto", "auto", &case, |run, cmp| {
                let (p, tp) = run.uniform(&shape, 0.0, 1.0, true)?;
                let (s, ts) = run.uniform(&shape, -4.0, 4.0, true)?;
                let y = ops::soft_cross_entropy_rows(&tp, &ts)?;
                let want = rl::soft_cross_entropy_rows(&p, &s);
                cmp.close("forward", &y.to_vec()?, &want, F32_ACCUM);
                let (g, tg) = run.random(y.shape(), false)?;
                let grads = y.backward_with(&tg)?;
                let (gp, gs) = rl::soft_cross_entropy_rows_backward(&p, &s, &g.data);
                cmp.grad("grad targets", &grads, &tp, &gp, F32_GRAD);
                cmp.grad("grad logits", &grads, &ts, &gs, F32_GRAD);
                Ok(())
            });
        }
    }
    Ok(())
}
