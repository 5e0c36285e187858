//! `instance_norm_leaky_relu` (src/ops/norm.rs): InstanceNorm and LeakyReLU as one recorded op.
//! Bit for bit the two ops run one after the other, forward and every gradient (x, γ, β), with
//! and without affine, slopes 0, 0.01 and 0.2, odd channel counts and N > 1; against the f64
//! reference, whose backward is checked against finite differences; a negative slope runs the
//! two ops; which kernels run; the tape holds one activation less than the two ops' tapes, and
//! under autocast (where y is recomputed in backward) half of one less, with the f32 gradients.

mod common;

use cads::gpu::Precision;
use cads::reference::{gradcheck, norm as refn, Array};
use cads::util::{Rng, Tolerance, F32_GRAD, FD_F64};
use cads::{ops, Gpu, Tensor};
use common::*;

/// Normalised outputs are O(1) and go through two f32 reductions (as tests/norm.rs).
const NORM_OUT: Tolerance = Tolerance {
    abs: 2e-5,
    rel: 1e-4,
};

/// Panics naming `what` and the first element whose bits differ (or the lengths).
fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} against {}", got[i], want[i]);
    }
}

/// x, the affine (γ, β) if any, and the upstream gradient.
type Inputs<'a> = (&'a [f32], Option<(&'a [f32], &'a [f32])>, &'a [f32]);

/// One run: the output and the gradients of x (and of γ, β with affine) for upstream `g`.
fn run(
    gpu: &Gpu,
    fused: bool,
    (x, affine, g): Inputs,
    shape: &[usize],
    slope: f32,
) -> Vec<Vec<f32>> {
    let c = *shape.last().unwrap();
    let param =
        |v: &[f32], s: &[usize]| Tensor::from_slice(gpu, v, s).unwrap().requires_grad_(true);
    let tx = param(x, shape);
    let ta = affine.map(|(gm, bt)| (param(gm, &[c]), param(bt, &[c])));
    let pair = ta.as_ref().map(|(a, b)| (a, b));
    let y = if fused {
        ops::instance_norm_leaky_relu(&tx, pair, 1e-5, slope).unwrap()
    } else {
        ops::leaky_relu(&ops::instance_norm(&tx, pair, 1e-5).unwrap(), slope).unwrap()
    };
    let grads = y
        .backward_with(&Tensor::from_slice(gpu, g, shape).unwrap())
        .unwrap();
    let mut out = vec![
        y.to_vec().unwrap(),
        grads.get(&tx).unwrap().to_vec().unwrap(),
    ];
    if let Some((a, b)) = &ta {
        out.push(grads.get(a).unwrap().to_vec().unwrap());
        out.push(grads.get(b).unwrap().to_vec().unwrap());
    }
    out
}

const SHAPES: [&[usize]; 4] = [
    &[2, 5, 7, 3],
    &[1, 4, 6, 6, 16],
    &[3, 17, 5],
    &[2, 3, 3, 3, 33],
];

#[test]
fn the_fused_op_is_the_two_ops_bit_for_bit_and_matches_the_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for shape in SHAPES {
        let c = *shape.last().unwrap();
        let n: usize = shape.iter().product();
        for affine in [false, true] {
            for slope in [0.01, 0.0, 0.2] {
                let what = format!("{shape:?} affine {affine} slope {slope}");
                let x = rng.vec_uniform(n, -2.0, 3.0);
                let gm = rng.vec_uniform(c, 0.5, 1.5);
                let bt = rng.vec_uniform(c, -0.5, 0.5);
                let g = rng.vec_uniform(n, -1.0, 1.0);
                let inputs = (&x[..], affine.then_some((&gm[..], &bt[..])), &g[..]);
                let got = run(&gpu, true, inputs, shape, slope);
                let want = run(&gpu, false, inputs, shape, slope);
                for (i, part) in ["y", "dx", "dgamma", "dbeta"]
                    .iter()
                    .enumerate()
                    .take(got.len())
                {
                    assert_same_bits(&got[i], &want[i], &format!("{what} {part}"));
                }
                let xa = Array::from_f32(&x, shape);
                let (gm64, bt64): (Vec<f64>, Vec<f64>) = (
                    gm.iter().map(|&v| v as f64).collect(),
                    bt.iter().map(|&v| v as f64).collect(),
                );
                let aff = affine.then_some((&gm64[..], &bt64[..]));
                let y = refn::instance_norm_leaky_relu(&xa, aff, 1e-5, slope);
                assert_close(&format!("{what} y"), &got[0], &y.data, NORM_OUT);
                let ga = Array::from_f32(&g, shape);
                let w = refn::instance_norm_leaky_relu_backward(&xa, aff, 1e-5, slope, &ga);
                assert_close(&format!("{what} dx"), &got[1], &w.x.data, F32_GRAD);
                if affine {
                    assert_close(&format!("{what} dgamma"), &got[2], &w.gamma.data, F32_GRAD);
                    assert_close(&format!("{what} dbeta"), &got[3], &w.beta.data, F32_GRAD);
                }
            }
        }
    }
}

#[test]
fn the_reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(43);
    let shape = [2, 3, 2, 3];
    let n: usize = shape.iter().product();
    let x: Vec<f64> = (0..n).map(|_| rng.range(-2.0, 2.0)).collect();
    let gm: Vec<f64> = (0..3).map(|_| rng.range(0.5, 1.5)).collect();
    let bt: Vec<f64> = (0..3).map(|_| rng.range(-0.5, 0.5)).collect();
    let g: Vec<f64> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
    let (eps, slope) = (1e-5, 0.1);
    let xa = Array::new(x.clone(), &shape);
    let fwd = |x: &Array, gm: &[f64], bt: &[f64]| {
        refn::instance_norm_leaky_relu(x, Some((gm, bt)), eps, slope).data
    };
    let want = refn::instance_norm_leaky_relu_backward(
        &xa,
        Some((&gm, &bt)),
        eps,
        slope,
        &Array::new(g.clone(), &shape),
    );
    let fx = |v: &[f64]| gradcheck::dot(&fwd(&Array::new(v.to_vec(), &shape), &gm, &bt), &g);
    let fg = |v: &[f64]| gradcheck::dot(&fwd(&xa, v, &bt), &g);
    let fb = |v: &[f64]| gradcheck::dot(&fwd(&xa, &gm, v), &g);
    let fd = |f: &dyn Fn(&[f64]) -> f64, at: &[f64]| gradcheck::numeric_gradient(f, at, 1e-6);
    assert_close64("fd x", &want.x.data, &fd(&fx, &x), FD_F64);
    assert_close64("fd gamma", &want.gamma.data, &fd(&fg, &gm), FD_F64);
    assert_close64("fd beta", &want.beta.data, &fd(&fb, &bt), FD_F64);
}

/// The fused kernel runs and no elementwise forward follows it; a negative slope (where the
/// output's sign no longer tells the input's) runs the two ops, with the same values.
#[test]
fn kernels_that_run_and_a_negative_slope() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(47);
    let shape = [2, 4, 4, 4, 8];
    let x = Tensor::from_slice(&gpu, &rng.vec_uniform(1024, -1.0, 1.0), &shape).unwrap();
    let (_, kernels) = ran(&gpu, || ops::instance_norm_leaky_relu(&x, None, 1e-5, 0.01));
    assert!(
        kernels.contains(&"instance_norm::instance_norm_apply_leaky".to_string()),
        "{kernels:?}"
    );
    assert!(
        !kernels.iter().any(|k| k.starts_with("elementwise::")),
        "{kernels:?}"
    );
    let (y, kernels) = ran(&gpu, || ops::instance_norm_leaky_relu(&x, None, 1e-5, -0.1));
    assert!(
        kernels.iter().any(|k| k.starts_with("elementwise::")),
        "{kernels:?}"
    );
    let want = ops::leaky_relu(&ops::instance_norm(&x, None, 1e-5).unwrap(), -0.1).unwrap();
    assert_same_bits(
        &y.unwrap().to_vec().unwrap(),
        &want.to_vec().unwrap(),
        "slope -0.1",
    );
}

/// What the tape holds beyond the output: the two ops keep x, the normalised y and the
/// statistics; the fused op keeps x, the statistics and its output (no new bytes).
#[test]
fn the_tape_holds_one_activation_less() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(53);
    let shape = [2, 8, 8, 8, 16];
    let n: usize = shape.iter().product();
    let x = Tensor::from_slice(&gpu, &rng.vec_uniform(n, -1.0, 1.0), &shape)
        .unwrap()
        .requires_grad_(true);
    let held = |fused: bool| {
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        let y = if fused {
            ops::instance_norm_leaky_relu(&x, None, 1e-5, 0.01).unwrap()
        } else {
            ops::leaky_relu(&ops::instance_norm(&x, None, 1e-5).unwrap(), 0.01).unwrap()
        };
        gpu.synchronize().unwrap();
        let bytes = gpu.pool_stats().live_bytes - before;
        drop(y);
        bytes
    };
    let (two, one) = (held(false), held(true));
    assert_eq!(two - one, (n * 4) as u64, "two ops {two} B, fused {one} B");
}

/// Under autocast the next layer keeps an f16 copy of z, so the fused op keeps nothing of its
/// own and recomputes y in backward: half an activation less than the two ops (whose LeakyReLU
/// keeps y's f16 rounding), and the same bits as the f32 path's gradients.
#[test]
fn under_autocast_it_keeps_nothing_and_recomputes_y() {
    let gpu = fresh_gpu();
    assert!(
        gpu.features().f16,
        "the test adapter must have SHADER_F16 (lavapipe has it)"
    );
    let mut rng = Rng::new(59);
    let shape = [2, 8, 8, 8, 16];
    let n: usize = shape.iter().product();
    let xs = rng.vec_uniform(n, -1.0, 1.0);
    let gs = rng.vec_uniform(n, -1.0, 1.0);
    // (bytes held beyond the output, gradient of x), under `precision`.
    let run = |fused: bool, precision: Precision| {
        let x = Tensor::from_slice(&gpu, &xs, &shape)
            .unwrap()
            .requires_grad_(true);
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        let y = gpu.autocast(precision, || {
            if fused {
                ops::instance_norm_leaky_relu(&x, None, 1e-5, 0.01).unwrap()
            } else {
                ops::leaky_relu(&ops::instance_norm(&x, None, 1e-5).unwrap(), 0.01).unwrap()
            }
        });
        gpu.synchronize().unwrap();
        let held = gpu.pool_stats().live_bytes - before - (n * 4) as u64;
        let grads = y
            .backward_with(&Tensor::from_slice(&gpu, &gs, &shape).unwrap())
            .unwrap();
        (held, grads.get(&x).unwrap().to_vec().unwrap())
    };
    let (two, _) = run(false, Precision::Mixed);
    let (one, dx_mixed) = run(true, Precision::Mixed);
    assert_eq!(
        two - one,
        (n * 2) as u64,
        "two ops {two} B, fused {one} B under autocast"
    );
    let (_, dx_f32) = run(true, Precision::F32);
    assert_same_bits(&dx_mixed, &dx_f32, "dx under autocast against f32");
}
