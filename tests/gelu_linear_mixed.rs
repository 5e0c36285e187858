//! `ops::gelu_linear_mixed` (linear(GELU(h)) under mixed precision, keeping h's f16 rounding
//! alone) and the f16 unary kernels it stands on (src/ops/unary_f16.rs): the f64 reference of
//! the rounded computation, forward and backward, on vec4 tiles and a ragged shape; the
//! reference's straight-through gradients against finite differences of the unrounded function;
//! the f32 op within mixed-precision error; the same values from the f32 fallback on a device
//! without `SHADER_F16`; `Linear::forward_gelu`'s choice of path; the tape holding one f16
//! hidden-width tensor less than the two ops; activation backwards under autocast reading their
//! f16 copy directly; typed errors.
mod common;

use cads::gpu::{AdapterChoice, Precision};
use cads::nn::{Linear, LinearInit};
use cads::ops::{self, UnaryOp};
use cads::reference::cast::round_to_f16;
use cads::reference::elementwise as re;
use cads::reference::gelu_linear as rgl;
use cads::reference::gradcheck::{dot, numeric_gradient};
use cads::reference::Array;
use cads::tensor::DType;
use cads::util::{Rng, Tolerance, F32_POINTWISE};
use cads::{Gpu, Tensor};
use common::*;

/// (h [.., Cin], Cout): vec4 tiles (Cin, Cout multiples of 4) with more rows than the
/// autocast threshold of 256, and a ragged shape (the naive f16 kernel, scalar GELU).
const CASES: [(&[usize], usize); 2] = [(&[2, 150, 64], 24), (&[3, 5, 6], 7)];

/// Against the reference of the rounded computation. Besides f32 accumulation (1e-4 at these
/// sums), an element of a16 may sit one f16 step (2⁻¹¹·|a| ≤ 1.5e-3 for |h| ≤ 3) off the
/// reference's where the f32 GELU and the exact one round to neighbours; that moves one term of
/// a sum of y or ∂w by at most 1.5e-3·|w| or 1.5e-3·|g|.
const ROUNDED: Tolerance = Tolerance {
    abs: 2e-3,
    rel: 1e-3,
};

struct Outputs {
    y: Vec<f32>,
    gh: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

struct Inputs {
    h: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    g: Vec<f32>,
}

fn inputs(hs: &[usize], cout: usize, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let cin = *hs.last().unwrap();
    let rows: usize = hs.iter().product::<usize>() / cin;
    let bound = 1.0 / (cin as f32).sqrt();
    Inputs {
        h: rng.vec_uniform(rows * cin, -3.0, 3.0),
        w: rng.vec_uniform(cin * cout, -bound, bound),
        b: rng.vec_uniform(cout, -bound, bound),
        g: rng.vec_uniform(rows * cout, -1.0, 1.0),
    }
}

/// `gelu_linear_mixed` forward and backward on leaves holding `inp`.
fn run_op(gpu: &Gpu, hs: &[usize], cout: usize, inp: &Inputs) -> Outputs {
    let cin = *hs.last().unwrap();
    let h = Tensor::parameter(gpu, &inp.h, hs).unwrap();
    let w = Tensor::parameter(gpu, &inp.w, &[cin, cout]).unwrap();
    let b = Tensor::parameter(gpu, &inp.b, &[cout]).unwrap();
    let y = ops::gelu_linear_mixed(&h, &w, Some(&b)).unwrap();
    let g = Tensor::from_slice(gpu, &inp.g, y.shape()).unwrap();
    let grads = y.backward_with(&g).unwrap();
    let read = |t: &Tensor| grads.get(t).expect("a gradient").to_vec().unwrap();
    Outputs {
        y: y.to_vec().unwrap(),
        gh: read(&h),
        gw: read(&w),
        gb: read(&b),
    }
}

fn arrays(hs: &[usize], cout: usize, inp: &Inputs) -> (Array, Array, Vec<f64>, Array) {
    let cin = *hs.last().unwrap();
    let rows = inp.h.len() / cin;
    (
        Array::from_f32(&inp.h, &[rows, cin]),
        Array::from_f32(&inp.w, &[cin, cout]),
        inp.b.iter().map(|&v| v as f64).collect(),
        Array::from_f32(&inp.g, &[rows, cout]),
    )
}

fn check_against_reference(label: &str, got: &Outputs, hs: &[usize], cout: usize, inp: &Inputs) {
    let (h, w, b, g) = arrays(hs, cout, inp);
    let y = rgl::gelu_linear_mixed(&h, &w, Some(&b));
    let (gh, gw, gb) = rgl::gelu_linear_mixed_backward(&h, &w, &g);
    assert_close(&format!("{label} y"), &got.y, &y.data, ROUNDED);
    assert_close(&format!("{label} grad h"), &got.gh, &gh.data, ROUNDED);
    assert_close(&format!("{label} grad w"), &got.gw, &gw.data, ROUNDED);
    assert_close(&format!("{label} grad bias"), &got.gb, &gb.data, ROUNDED);
}

#[test]
fn matches_the_reference_of_the_rounded_computation() {
    let gpu = gpu();
    assert!(
        gpu.features().f16,
        "the test adapter should offer SHADER_F16"
    );
    for (i, &(hs, cout)) in CASES.iter().enumerate() {
        let inp = inputs(hs, cout, 3 + i as u64);
        check_against_reference(
            &format!("{hs:?}"),
            &run_op(&gpu, hs, cout, &inp),
            hs,
            cout,
            &inp,
        );
    }
}

/// Without `SHADER_F16` the op runs on f32 kernels between exact widenings and gives the
/// reference's values too (and no f16 shader is built).
#[test]
fn without_shader_f16_the_fallback_gives_the_same_values() {
    let gpu = Gpu::with_choice_withholding(&AdapterChoice::from_env(), wgpu::Features::SHADER_F16)
        .map(test_tuning)
        .unwrap_or_else(|e| panic!("GPU test cannot run: {e}"));
    assert!(!gpu.features().f16);
    for (i, &(hs, cout)) in CASES.iter().enumerate() {
        let inp = inputs(hs, cout, 3 + i as u64);
        let got = run_op(&gpu, hs, cout, &inp);
        check_against_reference(&format!("no f16 {hs:?}"), &got, hs, cout, &inp);
    }
    gpu.synchronize().unwrap();
}

/// The reference's gradients go straight through the roundings: at inputs that are f16 values
/// already they are the finite differences of the unrounded f64 function, up to GELU's output
/// rounding (one f16 step, relative 2⁻¹¹, in each product).
#[test]
fn reference_gradients_are_the_straight_through_ones() {
    let mut rng = Rng::new(17);
    let (rows, cin, cout) = (4, 5, 3);
    let f16_values = |n: usize, lo: f32, hi: f32, rng: &mut Rng| {
        round_to_f16(&Array::from_f32(&rng.vec_uniform(n, lo, hi), &[n])).data
    };
    let h = Array::new(f16_values(rows * cin, -2.0, 2.0, &mut rng), &[rows, cin]);
    let w = Array::new(f16_values(cin * cout, -1.0, 1.0, &mut rng), &[cin, cout]);
    let b: Vec<f64> = rng
        .vec_uniform(cout, -1.0, 1.0)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let g = Array::new(f16_values(rows * cout, -1.0, 1.0, &mut rng), &[rows, cout]);
    let (gh, gw, gb) = rgl::gelu_linear_mixed_backward(&h, &w, &g);
    let loss =
        |h: &Array, w: &Array, b: &[f64]| dot(&rgl::gelu_linear(h, w, Some(b)).data, &g.data);
    let nh = numeric_gradient(
        |x| loss(&Array::new(x.to_vec(), &h.shape), &w, &b),
        &h.data,
        1e-5,
    );
    let nw = numeric_gradient(
        |x| loss(&h, &Array::new(x.to_vec(), &w.shape), &b),
        &w.data,
        1e-5,
    );
    let nb = numeric_gradient(|x| loss(&h, &w, x), &b, 1e-5);
    let tol = Tolerance {
        abs: 1e-3,
        rel: 2e-3,
    };
    assert_close64("grad h", &gh.data, &nh, tol);
    assert_close64("grad w", &gw.data, &nw, tol);
    assert_close64("grad bias", &gb.data, &nb, FD_EXACT);
    // The roundings are really applied: the forward differs from the unrounded one.
    let y16 = rgl::gelu_linear_mixed(&h, &w, Some(&b));
    let y = rgl::gelu_linear(&h, &w, Some(&b));
    assert!(y16.data.iter().zip(&y.data).any(|(a, b)| a != b));
}

/// ∂bias = Σ_rows g involves no rounding but g's, which is an f16 value here.
const FD_EXACT: Tolerance = cads::util::FD_F64;

/// Against the unrounded f32 computation (the f64 reference of `gelu_linear`), the error is
/// mixed precision's: relative L2 within 1e-2 for every output and gradient.
#[test]
fn stays_within_mixed_precision_error_of_the_f32_op() {
    let gpu = gpu();
    let (hs, cout) = CASES[0];
    let inp = inputs(hs, cout, 9);
    let got = run_op(&gpu, hs, cout, &inp);
    let (h, w, b, g) = arrays(hs, cout, &inp);
    let y = rgl::gelu_linear(&h, &w, Some(&b));
    let (gh, gw, gb) = rgl::gelu_linear_backward(&h, &w, &g);
    for (what, got, want) in [
        ("y", &got.y, &y.data),
        ("grad h", &got.gh, &gh.data),
        ("grad w", &got.gw, &gw.data),
        ("grad bias", &got.gb, &gb.data),
    ] {
        let err = relative_l2(got, want);
        assert!(err < 1e-2, "{what}: relative L2 {err:e} against f32");
        assert!(
            err > 0.0 || what == "grad bias",
            "{what}: no rounding at all?"
        );
    }
}

/// `Linear::forward_gelu` takes this op under autocast from 256 rows on (bit for bit), and the
/// f32 `gelu_linear` below that and outside autocast; on a device without f16, autocast is the
/// f32 op.
#[test]
fn forward_gelu_picks_the_mixed_op_under_autocast() {
    let gpu = gpu();
    let mut rng = Rng::new(4);
    let layer = Linear::new(&gpu, 64, 24, true, LinearInit::Torch, &mut rng).unwrap();
    let bits =
        |t: &Tensor| -> Vec<u32> { t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect() };
    for (rows, mixed) in [(300usize, true), (100, false)] {
        let h =
            Tensor::from_slice(&gpu, &rng.vec_uniform(rows * 64, -2.0, 2.0), &[rows, 64]).unwrap();
        let auto = gpu
            .autocast(Precision::Mixed, || layer.forward_gelu(&h))
            .unwrap();
        let b = layer.bias.as_ref();
        let want = if mixed {
            ops::gelu_linear_mixed(&h, &layer.weight, b).unwrap()
        } else {
            ops::gelu_linear(&h, &layer.weight, b).unwrap()
        };
        assert_eq!(bits(&auto), bits(&want), "{rows} rows under autocast");
        let plain = layer.forward_gelu(&h).unwrap();
        let f32_op = ops::gelu_linear(&h, &layer.weight, b).unwrap();
        assert_eq!(bits(&plain), bits(&f32_op), "{rows} rows in f32");
        assert_eq!(
            bits(&auto) == bits(&plain),
            !mixed,
            "{rows} rows: mixed really ran"
        );
    }
}

/// Under autocast the two ops keep GELU's input and fc2's input in f16; the fused op keeps the
/// first alone: at least one f16 hidden-width tensor fewer bytes alive after the forward.
#[test]
fn the_tape_keeps_one_f16_hidden_width_tensor_less() {
    let gpu = fresh_gpu();
    let (rows, cin, cout) = (300usize, 64usize, 24usize);
    let held = |fused: bool| {
        let mut rng = Rng::new(2);
        let layer = Linear::new(&gpu, cin, cout, true, LinearInit::Torch, &mut rng).unwrap();
        let h = Tensor::from_slice(&gpu, &rng.vec_uniform(rows * cin, -1.0, 1.0), &[rows, cin])
            .unwrap()
            .requires_grad_(true);
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        let y = gpu
            .autocast(Precision::Mixed, || {
                if fused {
                    layer.forward_gelu(&h)
                } else {
                    layer.forward(&ops::gelu(&h)?)
                }
            })
            .unwrap();
        let alive = gpu.pool_stats().live_bytes - before;
        drop(y);
        alive
    };
    let (two, one) = (held(false), held(true));
    let a16_bytes = (rows * cin * 2) as u64;
    assert!(
        two >= one + a16_bytes,
        "two ops hold {two} bytes, fused {one}: expected at least {a16_bytes} fewer"
    );
}

/// Activation functions under autocast keep their input's f16 rounding and their backward reads
/// it directly (shaders/unary_f16.wgsl): g · u'(f16(x)) to f32 rounding, on a vec4 length and an
/// odd one.
#[test]
fn activation_backwards_under_autocast_read_the_f16_copy() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    for n in [1024usize, 1023] {
        for op in [UnaryOp::Relu, UnaryOp::LeakyRelu(0.1), UnaryOp::Gelu] {
            let xs = rng.vec_uniform(n, -3.0, 3.0);
            let gs = rng.vec_uniform(n, -1.0, 1.0);
            let x = Tensor::parameter(&gpu, &xs, &[n]).unwrap();
            let y = gpu
                .autocast(Precision::Mixed, || ops::unary(op, &x))
                .unwrap();
            let grads = y
                .backward_with(&Tensor::from_slice(&gpu, &gs, &[n]).unwrap())
                .unwrap();
            let x16 = round_to_f16(&Array::from_f32(&xs, &[n]));
            let want = re::unary_backward(op, &x16, &Array::from_f32(&gs, &[n]));
            let got = grads.get(&x).unwrap().to_vec().unwrap();
            assert_close(&format!("{op:?} n {n}"), &got, &want.data, F32_POINTWISE);
        }
    }
}

#[test]
fn bad_shapes_and_types_are_typed_errors() {
    let gpu = gpu();
    let h = Tensor::zeros(&gpu, &[4, 6]).unwrap();
    let w = Tensor::zeros(&gpu, &[5, 3]).unwrap();
    let err = ops::gelu_linear_mixed(&h, &w, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gelu_linear_mixed"), "{err}");
    let w = Tensor::zeros(&gpu, &[6, 3]).unwrap();
    let bias = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = ops::gelu_linear_mixed(&h, &w, Some(&bias))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gelu_linear_mixed"), "{err}");
    let w16 = w.to_dtype(DType::F16).unwrap();
    let err = ops::gelu_linear_mixed(&h, &w16, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gelu_linear_mixed"), "{err}");
}

/// The backward writes ∂h over ∂a: at most one hidden-width f32 tensor is alive at a time in
/// either form of the op (the two ops' GELU backward had ∂a and ∂h at once).
#[test]
fn the_backward_holds_one_hidden_width_f32_tensor_at_a_time() {
    let gpu = fresh_gpu();
    let (rows, cin, cout) = (512usize, 64usize, 8usize);
    for mixed in [false, true] {
        let mut rng = Rng::new(6);
        let layer = Linear::new(&gpu, cin, cout, true, LinearInit::Torch, &mut rng).unwrap();
        let h = Tensor::from_slice(&gpu, &rng.vec_uniform(rows * cin, -1.0, 1.0), &[rows, cin])
            .unwrap()
            .requires_grad_(true);
        let precision = if mixed {
            Precision::Mixed
        } else {
            Precision::F32
        };
        let y = gpu.autocast(precision, || layer.forward_gelu(&h)).unwrap();
        let g = Tensor::full(&gpu, y.shape(), 1.0).unwrap();
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        gpu.reset_peak_memory();
        let grads = y.backward_with(&g).unwrap();
        assert!(grads.get(&h).is_some());
        let extra = gpu.pool_stats().peak_bytes - before;
        let hidden = (rows * cin * 4) as u64;
        // One hidden-width f32 tensor (∂a, then ∂h in its place; in f32 also the remade a
        // before it, freed once ∂w has it), ∂w, ∂bias and g's f16 copy: under 1.5 of one.
        assert!(
            extra < hidden + hidden / 2,
            "mixed {mixed}: backward peak {extra} B above the forward's, hidden tensor {hidden} B"
        );
    }
}
