//! Elementwise ops on the GPU against src/reference/elementwise.rs, forward and backward, with
//! broadcasting on awkward shapes; reference backward against f64 finite differences.

mod common;

use cads::ops::{self, BinaryOp, UnaryOp};
use cads::reference::{elementwise as refew, gradcheck, Array};
use cads::util::{Rng, F32_GRAD, F32_POINTWISE, FD_F64};
use cads::Tensor;
use common::*;

const BROADCAST_CASES: &[(&[usize], &[usize])] = &[
    (&[7], &[7]),
    (&[3, 1, 5], &[4, 1]),
    (&[1], &[2, 3, 5]),
    (&[2, 3, 5, 7, 1, 3], &[5, 1, 2, 3]),
    (&[11, 13], &[13]),
];

#[test]
fn binary_ops_match_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        for (sa, sb) in BROADCAST_CASES {
            let (a, ta) = random_param(&gpu, &mut rng, sa, 0.5, 2.0);
            let (b, tb) = random_param(&gpu, &mut rng, sb, 0.5, 2.0);
            let out = ops::binary(op, &ta, &tb).unwrap();
            let want = refew::binary(op, &a, &b);
            assert_eq!(out.shape(), want.shape.as_slice());
            assert_close(
                &format!("{op:?} {sa:?} {sb:?} forward"),
                &out.to_vec().unwrap(),
                &want.data,
                F32_POINTWISE,
            );

            let gdata = rng.vec_uniform(out.numel(), -1.0, 1.0);
            let g = Array::from_f32(&gdata, out.shape());
            let grads = out
                .backward_with(&Tensor::from_slice(&gpu, &gdata, out.shape()).unwrap())
                .unwrap();
            let (ga, gb) = refew::binary_backward(op, &a, &b, &g);
            assert_close(
                &format!("{op:?} {sa:?} {sb:?} grad a"),
                &grads.get(&ta).unwrap().to_vec().unwrap(),
                &ga.data,
                F32_GRAD,
            );
            assert_close(
                &format!("{op:?} {sa:?} {sb:?} grad b"),
                &grads.get(&tb).unwrap().to_vec().unwrap(),
                &gb.data,
                F32_GRAD,
            );
        }
    }
}

#[test]
fn unary_ops_match_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for op in UnaryOp::SAMPLES {
        let (lo, hi) = if op.needs_positive_input() {
            (0.2, 3.0)
        } else {
            (-3.0, 3.0)
        };
        // 555 elements run one per invocation, 540 four (the vec4 entries).
        for shape in [[3, 37, 5], [3, 36, 5]] {
            let (x, tx) = random_param(&gpu, &mut rng, &shape, lo, hi);
            let y = ops::unary(op, &tx).unwrap();
            assert_close(
                &format!("{op:?} forward"),
                &y.to_vec().unwrap(),
                &refew::unary(op, &x).data,
                F32_POINTWISE,
            );
            let gdata = rng.vec_uniform(y.numel(), -1.0, 1.0);
            let grads = y
                .backward_with(&Tensor::from_slice(&gpu, &gdata, &shape).unwrap())
                .unwrap();
            let want = refew::unary_backward(op, &x, &Array::from_f32(&gdata, &shape));
            assert_close(
                &format!("{op:?} {shape:?} backward"),
                &grads.get(&tx).unwrap().to_vec().unwrap(),
                &want.data,
                F32_GRAD,
            );
        }
    }
}

/// A unary map and its input gradient run four elements per invocation when the element count
/// is a multiple of 4 (one element per invocation otherwise), past one workgroup of 256.
#[test]
fn unary_kernels_take_vec4s_when_the_count_allows() {
    let gpu = common::fresh_gpu();
    let mut rng = Rng::new(14);
    for (n, suffix) in [(4 * 1031, "4"), (1023, "")] {
        let (x, tx) = random_param(&gpu, &mut rng, &[n], -3.0, 3.0);
        gpu.synchronize().unwrap();
        gpu.set_profiling(true);
        let y = ops::gelu(&tx).unwrap();
        let ones = Tensor::full(&gpu, &[n], 1.0).unwrap();
        let gx = y
            .backward_with(&ones)
            .unwrap()
            .get(&tx)
            .unwrap()
            .to_vec()
            .unwrap();
        let got = y.to_vec().unwrap();
        gpu.set_profiling(false);
        let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
        for entry in ["unary", "unary_backward"] {
            let entry = format!("elementwise::{entry}{suffix}");
            assert!(ran.contains(&entry), "n {n}: {entry} not in {ran:?}");
        }
        assert_close(
            &format!("gelu n {n}"),
            &got,
            &refew::unary(UnaryOp::Gelu, &x).data,
            F32_POINTWISE,
        );
        let ones = Array::from_f32(&vec![1.0; n], &[n]);
        assert_close(
            &format!("gelu' n {n}"),
            &gx,
            &refew::unary_backward(UnaryOp::Gelu, &x, &ones).data,
            F32_GRAD,
        );
    }
}

#[test]
fn launches_past_65535_workgroups_cover_every_element() {
    // 65,535 · 256 + 1001 elements need a folded 2-D grid.
    let gpu = gpu();
    let n = 65_535 * 256 + 1001;
    let data: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let t = Tensor::from_slice(&gpu, &data, &[n]).unwrap();
    let y = ops::add_scalar(&t, 1.0).unwrap().to_vec().unwrap();
    let bad = y
        .iter()
        .enumerate()
        .filter(|(i, &v)| v != (i % 1000) as f32 + 1.0)
        .count();
    assert_eq!(bad, 0, "{bad} elements wrong after a folded launch");
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(13);
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        let a = Array::new((0..6).map(|_| rng.range(0.5, 2.0)).collect(), &[2, 3]);
        let b = Array::new((0..3).map(|_| rng.range(0.5, 2.0)).collect(), &[3]);
        let g: Vec<f64> = (0..6).map(|_| rng.range(-1.0, 1.0)).collect();
        let (ga, gb) = refew::binary_backward(op, &a, &b, &Array::new(g.clone(), &[2, 3]));
        let fa = |x: &[f64]| {
            gradcheck::dot(
                &refew::binary(op, &Array::new(x.to_vec(), &[2, 3]), &b).data,
                &g,
            )
        };
        let fb = |x: &[f64]| {
            gradcheck::dot(
                &refew::binary(op, &a, &Array::new(x.to_vec(), &[3])).data,
                &g,
            )
        };
        assert_close64(
            &format!("{op:?} fd a"),
            &ga.data,
            &gradcheck::numeric_gradient(fa, &a.data, 1e-6),
            FD_F64,
        );
        assert_close64(
            &format!("{op:?} fd b"),
            &gb.data,
            &gradcheck::numeric_gradient(fb, &b.data, 1e-6),
            FD_F64,
        );
    }
    for op in [
        UnaryOp::Gelu,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::LeakyRelu(0.01),
        UnaryOp::Exp,
        UnaryOp::Pow(1.5),
    ] {
        let x = Array::new(
            (0..9)
                .map(|_| {
                    rng.range(0.1, 2.0)
                        * if rng.bernoulli(0.5) && !matches!(op, UnaryOp::Pow(_)) {
                            -1.0
                        } else {
                            1.0
                        }
                })
                .collect(),
            &[9],
        );
        let g: Vec<f64> = (0..9).map(|_| rng.range(-1.0, 1.0)).collect();
        let analytic = refew::unary_backward(op, &x, &Array::new(g.clone(), &[9]));
        let f =
            |v: &[f64]| gradcheck::dot(&refew::unary(op, &Array::new(v.to_vec(), &[9])).data, &g);
        assert_close64(
            &format!("{op:?} fd"),
            &analytic.data,
            &gradcheck::numeric_gradient(f, &x.data, 1e-6),
            FD_F64,
        );
    }
}

#[test]
fn shape_mismatch_is_a_typed_error() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let b = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = ops::add(&a, &b).unwrap_err().to_string();
    assert!(
        err.contains("add") && err.contains("[2, 3]") && err.contains("[4]"),
        "{err}"
    );
}

/// The broadcast collapses to the fewest axes (src/ops/shape.rs) and picks its kernel by them:
/// same-shape operands and scalars on the division-free kernel, a bias over rows or a
/// per-sample factor on the one-division kernel, anything else on the general one; each with
/// more elements than one workgroup, against the reference, for every op (comparisons too).
#[test]
fn collapsed_broadcasts_take_their_kernels_and_match_the_reference() {
    let gpu = common::fresh_gpu();
    let mut rng = Rng::new(12);
    // The division-free and one-division kernels come in vec4 forms (`4`): four outputs per
    // invocation when the last collapsed axis is a multiple of 4 long.
    let cases: &[(&[usize], &[usize], &str)] = &[
        (&[3, 7, 11], &[3, 7, 11], "binary_flat"),
        (&[2, 30, 33], &[2, 30, 33], "binary_flat4"),
        (&[1], &[41, 33], "binary_flat"),
        (&[1], &[40, 33], "binary_flat4"),
        (&[40, 33], &[1], "binary_flat4"),
        (&[5, 7, 33], &[33], "binary_rows"),
        (&[5, 7, 36], &[36], "binary_rows4"),
        (&[6, 1, 1], &[6, 3, 11], "binary_rows"),
        (&[6, 1, 1], &[6, 20, 11], "binary_rows4"),
        (&[37, 1], &[1, 41], "binary_rows"),
        (&[37, 1], &[1, 44], "binary_rows4"),
        (&[44], &[37, 1], "binary_rows4"),
        (&[4, 1, 36], &[4, 9, 1], "binary"),
    ];
    for &(sa, sb, kernel) in cases {
        for op in [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Max,
            BinaryOp::Min,
            BinaryOp::Ge,
            BinaryOp::Lt,
            BinaryOp::Le,
            BinaryOp::Gt,
        ] {
            let (a, ta) = random_param(&gpu, &mut rng, sa, 0.5, 2.0);
            let (b, tb) = random_param(&gpu, &mut rng, sb, 0.5, 2.0);
            gpu.synchronize().unwrap();
            gpu.set_profiling(true);
            let out = ops::binary(op, &ta, &tb).unwrap();
            let got = out.to_vec().unwrap();
            gpu.set_profiling(false);
            let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
            let entry = format!("elementwise::{kernel}");
            assert_eq!(ran, std::slice::from_ref(&entry), "{op:?} {sa:?} {sb:?}");
            assert_close(
                &format!("{op:?} {sa:?} {sb:?} on {entry}"),
                &got,
                &refew::binary(op, &a, &b).data,
                F32_POINTWISE,
            );
        }
    }
}
