//! LayerNorm and InstanceNorm on the GPU against src/reference/norm.rs, forward and backward
//! (random upstream gradient; gradients to x, γ, β), odd channel counts, N > 1, prime spatial
//! extents, both LayerNorm kernel variants; reference backward against f64 finite differences;
//! identities (zero mean / unit variance; InstanceNorm = LayerNorm of the transposed tensor).

mod common;

use cads::ops::{self, norm::layer_norm_raw, RowKernel};
use cads::reference::{gradcheck, norm as refn, Array};
use cads::util::{Rng, Tolerance, F32_GRAD, FD_F64};
use cads::Tensor;
use common::*;

/// Normalised outputs are O(1) and go through two f32 reductions.
const NORM_OUT: Tolerance = Tolerance {
    abs: 2e-5,
    rel: 1e-4,
};

/// Forward and backward of one norm against its reference, affine or not.
#[allow(clippy::too_many_arguments)]
fn check(
    name: &str,
    shape: &[usize],
    affine: bool,
    eps: f32,
    rng: &mut Rng,
    gpu_op: impl Fn(&Tensor, Option<(&Tensor, &Tensor)>, f32) -> cads::Result<Tensor>,
    ref_fwd: impl Fn(&Array, Option<(&[f64], &[f64])>, f64) -> Array,
    ref_bwd: impl Fn(&Array, Option<&[f64]>, f64, &Array) -> refn::NormGrads,
) {
    let gpu = gpu();
    let c = *shape.last().unwrap();
    // An offset of 3 makes naive E[x²] − μ² variance lose digits; the kernels must not.
    let (x, tx) = random_param(&gpu, rng, shape, 2.0, 4.0);
    let (gm, tg) = random_param(&gpu, rng, &[c], 0.5, 1.5);
    let (bt, tb) = random_param(&gpu, rng, &[c], -0.5, 0.5);
    let what = format!("{name} {shape:?} affine={affine} eps={eps}");
    let y = gpu_op(&tx, affine.then_some((&tg, &tb)), eps).unwrap();
    let want = ref_fwd(
        &x,
        affine.then_some((&gm.data[..], &bt.data[..])),
        eps as f64,
    );
    assert_close(
        &format!("{what} forward"),
        &y.to_vec().unwrap(),
        &want.data,
        NORM_OUT,
    );
    let gdata = rng.vec_uniform(x.numel(), -1.0, 1.0);
    let grads = y
        .backward_with(&Tensor::from_slice(&gpu, &gdata, shape).unwrap())
        .unwrap();
    let want = ref_bwd(
        &x,
        affine.then_some(&gm.data[..]),
        eps as f64,
        &Array::from_f32(&gdata, shape),
    );
    assert_close(
        &format!("{what} grad x"),
        &grads.get(&tx).unwrap().to_vec().unwrap(),
        &want.x.data,
        F32_GRAD,
    );
    if affine {
        assert_close(
            &format!("{what} grad gamma"),
            &grads.get(&tg).unwrap().to_vec().unwrap(),
            &want.gamma.data,
            F32_GRAD,
        );
        assert_close(
            &format!("{what} grad beta"),
            &grads.get(&tb).unwrap().to_vec().unwrap(),
            &want.beta.data,
            F32_GRAD,
        );
    }
}

#[test]
fn layer_norm_matches_reference_forward_and_backward() {
    let mut rng = Rng::new(31);
    let shapes: &[&[usize]] = &[
        &[3, 1],
        &[7, 5],
        &[2, 3, 64],
        &[5, 257],
        &[2, 49, 96],
        &[3, 1000],
        &[1, 7],
    ];
    for &shape in shapes {
        for affine in [false, true] {
            for eps in [1e-6, 1e-5] {
                check(
                    "layer_norm",
                    shape,
                    affine,
                    eps,
                    &mut rng,
                    ops::layer_norm,
                    refn::layer_norm,
                    refn::layer_norm_backward,
                );
            }
        }
    }
}

#[test]
fn layer_norm_kernel_variants_agree() {
    let gpu = gpu();
    let mut rng = Rng::new(32);
    for shape in [[67usize, 5], [3, 300], [130, 64]] {
        let (x, tx) = random_pair(&gpu, &mut rng, &shape, -2.0, 2.0);
        let (gm, tg) = random_pair(&gpu, &mut rng, &[shape[1]], 0.5, 1.5);
        let (bt, tb) = random_pair(&gpu, &mut rng, &[shape[1]], -0.5, 0.5);
        let want = refn::layer_norm(&x, Some((&gm.data, &bt.data)), 1e-5);
        for variant in [RowKernel::Workgroup, RowKernel::Thread] {
            let (y, stats) = layer_norm_raw(&tx, Some((&tg, &tb)), 1e-5, variant).unwrap();
            assert_close(
                &format!("{variant:?} {shape:?} forward"),
                &y.to_vec().unwrap(),
                &want.data,
                NORM_OUT,
            );
            let (g, tgr) = random_pair(&gpu, &mut rng, &shape, -1.0, 1.0);
            let (gx, params) =
                ops::norm::layer_norm_backward_raw(&tx, Some(&tg), &stats, &tgr, true, variant)
                    .unwrap();
            let want_g = refn::layer_norm_backward(&x, Some(&gm.data), 1e-5, &g);
            assert_close(
                &format!("{variant:?} {shape:?} gx"),
                &gx.to_vec().unwrap(),
                &want_g.x.data,
                F32_GRAD,
            );
            let (gg, gb) = params.unwrap();
            assert_close(
                &format!("{variant:?} {shape:?} ggamma"),
                &gg.to_vec().unwrap(),
                &want_g.gamma.data,
                F32_GRAD,
            );
            assert_close(
                &format!("{variant:?} {shape:?} gbeta"),
                &gb.to_vec().unwrap(),
                &want_g.beta.data,
                F32_GRAD,
            );
        }
    }
}

#[test]
fn instance_norm_matches_reference_forward_and_backward() {
    let mut rng = Rng::new(33);
    let shapes: &[&[usize]] = &[
        &[1, 7, 3],
        &[2, 5, 7, 3],
        &[2, 3, 5, 7, 5],
        &[3, 11, 13, 1],
        &[2, 16, 48, 48, 3],
    ];
    for &shape in shapes {
        for affine in [false, true] {
            check(
                "instance_norm",
                shape,
                affine,
                1e-5,
                &mut rng,
                ops::instance_norm,
                refn::instance_norm,
                refn::instance_norm_backward,
            );
        }
    }
}

#[test]
fn normalised_outputs_have_zero_mean_and_unit_variance() {
    let gpu = gpu();
    let mut rng = Rng::new(34);
    // LayerNorm: per row over C.
    let (rows, c) = (37, 96);
    let data = rng.vec_uniform(rows * c, 90.0, 110.0);
    let y = ops::layer_norm(
        &Tensor::from_slice(&gpu, &data, &[rows, c]).unwrap(),
        None,
        1e-6,
    )
    .unwrap()
    .to_vec()
    .unwrap();
    for (r, row) in y.chunks(c).enumerate() {
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let v = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
        assert!(
            m.abs() < 1e-5 && (v - 1.0).abs() < 1e-3,
            "layer_norm row {r}: mean {m}, var {v}"
        );
    }
    // InstanceNorm: per (n, c) over 5·7·11 positions, data far from zero.
    let shape = [2, 5, 7, 11, 3];
    let s = 5 * 7 * 11;
    let data = rng.vec_uniform(2 * s * 3, 990.0, 1010.0);
    let y = ops::instance_norm(
        &Tensor::from_slice(&gpu, &data, &shape).unwrap(),
        None,
        1e-5,
    )
    .unwrap()
    .to_vec()
    .unwrap();
    for n in 0..2 {
        for ch in 0..3 {
            let vals: Vec<f64> = (0..s).map(|sp| y[(n * s + sp) * 3 + ch] as f64).collect();
            let m = vals.iter().sum::<f64>() / s as f64;
            let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / s as f64;
            assert!(
                m.abs() < 1e-4 && (v - 1.0).abs() < 1e-3,
                "instance_norm (n {n}, c {ch}): mean {m}, var {v}"
            );
        }
    }
}

#[test]
fn instance_norm_equals_layer_norm_of_the_transposed_tensor() {
    // [N, S, C] instance-normalised == permute([N, C, S] layer-normalised over S): different
    // kernels, different reduction structure, same math.
    let gpu = gpu();
    let mut rng = Rng::new(35);
    let (n, s, c) = (3, 29, 5);
    let (_, x) = random_pair(&gpu, &mut rng, &[n, s, c], -3.0, 3.0);
    let a = ops::instance_norm(&x, None, 1e-5)
        .unwrap()
        .to_vec()
        .unwrap();
    let xt = x.permute(&[0, 2, 1]).unwrap();
    let b = ops::layer_norm(&xt, None, 1e-5)
        .unwrap()
        .permute(&[0, 2, 1])
        .unwrap()
        .to_vec()
        .unwrap();
    let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    assert_close("instance_norm vs transposed layer_norm", &a, &b, NORM_OUT);
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(36);
    type Fwd = fn(&Array, Option<(&[f64], &[f64])>, f64) -> Array;
    type Bwd = fn(&Array, Option<&[f64]>, f64, &Array) -> refn::NormGrads;
    let cases: [(&str, &[usize], Fwd, Bwd); 2] = [
        (
            "layer_norm",
            &[3, 5],
            refn::layer_norm,
            refn::layer_norm_backward,
        ),
        (
            "instance_norm",
            &[2, 3, 2, 3],
            refn::instance_norm,
            refn::instance_norm_backward,
        ),
    ];
    for (name, shape, fwd, bwd) in cases {
        let c = *shape.last().unwrap();
        let n: usize = shape.iter().product();
        let x: Vec<f64> = (0..n).map(|_| rng.range(-2.0, 2.0)).collect();
        let gm: Vec<f64> = (0..c).map(|_| rng.range(0.5, 1.5)).collect();
        let bt: Vec<f64> = (0..c).map(|_| rng.range(-0.5, 0.5)).collect();
        let g: Vec<f64> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
        let eps = 1e-5;
        let xa = Array::new(x.clone(), shape);
        let want = bwd(&xa, Some(&gm), eps, &Array::new(g.clone(), shape));
        let fx = |v: &[f64]| {
            gradcheck::dot(
                &fwd(&Array::new(v.to_vec(), shape), Some((&gm, &bt)), eps).data,
                &g,
            )
        };
        let fg = |v: &[f64]| gradcheck::dot(&fwd(&xa, Some((v, &bt)), eps).data, &g);
        let fb = |v: &[f64]| gradcheck::dot(&fwd(&xa, Some((&gm, v)), eps).data, &g);
        assert_close64(
            &format!("{name} fd x"),
            &want.x.data,
            &gradcheck::numeric_gradient(fx, &x, 1e-6),
            FD_F64,
        );
        assert_close64(
            &format!("{name} fd gamma"),
            &want.gamma.data,
            &gradcheck::numeric_gradient(fg, &gm, 1e-6),
            FD_F64,
        );
        assert_close64(
            &format!("{name} fd beta"),
            &want.beta.data,
            &gradcheck::numeric_gradient(fb, &bt, 1e-6),
            FD_F64,
        );
        // Without affine the x-gradient is the affine formula with γ = 1.
        let plain = bwd(&xa, None, eps, &Array::new(g.clone(), shape));
        let fp =
            |v: &[f64]| gradcheck::dot(&fwd(&Array::new(v.to_vec(), shape), None, eps).data, &g);
        assert_close64(
            &format!("{name} fd x (no affine)"),
            &plain.x.data,
            &gradcheck::numeric_gradient(fp, &x, 1e-6),
            FD_F64,
        );
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 5, 4]).unwrap();
    let wrong = Tensor::zeros(&gpu, &[5]).unwrap();
    let right = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = ops::layer_norm(&x, Some((&wrong, &right)), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer_norm") && err.contains("[4]") && err.contains("[5]"),
        "{err}"
    );
    let err = ops::instance_norm(&x, Some((&right, &wrong)), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("instance_norm") && err.contains("[5]"),
        "{err}"
    );
    let flat = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let err = ops::instance_norm(&flat, None, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("instance_norm") && err.contains("rank >= 3"),
        "{err}"
    );
    let err = ops::layer_norm(&x, None, -1.0).unwrap_err().to_string();
    assert!(err.contains("eps"), "{err}");
}
