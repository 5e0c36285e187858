//! `ops::gelu_linear` (linear(GELU(h)) keeping h alone) and `Linear::forward_gelu`: the two
//! ops' values and gradients bit for bit, on the vec4 tiles and a ragged fallback; the f64
//! reference; the reference's backward against finite differences; the tape holding one
//! hidden-width tensor less; typed errors. Under autocast: tests/gelu_linear_mixed.rs.
mod common;

use cads::gpu::Precision;
use cads::nn::{Linear, LinearInit};
use cads::ops;
use cads::reference::gelu_linear as rgl;
use cads::reference::gradcheck::{dot, numeric_gradient};
use cads::reference::Array;
use cads::tensor::DType;
use cads::util::{Rng, F32_ACCUM, F32_GRAD, FD_F64};
use cads::{Gpu, Tensor};
use common::*;

/// (h [.., Cin], Cout): vec4 tiles (Cin, Cout multiples of 4) and a ragged shape (the 4×4
/// fallback), rows past the autocast threshold of 256 in the first.
const CASES: [(&[usize], usize); 2] = [(&[2, 150, 64], 24), (&[3, 5, 6], 7)];

struct Outputs {
    y: Vec<f32>,
    gh: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

/// One forward and backward, fused or as the two ops, on leaves made from the same values.
fn run(gpu: &Gpu, hs: &[usize], cout: usize, fused: bool, precision: Precision) -> Outputs {
    let mut rng = Rng::new(5);
    let cin = *hs.last().unwrap();
    let layer = Linear::new(gpu, cin, cout, true, LinearInit::Torch, &mut rng).unwrap();
    let b = layer.bias.as_ref().unwrap();
    let h = Tensor::from_slice(gpu, &rng.vec_uniform(hs.iter().product(), -3.0, 3.0), hs)
        .unwrap()
        .requires_grad_(true);
    let y = gpu
        .autocast(precision, || {
            if fused {
                layer.forward_gelu(&h)
            } else {
                layer.forward(&ops::gelu(&h)?)
            }
        })
        .unwrap();
    let g = Tensor::from_slice(gpu, &rng.vec_uniform(y.numel(), -1.0, 1.0), y.shape()).unwrap();
    let grads = y.backward_with(&g).unwrap();
    let read = |t: &Tensor| grads.get(t).expect("a gradient").to_vec().unwrap();
    Outputs {
        y: y.to_vec().unwrap(),
        gh: read(&h),
        gw: read(&layer.weight),
        gb: read(b),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn f32_values_and_gradients_are_the_two_ops_bit_for_bit() {
    let gpu = gpu();
    for (hs, cout) in CASES {
        let two = run(&gpu, hs, cout, false, Precision::F32);
        let one = run(&gpu, hs, cout, true, Precision::F32);
        let what = format!("h {hs:?} to {cout}");
        assert_eq!(bits(&one.y), bits(&two.y), "{what}: y");
        assert_eq!(bits(&one.gh), bits(&two.gh), "{what}: grad h");
        assert_eq!(bits(&one.gw), bits(&two.gw), "{what}: grad w");
        assert_eq!(bits(&one.gb), bits(&two.gb), "{what}: grad bias");
    }
}

#[test]
fn matches_the_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    for (hs, cout) in CASES {
        let cin = *hs.last().unwrap();
        let rows = hs.iter().product::<usize>() / cin;
        let (h, th) = random_param(&gpu, &mut rng, &[rows, cin], -3.0, 3.0);
        let (w, tw) = random_param(&gpu, &mut rng, &[cin, cout], -1.0, 1.0);
        let (b, tb) = random_param(&gpu, &mut rng, &[cout], -1.0, 1.0);
        let y = ops::gelu_linear(&th, &tw, Some(&tb)).unwrap();
        let what = format!("h {hs:?} to {cout}");
        let want = rgl::gelu_linear(&h, &w, Some(&b.data));
        assert_close(&what, &y.to_vec().unwrap(), &want.data, F32_ACCUM);
        let (g, tg) = random_pair(&gpu, &mut rng, y.shape(), -1.0, 1.0);
        let grads = y.backward_with(&tg).unwrap();
        let (gh, gw, gb) = rgl::gelu_linear_backward(&h, &w, &g);
        for (name, t, want) in [("h", &th, &gh), ("w", &tw, &gw), ("bias", &tb, &gb)] {
            let got = grads.get(t).unwrap().to_vec().unwrap();
            assert_close(&format!("{what} grad {name}"), &got, &want.data, F32_GRAD);
        }
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(13);
    let (rows, cin, cout) = (3, 5, 4);
    let h = Array::from_f32(&rng.vec_uniform(rows * cin, -2.0, 2.0), &[rows, cin]);
    let w = Array::from_f32(&rng.vec_uniform(cin * cout, -1.0, 1.0), &[cin, cout]);
    let b = rng.vec_uniform(cout, -1.0, 1.0);
    let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let g = Array::from_f32(&rng.vec_uniform(rows * cout, -1.0, 1.0), &[rows, cout]);
    let (gh, gw, gb) = rgl::gelu_linear_backward(&h, &w, &g);
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
    assert_close64("grad h", &gh.data, &nh, FD_F64);
    assert_close64("grad w", &gw.data, &nw, FD_F64);
    assert_close64("grad bias", &gb.data, &nb, FD_F64);
}

/// The tape holds GELU(h) for the two ops and not for the fused one: the bytes alive between the
/// forward and the backward differ by at least a's (rows × Cin f32).
#[test]
fn the_tape_keeps_one_hidden_width_tensor_less() {
    let gpu = fresh_gpu();
    let (hs, cout) = (&[2usize, 150, 64][..], 24);
    let held = |fused: bool| {
        let mut rng = Rng::new(2);
        let layer = Linear::new(&gpu, 64, cout, true, LinearInit::Torch, &mut rng).unwrap();
        let h = Tensor::from_slice(&gpu, &rng.vec_uniform(2 * 150 * 64, -1.0, 1.0), hs)
            .unwrap()
            .requires_grad_(true);
        gpu.synchronize().unwrap();
        let before = gpu.pool_stats().live_bytes;
        let y = if fused {
            layer.forward_gelu(&h).unwrap()
        } else {
            layer.forward(&ops::gelu(&h).unwrap()).unwrap()
        };
        let alive = gpu.pool_stats().live_bytes - before;
        drop(y);
        alive
    };
    let (two, one) = (held(false), held(true));
    let a_bytes = 2 * 150 * 64 * 4;
    assert!(
        two >= one + a_bytes,
        "two ops hold {two} bytes, fused {one}: expected at least {a_bytes} fewer"
    );
}

#[test]
fn bad_shapes_and_types_are_typed_errors() {
    let gpu = gpu();
    let h = Tensor::zeros(&gpu, &[4, 6]).unwrap();
    let w = Tensor::zeros(&gpu, &[5, 3]).unwrap();
    let err = ops::gelu_linear(&h, &w, None).unwrap_err().to_string();
    assert!(err.contains("gelu_linear"), "{err}");
    let w = Tensor::zeros(&gpu, &[6, 3]).unwrap();
    let bias = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = ops::gelu_linear(&h, &w, Some(&bias))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gelu_linear"), "{err}");
    if gpu.features().f16 {
        let h16 = h.to_dtype(DType::F16).unwrap();
        let err = ops::gelu_linear(&h16, &w, None).unwrap_err().to_string();
        assert!(err.contains("gelu_linear"), "{err}");
    }
}
