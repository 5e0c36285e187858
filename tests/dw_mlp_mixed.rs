//! `ops::dw_mlp_mixed`: the PVTv2 MLP (fc1 → depthwise 3³ conv → GELU → fc2) under mixed
//! precision as one op with f16 hidden activations and gradients (src/ops/dw_mlp_mixed.rs):
//! the f64 reference of the rounded computation, forward and every gradient, on two grids; the
//! reference's straight-through gradients against finite differences of the unrounded MLP; the
//! op within mixed-precision error of the f32 ops it replaces; what it holds for backward and at
//! its backward's peak; the PVT block taking it under autocast (and only there); the GPU
//! workgroup shape of its f16 depthwise kernels; typed errors.
mod common;

use cads::gpu::{AdapterChoice, Precision};
use cads::models::pvt::{Block, Modality};
use cads::ops::{self, Conv3dConfig};
use cads::reference::cast::round_to_f16;
use cads::reference::dw_mlp::{self as rdm, DwMlp, DwMlpGrads};
use cads::reference::gradcheck::{dot, numeric_gradient};
use cads::reference::Array;
use cads::tensor::DType;
use cads::util::{Rng, Tolerance};
use cads::{Gpu, Tensor};
use common::*;

/// (N, grid [D, H, W], C, hidden, Cout): whole windows of 4 along W, a ragged W with more rows
/// than a workgroup's 8 (the fused fc2 backward's row blocks), and 20 channel groups of 4 (more
/// than one workgroup's worth on the CPU shape, 8 or 16 lanes).
const CASES: [(usize, [usize; 3], usize, usize, usize); 3] = [
    (2, [2, 3, 4], 8, 16, 8),
    (1, [3, 4, 7], 12, 24, 6),
    (1, [2, 3, 5], 8, 80, 4),
];

/// Against the reference of the rounded computation: besides f32 accumulation, an element of a
/// rounded value (h1, h2, GELU's output, ∂h2, ∂h1) may sit one f16 step (2⁻¹¹ relative) off the
/// reference's where the GPU's f32 sum and the exact one round to neighbours; with values of
/// order 1 that moves a dependent sum by a few 1e-4 per term so rounded.
const ROUNDED: Tolerance = Tolerance {
    abs: 3e-3,
    rel: 2e-3,
};

struct Inputs {
    x: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    wd: Vec<f32>,
    bd: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    g: Vec<f32>,
}

fn inputs(rows: usize, c: usize, hidden: usize, cout: usize, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let (s1, sd, s2) = (
        1.0 / (c as f32).sqrt(),
        1.0 / 27f32.sqrt(),
        1.0 / (hidden as f32).sqrt(),
    );
    Inputs {
        x: rng.vec_uniform(rows * c, -2.0, 2.0),
        w1: rng.vec_uniform(c * hidden, -s1, s1),
        b1: rng.vec_uniform(hidden, -s1, s1),
        wd: rng.vec_uniform(27 * hidden, -sd, sd),
        bd: rng.vec_uniform(hidden, -sd, sd),
        w2: rng.vec_uniform(hidden * cout, -s2, s2),
        b2: rng.vec_uniform(cout, -s2, s2),
        g: rng.vec_uniform(rows * cout, -1.0, 1.0),
    }
}

/// The MLP's leaves on the GPU, in the op's input order.
struct Leaves {
    x: Tensor,
    w1: Tensor,
    b1: Tensor,
    wd: Tensor,
    bd: Tensor,
    w2: Tensor,
    b2: Tensor,
}

fn leaves(gpu: &Gpu, n: usize, l: usize, c: usize, hidden: usize, inp: &Inputs) -> Leaves {
    let cout = inp.b2.len();
    let p = |v: &[f32], s: &[usize]| Tensor::parameter(gpu, v, s).unwrap();
    Leaves {
        x: p(&inp.x, &[n, l, c]),
        w1: p(&inp.w1, &[c, hidden]),
        b1: p(&inp.b1, &[hidden]),
        wd: p(&inp.wd, &[3, 3, 3, 1, hidden]),
        bd: p(&inp.bd, &[hidden]),
        w2: p(&inp.w2, &[hidden, cout]),
        b2: p(&inp.b2, &[cout]),
    }
}

impl Leaves {
    fn all(&self) -> [&Tensor; 7] {
        [
            &self.x, &self.w1, &self.b1, &self.wd, &self.bd, &self.w2, &self.b2,
        ]
    }
    fn mixed(&self, grid: [usize; 3]) -> cads::Result<Tensor> {
        ops::dw_mlp_mixed(
            &self.x,
            grid,
            (&self.w1, Some(&self.b1)),
            (&self.wd, Some(&self.bd)),
            (&self.w2, Some(&self.b2)),
        )
    }
    /// The same MLP through the f32 ops (the path the op replaces).
    fn separate_f32(&self, grid: [usize; 3]) -> Tensor {
        let n = self.x.shape()[0];
        let hidden = self.w1.shape()[1];
        let h = ops::linear(&self.x, &self.w1, Some(&self.b1)).unwrap();
        let vol = h.reshape(&[n, grid[0], grid[1], grid[2], hidden]).unwrap();
        let cfg = Conv3dConfig::cube(3, 1, 1).groups(hidden);
        let h2 = ops::conv3d(&vol, &self.wd, Some(&self.bd), &cfg).unwrap();
        let h2 = h2.reshape(&[n, vol.numel() / n / hidden, hidden]).unwrap();
        ops::gelu_linear(&h2, &self.w2, Some(&self.b2)).unwrap()
    }
}

/// y and the gradients of x, w1, b1, wd, bd, w2, b2 from backward with ∂L/∂y = g.
fn forward_backward(y: &Tensor, g: &[f32], leaves: &Leaves) -> Vec<Vec<f32>> {
    let gt = Tensor::from_slice(y.gpu(), g, y.shape()).unwrap();
    let grads = y.backward_with(&gt).unwrap();
    let mut out = vec![y.to_vec().unwrap()];
    for t in leaves.all() {
        out.push(grads.get(t).expect("a gradient").to_vec().unwrap());
    }
    out
}

fn reference_params(c: usize, hidden: usize, inp: &Inputs) -> DwMlp {
    let cout = inp.b2.len();
    DwMlp {
        w1: Array::from_f32(&inp.w1, &[c, hidden]),
        b1: Array::from_f32(&inp.b1, &[hidden]),
        wd: Array::from_f32(&inp.wd, &[3, 3, 3, 1, hidden]),
        bd: Array::from_f32(&inp.bd, &[hidden]),
        w2: Array::from_f32(&inp.w2, &[hidden, cout]),
        b2: Array::from_f32(&inp.b2, &[cout]),
    }
}

const NAMES: [&str; 8] = [
    "y", "grad x", "grad w1", "grad b1", "grad wd", "grad bd", "grad w2", "grad b2",
];

fn grads_in_order(g: DwMlpGrads) -> [Array; 7] {
    [g.x, g.w1, g.b1, g.wd, g.bd, g.w2, g.b2]
}

#[test]
fn matches_the_reference_of_the_rounded_computation() {
    let gpu = gpu();
    assert!(
        gpu.features().f16,
        "the test adapter should offer SHADER_F16"
    );
    check_against_reference(&gpu);
}

/// The f16 depthwise kernels take a GPU's workgroup shape (64 lanes, a row per workgroup, more
/// weight-gradient splits) wherever the conv path is not the CPU adapters' `rows`: the same
/// values, here on lavapipe with the path set to the register tiles.
#[test]
fn the_gpu_workgroup_shape_matches_the_reference_too() {
    let gpu = fresh_gpu();
    gpu.set_tune_settings(memo_tuning(&[("conv3d", "tiled")]));
    check_against_reference(&gpu);
}

fn check_against_reference(gpu: &Gpu) {
    for (i, &(n, grid, c, hidden, cout)) in CASES.iter().enumerate() {
        let l: usize = grid.iter().product();
        let inp = inputs(n * l, c, hidden, cout, 5 + i as u64);
        let lv = leaves(gpu, n, l, c, hidden, &inp);
        let got = forward_backward(&lv.mixed(grid).unwrap(), &inp.g, &lv);
        let (x, p) = (
            Array::from_f32(&inp.x, &[n * l, c]),
            reference_params(c, hidden, &inp),
        );
        let g = Array::from_f32(&inp.g, &[n * l, cout]);
        let grid4 = [n, grid[0], grid[1], grid[2]];
        let mut want = vec![rdm::dw_mlp_mixed(&x, grid4, &p)];
        want.extend(grads_in_order(rdm::dw_mlp_mixed_backward(
            &x, grid4, &p, &g,
        )));
        for ((name, got), want) in NAMES.iter().zip(&got).zip(&want) {
            assert_close(&format!("case {i} {name}"), got, &want.data, ROUNDED);
        }
    }
}

/// The reference's gradients go straight through the roundings: on f16-valued inputs they are
/// within the roundings' error of the unrounded MLP's finite-difference gradients.
#[test]
fn reference_gradients_are_the_straight_through_ones() {
    let (n, grid, c, hidden, cout) = (1, [2, 2, 3], 4, 8, 2);
    let l: usize = grid.iter().product();
    let grid4 = [n, grid[0], grid[1], grid[2]];
    let inp = inputs(n * l, c, hidden, cout, 23);
    let f16 = |v: &[f32], s: &[usize]| round_to_f16(&Array::from_f32(v, s));
    let x = f16(&inp.x, &[l, c]);
    let p = DwMlp {
        w1: f16(&inp.w1, &[c, hidden]),
        wd: Array::from_f32(&inp.wd, &[3, 3, 3, 1, hidden]),
        w2: f16(&inp.w2, &[hidden, cout]),
        ..reference_params(c, hidden, &inp)
    };
    let g = f16(&inp.g, &[l, cout]);
    let got = grads_in_order(rdm::dw_mlp_mixed_backward(&x, grid4, &p, &g));
    let loss = |x: &Array, p: &DwMlp| dot(&rdm::dw_mlp(x, grid4, p).data, &g.data);
    let with = |i: usize, v: &[f64], x: &Array| -> f64 {
        let mut q = DwMlp {
            w1: p.w1.clone(),
            b1: p.b1.clone(),
            wd: p.wd.clone(),
            bd: p.bd.clone(),
            w2: p.w2.clone(),
            b2: p.b2.clone(),
        };
        let mut xx = x.clone();
        let slot = match i {
            0 => &mut xx,
            1 => &mut q.w1,
            2 => &mut q.b1,
            3 => &mut q.wd,
            4 => &mut q.bd,
            5 => &mut q.w2,
            _ => &mut q.b2,
        };
        slot.data = v.to_vec();
        loss(&xx, &q)
    };
    let values = [&x, &p.w1, &p.b1, &p.wd, &p.bd, &p.w2, &p.b2];
    for (i, (v, got)) in values.iter().zip(&got).enumerate() {
        let numeric = numeric_gradient(|d| with(i, d, &x), &v.data, 1e-5);
        let err = relative_l2(&got.data, &numeric);
        // The rounded activations (h1, h2, GELU's output) and gradients (∂h2, ∂h1) each carry
        // 2⁻¹¹ relative error: a few of them compound to well under 1%.
        assert!(err < 1e-2, "{}: relative L2 {err:.2e}", NAMES[i + 1]);
    }
}

/// An independent check: the separate f32 ops compute the same MLP without rounding; the op
/// is within mixed-precision error of them (relative L2 below 1%).
#[test]
fn is_within_mixed_precision_error_of_the_f32_ops() {
    let gpu = gpu();
    // 1280 rows: the f16 bias-gradient sums run in chunks of 1024 rows, then sum the chunks;
    // hidden 320 = 80 column groups: the fused fc2 backward's second workgroup along x is partial.
    let (n, grid, c, hidden, cout) = (2, [4, 8, 20], 16, 320, 16);
    let l: usize = grid.iter().product();
    let inp = inputs(n * l, c, hidden, cout, 41);
    let lv = leaves(&gpu, n, l, c, hidden, &inp);
    let mixed = forward_backward(&lv.mixed(grid).unwrap(), &inp.g, &lv);
    let f32s = forward_backward(&lv.separate_f32(grid), &inp.g, &lv);
    for ((name, a), b) in NAMES.iter().zip(&mixed).zip(&f32s) {
        let err = relative_l2(a, b);
        assert!(err < 1e-2, "{name}: relative L2 {err:.2e} from the f32 ops");
    }
}

/// Bytes alive after `f`, measured from before it.
fn held_by<T>(gpu: &Gpu, f: impl FnOnce() -> T) -> (u64, T) {
    gpu.synchronize().unwrap();
    let before = gpu.pool_stats().live_bytes;
    let out = f();
    (gpu.pool_stats().live_bytes - before, out)
}

/// The op keeps x16 and the f16 fc1 output for backward, one hidden-width f16 tensor less than
/// the f32 path's ops under autocast keep (the conv's f16 input and GELU's f16 input), and its
/// backward peaks below two f32 hidden-width tensors above what it held.
#[test]
fn holds_one_f16_hidden_tensor_and_peaks_low() {
    let gpu = fresh_gpu();
    let (n, grid, c, hidden, cout) = (1, [8, 16, 16], 16, 128, 16);
    let l: usize = grid.iter().product();
    let inp = inputs(n * l, c, hidden, cout, 43);
    let lv = leaves(&gpu, n, l, c, hidden, &inp);
    let hidden16 = (l * hidden * 2) as u64;
    let (ops_held, y_ops) = held_by(&gpu, || {
        gpu.autocast(Precision::Mixed, || lv.separate_f32(grid))
    });
    drop(y_ops);
    let (held, y) = held_by(&gpu, || lv.mixed(grid).unwrap());
    assert!(
        held + hidden16 * 9 / 10 <= ops_held,
        "the op holds {held} B, the separate ops {ops_held} B: not one f16 hidden tensor less"
    );
    let y_bytes = (l * cout * 4) as u64;
    let x16 = (l * c * 2) as u64;
    assert!(
        held <= y_bytes + x16 + hidden16 + hidden16 / 4,
        "the op holds {held} B: more than y, x16 and h1 ({} B)",
        y_bytes + x16 + hidden16
    );
    let g = Tensor::from_slice(&gpu, &inp.g, y.shape()).unwrap();
    gpu.synchronize().unwrap();
    let at_backward = gpu.pool_stats().live_bytes;
    gpu.reset_peak_memory();
    let grads = y.backward_with(&g).unwrap();
    let peak = gpu.pool_stats().peak_bytes - at_backward;
    let hidden32 = 2 * hidden16;
    assert!(
        peak < 2 * hidden32,
        "backward peaked {peak} B above its start: two f32 hidden tensors are {} B",
        2 * hidden32
    );
    drop(grads);
}

#[test]
fn typed_errors_name_the_op() {
    let gpu = gpu();
    let (n, grid, c, hidden, cout) = (1, [2, 2, 4], 8, 16, 8);
    let l: usize = grid.iter().product();
    let inp = inputs(n * l, c, hidden, cout, 47);
    let lv = leaves(&gpu, n, l, c, hidden, &inp);
    let expect_err = |r: cads::Result<Tensor>, what: &str| {
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{what}: no error"))
            .to_string();
        assert!(e.contains("dw_mlp_mixed"), "{what}: {e}");
    };
    expect_err(lv.mixed([2, 2, 3]), "a grid of the wrong size");
    expect_err(lv.mixed([usize::MAX, 2, 1]), "a grid whose size overflows");
    let w1_odd = Tensor::parameter(&gpu, &vec![0.1; c * 18], &[c, 18]).unwrap();
    expect_err(
        ops::dw_mlp_mixed(&lv.x, grid, (&w1_odd, None), (&lv.wd, None), (&lv.w2, None)),
        "a hidden width that does not chain",
    );
    let w2_odd = Tensor::parameter(&gpu, &vec![0.1; hidden * 3], &[hidden, 3]).unwrap();
    expect_err(
        ops::dw_mlp_mixed(&lv.x, grid, (&lv.w1, None), (&lv.wd, None), (&w2_odd, None)),
        "an odd output width",
    );
    let w2_half = lv.w2.to_dtype(DType::F16).unwrap();
    expect_err(
        ops::dw_mlp_mixed(
            &lv.x,
            grid,
            (&lv.w1, None),
            (&lv.wd, None),
            (&w2_half, None),
        ),
        "an f16 master weight",
    );
    let wd_wide =
        Tensor::parameter(&gpu, &vec![0.1; 27 * hidden * 2], &[3, 3, 3, 2, hidden]).unwrap();
    expect_err(
        ops::dw_mlp_mixed(
            &lv.x,
            grid,
            (&lv.w1, None),
            (&wd_wide, None),
            (&lv.w2, None),
        ),
        "a conv weight that is not depthwise",
    );
    let no_f16 =
        Gpu::with_choice_withholding(&AdapterChoice::from_env(), wgpu::Features::SHADER_F16)
            .unwrap();
    let lv16 = leaves(&no_f16, n, l, c, hidden, &inp);
    expect_err(lv16.mixed(grid), "a device without SHADER_F16");
}

/// The PVT block's MLP is this op under autocast from 256 tokens on (its backward runs the fused
/// f16 fc2 backward), the layers' own ops in f32, below 256 tokens and on a device without
/// `SHADER_F16` (which has no mixed path); the block's output under autocast is within
/// mixed-precision error of its f32 output.
#[test]
fn the_pvt_block_takes_it_under_autocast() {
    let fused = "linear_unary_backward_x16";
    let step = |gpu: &Gpu, grid: [usize; 3], precision| {
        let mut rng = Rng::new(61);
        let block = Block::new(gpu, 16, 2, 4, 1, 0.0, false, &mut rng).unwrap();
        let l: usize = grid.iter().product();
        let x = Tensor::parameter(gpu, &rng.vec_uniform(l * 16, -1.0, 1.0), &[1, l, 16]).unwrap();
        let (y, kernels) = ran(gpu, || {
            let y = gpu
                .autocast(precision, || {
                    block.forward(&x, grid, Modality::Volume, false, &mut rng)
                })
                .unwrap();
            let ones = Tensor::full(gpu, y.shape(), 1.0).unwrap();
            drop(y.backward_with(&ones).unwrap());
            y
        });
        (
            y.to_vec().unwrap(),
            kernels.iter().any(|k| k.contains(fused)),
        )
    };
    let gpu = fresh_gpu();
    let (mixed, took) = step(&gpu, [4, 8, 8], Precision::Mixed);
    assert!(took, "256 tokens under autocast: the fused MLP did not run");
    let (plain, took) = step(&gpu, [4, 8, 8], Precision::F32);
    assert!(!took, "the fused MLP ran in f32");
    let err = relative_l2(&mixed, &plain);
    assert!(
        err < 1e-2,
        "block output under autocast: relative L2 {err:.2e} from f32"
    );
    let (_, took) = step(&gpu, [2, 8, 8], Precision::Mixed);
    assert!(
        !took,
        "128 tokens under autocast: the fused MLP ran below the threshold"
    );
    let no_f16 =
        Gpu::with_choice_withholding(&AdapterChoice::from_env(), wgpu::Features::SHADER_F16)
            .unwrap();
    let (_, took) = step(&no_f16, [4, 8, 8], Precision::Mixed);
    assert!(!took, "the fused MLP ran on a device without SHADER_F16");
}
