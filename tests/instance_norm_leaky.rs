//! `instance_norm_leaky_relu` (src/ops/norm/instance.rs): InstanceNorm and LeakyReLU as one
//! recorded op.
//! Bit for bit the two ops run one after the other, forward and every gradient (x, γ, β), with
//! and without affine, slopes 0, 1e-4, 0.01 and 0.2, odd channel counts and N > 1; against the
//! f64 reference, whose backward is checked against finite differences — except the x gradient
//! without affine and with slope ≥ 1e-3, which comes from the output (y = LeakyReLU⁻¹(z)) and
//! is within one f32 rounding; a negative slope runs the two ops; which kernels run; the tape
//! holding no activation of the op's own, and under autocast z's f16 rounding, shared.

mod common;

use cads::gpu::Precision;
use cads::ops::norm::MIN_SLOPE_FROM_OUTPUT;
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

/// The gradient of x from x̂ = z / slope against the one from x̂ = (x − μ)·rstd: x̂ differs by an
/// f32 rounding, and gx = rstd·(g − B/S − x̂·A/S) carries it through one product.
const ONE_ROUNDING: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
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
fn the_fused_op_matches_the_two_ops_and_the_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for shape in SHAPES {
        let c = *shape.last().unwrap();
        let n: usize = shape.iter().product();
        for affine in [false, true] {
            for slope in [0.01, 0.0, 0.2, 1e-4] {
                let what = format!("{shape:?} affine {affine} slope {slope}");
                let x = rng.vec_uniform(n, -2.0, 3.0);
                let gm = rng.vec_uniform(c, 0.5, 1.5);
                let bt = rng.vec_uniform(c, -0.5, 0.5);
                let g = rng.vec_uniform(n, -1.0, 1.0);
                let inputs = (&x[..], affine.then_some((&gm[..], &bt[..])), &g[..]);
                let got = run(&gpu, true, inputs, shape, slope);
                let want = run(&gpu, false, inputs, shape, slope);
                assert_same_bits(&got[0], &want[0], &format!("{what} y"));
                if !affine && slope >= MIN_SLOPE_FROM_OUTPUT {
                    // x̂ from the output: z / slope rounds once (f32) where the two ops
                    // computed (x − μ)·rstd.
                    assert_close(
                        &format!("{what} dx"),
                        &got[1],
                        &to64(&want[1]),
                        ONE_ROUNDING,
                    );
                } else {
                    for (i, part) in ["dx", "dgamma", "dbeta"]
                        .iter()
                        .enumerate()
                        .take(got.len() - 1)
                    {
                        assert_same_bits(&got[i + 1], &want[i + 1], &format!("{what} {part}"));
                    }
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

/// What the tape holds beyond the output when x is an intermediate (freed unless kept): the two
/// ops keep x and the normalised y; the fused op without affine keeps neither (its output and
/// the statistics are enough), with affine it keeps x.
#[test]
fn the_tape_holds_no_activation_of_its_own() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(53);
    let shape = [2, 8, 8, 8, 16];
    let c = 16;
    let n: usize = shape.iter().product();
    let p = Tensor::from_slice(&gpu, &rng.vec_uniform(n, -1.0, 1.0), &shape)
        .unwrap()
        .requires_grad_(true);
    let gm = Tensor::from_slice(&gpu, &vec![1.0; c], &[c])
        .unwrap()
        .requires_grad_(true);
    let bt = Tensor::zeros(&gpu, &[c]).unwrap().requires_grad_(true);
    let held = |fused: bool, affine: bool| {
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        let x = ops::scale(&p, 1.0).unwrap();
        let pair = affine.then_some((&gm, &bt));
        let y = if fused {
            ops::instance_norm_leaky_relu(&x, pair, 1e-5, 0.01).unwrap()
        } else {
            ops::leaky_relu(&ops::instance_norm(&x, pair, 1e-5).unwrap(), 0.01).unwrap()
        };
        drop(x);
        gpu.synchronize().unwrap();
        let bytes = gpu.pool_stats().live_bytes - before - (n * 4) as u64;
        drop(y);
        bytes
    };
    let activation = (n * 4) as u64;
    let fused = held(true, false);
    assert!(
        fused < activation / 8,
        "fused without affine holds {fused} B beyond its output"
    );
    let two = held(false, false);
    assert!(
        two >= fused + 2 * activation,
        "two ops {two} B, fused {fused} B"
    );
    let fused_affine = held(true, true);
    assert!(
        fused_affine >= activation,
        "fused with affine keeps x: {fused_affine} B"
    );
}

/// Under autocast the op without affine keeps z's f16 rounding, the one the next layer keeps
/// (shared: a GELU after it adds its output only); its x gradient is within f16 rounding of the
/// f32 path's (y from z16: relative 2⁻¹¹ of each y, carried through one product).
#[test]
fn under_autocast_it_keeps_the_outputs_shared_f16_rounding() {
    let gpu = fresh_gpu();
    assert!(
        gpu.features().f16,
        "the test adapter must have SHADER_F16 (lavapipe has it)"
    );
    let mut rng = Rng::new(59);
    let shape = [2, 8, 8, 8, 16];
    let n: usize = shape.iter().product();
    let xs = rng.vec_uniform(n, -1.0, 1.0);
    // An upstream gradient correlated with the output (as a loss's is), so that A = Σ_s g·ŷ is
    // large and an imbalance of the rounded ŷ shows in Σ_s gx.
    let gs: Vec<f32> = rng
        .vec_uniform(n, -1.0, 1.0)
        .iter()
        .zip(&xs)
        .map(|(g, x)| g + 2.0 * x)
        .collect();
    let p = Tensor::from_slice(&gpu, &xs, &shape)
        .unwrap()
        .requires_grad_(true);
    // (bytes held beyond the last output, gradient of p), under `precision`.
    let run = |then_gelu: bool, precision: Precision| {
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        let y = gpu.autocast(precision, || {
            let x = ops::scale(&p, 1.0).unwrap();
            let z = ops::instance_norm_leaky_relu(&x, None, 1e-5, 0.01).unwrap();
            if then_gelu {
                ops::gelu(&z).unwrap()
            } else {
                z
            }
        });
        gpu.synchronize().unwrap();
        let held = gpu.pool_stats().live_bytes - before - (n * 4) as u64;
        let grads = y
            .backward_with(&Tensor::from_slice(&gpu, &gs, &shape).unwrap())
            .unwrap();
        (held, grads.get(&p).unwrap().to_vec().unwrap())
    };
    let (alone, dx_mixed) = run(false, Precision::Mixed);
    let half = (n * 2) as u64;
    assert!(
        alone >= half && alone < half + half / 4,
        "keeps z16 and the stats: {alone} B"
    );
    let (with_gelu, _) = run(true, Precision::Mixed);
    assert!(
        with_gelu < alone + half / 4,
        "GELU shares z16: {with_gelu} B against {alone} B"
    );
    let (_, dx_f32) = run(false, Precision::F32);
    let (mut d, mut m) = (0.0f64, 0.0f64);
    for (a, b) in dx_mixed.iter().zip(&dx_f32) {
        d += ((a - b) as f64).powi(2);
        m += (*b as f64).powi(2);
    }
    let err = (d / m).sqrt();
    println!("held {alone} B alone, {with_gelu} B with a GELU after; dx relative L2 {err:e}");
    // Each y is off by at most u = 2⁻¹¹ relative (measured 2.4e-4 in the L2 sense).
    assert!(
        err > 0.0 && err < 4.9e-4,
        "dx under autocast: relative L2 {err:e} against f32"
    );
    // Σ_s gx = 0 per (n, c) in exact arithmetic (a bias ahead of the norm has no gradient); the
    // kernel centres the rounded ŷ so that it stays 0 to f32 noise, not to f16 rounding
    // (measured worst |Σ gx| / Σ|gx| 1.5e-7; 3.2e-5 without the centring).
    let (c, s) = (16, n / (2 * 16));
    for sample in 0..2 {
        for ch in 0..c {
            let col = (0..s).map(|i| dx_mixed[(sample * s + i) * c + ch] as f64);
            let (sum, abs) = col.fold((0.0, 0.0), |(a, b), v| (a + v, b + v.abs()));
            assert!(
                sum.abs() <= 1e-5 * abs,
                "n {sample} c {ch}: Σ gx {sum:e} of Σ|gx| {abs:e}"
            );
        }
    }
}
