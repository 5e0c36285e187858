//! Attention on the GPU (direct and online paths) against the reference, forward and backward;
//! one-key identity; finite differences on the reference; bad input.

mod common;

use cads::ops::{attention, attention_with, AttentionPath};
use cads::reference::{attention as refat, gradcheck, Array};
use cads::util::{Rng, F32_ACCUM, F32_GRAD, FD_F64};
use cads::Tensor;
use common::*;

fn check(n: usize, l: usize, m: usize, heads: usize, hd: usize, path: AttentionPath, seed: u64) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let c = heads * hd;
    let (q, tq) = random_param(&gpu, &mut rng, &[n, l, c], -1.0, 1.0);
    let (k, tk) = random_param(&gpu, &mut rng, &[n, m, c], -1.0, 1.0);
    let (v, tv) = random_param(&gpu, &mut rng, &[n, m, c], -1.0, 1.0);
    let scale = (hd as f32).powf(-0.5);
    let y = attention_with(&tq, &tk, &tv, heads, scale, path).unwrap();
    let what = format!("{path:?} n{n} l{l} m{m} heads{heads} hd{hd}");
    assert_close(
        &format!("{what} forward"),
        &y.to_vec().unwrap(),
        &refat::attention(&q, &k, &v, heads, scale as f64).data,
        F32_ACCUM,
    );
    let g = rng.vec_uniform(y.numel(), -1.0, 1.0);
    let grads = y
        .backward_with(&Tensor::from_slice(&gpu, &g, y.shape()).unwrap())
        .unwrap();
    let (dq, dk, dv) = refat::attention_backward(
        &q,
        &k,
        &v,
        heads,
        scale as f64,
        &Array::from_f32(&g, y.shape()),
    );
    assert_close(
        &format!("{what} dq"),
        &grads.get(&tq).unwrap().to_vec().unwrap(),
        &dq.data,
        F32_GRAD,
    );
    assert_close(
        &format!("{what} dk"),
        &grads.get(&tk).unwrap().to_vec().unwrap(),
        &dk.data,
        F32_GRAD,
    );
    assert_close(
        &format!("{what} dv"),
        &grads.get(&tv).unwrap().to_vec().unwrap(),
        &dv.data,
        F32_GRAD,
    );
}

#[test]
fn direct_path_matches_reference() {
    check(1, 7, 1, 1, 8, AttentionPath::Direct, 41); // one key
    check(2, 37, 49, 2, 16, AttentionPath::Direct, 42); // the SR-attention shape class
    check(1, 13, 64, 5, 4, AttentionPath::Direct, 43);
}

#[test]
fn online_path_matches_reference() {
    check(2, 29, 3, 1, 64, AttentionPath::Online, 44);
    check(1, 300, 131, 2, 32, AttentionPath::Online, 45); // several key chunks of queries (L > 256)
    check(2, 17, 97, 8, 8, AttentionPath::Online, 46);
}

#[test]
fn one_key_returns_its_value() {
    let gpu = gpu();
    let mut rng = Rng::new(47);
    let q = Tensor::from_slice(&gpu, &rng.vec_uniform(2 * 5 * 16, -3.0, 3.0), &[2, 5, 16]).unwrap();
    let k = Tensor::from_slice(&gpu, &rng.vec_uniform(2 * 16, -3.0, 3.0), &[2, 1, 16]).unwrap();
    let vdata = rng.vec_uniform(2 * 16, -1.0, 1.0);
    let v = Tensor::from_slice(&gpu, &vdata, &[2, 1, 16]).unwrap();
    let y = attention(&q, &k, &v, 2).unwrap().to_vec().unwrap();
    let want: Vec<f64> = (0..2 * 5 * 16)
        .map(|i| vdata[(i / 80) * 16 + i % 16] as f64)
        .collect();
    assert_close("one key", &y, &want, F32_ACCUM);
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(48);
    let (n, l, m, heads, c) = (2, 3, 4, 2, 4);
    let mk = |rng: &mut Rng, s: &[usize]| {
        Array::new(
            (0..s.iter().product())
                .map(|_| rng.range(-1.0, 1.0))
                .collect(),
            s,
        )
    };
    let (q, k, v) = (
        mk(&mut rng, &[n, l, c]),
        mk(&mut rng, &[n, m, c]),
        mk(&mut rng, &[n, m, c]),
    );
    let g: Vec<f64> = (0..n * l * c).map(|_| rng.range(-1.0, 1.0)).collect();
    let (dq, dk, dv) =
        refat::attention_backward(&q, &k, &v, heads, 0.7, &Array::new(g.clone(), &[n, l, c]));
    let fq = |x: &[f64]| {
        gradcheck::dot(
            &refat::attention(&Array::new(x.to_vec(), &q.shape), &k, &v, heads, 0.7).data,
            &g,
        )
    };
    let fk = |x: &[f64]| {
        gradcheck::dot(
            &refat::attention(&q, &Array::new(x.to_vec(), &k.shape), &v, heads, 0.7).data,
            &g,
        )
    };
    let fv = |x: &[f64]| {
        gradcheck::dot(
            &refat::attention(&q, &k, &Array::new(x.to_vec(), &v.shape), heads, 0.7).data,
            &g,
        )
    };
    assert_close64(
        "fd q",
        &dq.data,
        &gradcheck::numeric_gradient(fq, &q.data, 1e-6),
        FD_F64,
    );
    assert_close64(
        "fd k",
        &dk.data,
        &gradcheck::numeric_gradient(fk, &k.data, 1e-6),
        FD_F64,
    );
    assert_close64(
        "fd v",
        &dv.data,
        &gradcheck::numeric_gradient(fv, &v.data, 1e-6),
        FD_F64,
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let q = Tensor::zeros(&gpu, &[1, 4, 16]).unwrap();
    let kv = Tensor::zeros(&gpu, &[1, 70, 16]).unwrap();
    assert!(attention(&q, &kv, &kv, 3).is_err(), "heads not dividing C");
    assert!(
        attention(&q, &kv, &kv, 16).is_err(),
        "head_dim 1 unsupported"
    );
    assert!(
        attention_with(&q, &kv, &kv, 1, 0.25, AttentionPath::Direct).is_err(),
        "too many keys for direct"
    );
    assert!(
        attention(&q, &Tensor::zeros(&gpu, &[1, 5, 8]).unwrap(), &kv, 1).is_err(),
        "k/v shapes"
    );
}
