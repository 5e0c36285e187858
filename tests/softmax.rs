//! Softmax and log-softmax on the GPU against src/reference/softmax.rs, forward and backward
//! (random upstream gradient), both kernel variants, rows of 1..60000; reference backward against
//! f64 finite differences; identities (rows sum to 1, shift invariance, no overflow).

mod common;

use cads::ops::{
    self,
    softmax::{softmax_backward_raw, softmax_raw},
    RowKernel,
};
use cads::reference::{gradcheck, softmax as refsm, Array};
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_GRAD, FD_F64};
use cads::Tensor;
use common::*;

/// Probabilities down to 1/60000: relative accuracy of a long f32 sum, tiny absolute floor.
const PROB: Tolerance = Tolerance {
    abs: 1e-7,
    rel: 1e-4,
};

const SHAPES: &[&[usize]] = &[
    &[1],
    &[3, 1],
    &[5, 7],
    &[2, 3, 49],
    &[4, 1000],
    &[2, 60000],
    &[70, 129],
    &[3, 128],
];

fn tol(log: bool) -> Tolerance {
    if log {
        F32_ACCUM
    } else {
        PROB
    }
}

#[test]
fn recorded_softmax_matches_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    for log in [false, true] {
        for shape in SHAPES {
            let (x, tx) = random_param(&gpu, &mut rng, shape, -4.0, 4.0);
            let y = if log {
                ops::log_softmax(&tx)
            } else {
                ops::softmax(&tx)
            }
            .unwrap();
            let what = format!("log={log} {shape:?}");
            assert_eq!(y.shape(), *shape);
            assert_close(
                &format!("{what} forward"),
                &y.to_vec().unwrap(),
                &refsm::softmax(&x, log).data,
                tol(log),
            );
            let gdata = rng.vec_uniform(x.numel(), -1.0, 1.0);
            let grads = y
                .backward_with(&Tensor::from_slice(&gpu, &gdata, shape).unwrap())
                .unwrap();
            let want = refsm::softmax_backward(&x, &Array::from_f32(&gdata, shape), log);
            assert_close(
                &format!("{what} backward"),
                &grads.get(&tx).unwrap().to_vec().unwrap(),
                &want.data,
                F32_GRAD,
            );
        }
    }
}

#[test]
fn both_kernel_variants_agree_with_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(22);
    for variant in [RowKernel::Workgroup, RowKernel::Thread] {
        for log in [false, true] {
            for shape in [&[1usize, 1][..], &[65, 7], &[3, 49], &[2, 1000], &[1, 130]] {
                let (x, tx) = random_pair(&gpu, &mut rng, shape, -5.0, 5.0);
                let y = softmax_raw(&tx, log, variant).unwrap();
                let what = format!("{variant:?} log={log} {shape:?}");
                assert_close(
                    &format!("{what} forward"),
                    &y.to_vec().unwrap(),
                    &refsm::softmax(&x, log).data,
                    tol(log),
                );
                let (g, tg) = random_pair(&gpu, &mut rng, shape, -1.0, 1.0);
                let gx = softmax_backward_raw(&y, &tg, log, variant).unwrap();
                assert_close(
                    &format!("{what} backward"),
                    &gx.to_vec().unwrap(),
                    &refsm::softmax_backward(&x, &g, log).data,
                    F32_GRAD,
                );
            }
        }
    }
}

#[test]
fn rows_sum_to_one_and_are_shift_invariant_without_overflow() {
    let gpu = gpu();
    let mut rng = Rng::new(23);
    for shape in [[6usize, 49], [3, 60000]] {
        let n = shape.iter().product();
        // Logits up to ±500: exp would overflow f32 without the max shift.
        let data = rng.vec_uniform(n, -500.0, 500.0);
        let shifted: Vec<f32> = data.iter().map(|v| v + 37.0).collect();
        let y = ops::softmax(&Tensor::from_slice(&gpu, &data, &shape).unwrap())
            .unwrap()
            .to_vec()
            .unwrap();
        let ys = ops::softmax(&Tensor::from_slice(&gpu, &shifted, &shape).unwrap())
            .unwrap()
            .to_vec()
            .unwrap();
        for (r, row) in y.chunks(shape[1]).enumerate() {
            let s: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((s - 1.0).abs() < 1e-5, "{shape:?} row {r} sums to {s}");
            assert!(
                row.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{shape:?} row {r} not finite/non-negative"
            );
        }
        let want: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("{shape:?} shift invariance"),
            &ys,
            &want,
            Tolerance {
                abs: 1e-6,
                rel: 1e-4,
            },
        );
        // log_softmax = log(softmax) wherever softmax is not tiny.
        let ly = ops::log_softmax(&Tensor::from_slice(&gpu, &data, &shape).unwrap())
            .unwrap()
            .to_vec()
            .unwrap();
        for (i, (&l, &p)) in ly.iter().zip(&y).enumerate() {
            if p > 1e-6 {
                assert!(
                    (l as f64 - (p as f64).ln()).abs() < 1e-4,
                    "{shape:?} at {i}: log_softmax {l} vs ln(softmax) {}",
                    (p as f64).ln()
                );
            }
        }
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(24);
    for log in [false, true] {
        for shape in [[1usize, 1], [3, 5], [2, 9]] {
            let n = shape.iter().product();
            let x = Array::new((0..n).map(|_| rng.range(-2.0, 2.0)).collect(), &shape);
            let g: Vec<f64> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();
            let analytic = refsm::softmax_backward(&x, &Array::new(g.clone(), &shape), log);
            let f = |v: &[f64]| {
                gradcheck::dot(
                    &refsm::softmax(&Array::new(v.to_vec(), &shape), log).data,
                    &g,
                )
            };
            assert_close64(
                &format!("log={log} {shape:?} fd"),
                &analytic.data,
                &gradcheck::numeric_gradient(f, &x.data, 1e-6),
                FD_F64,
            );
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let scalar = Tensor::from_slice(&gpu, &[1.0], &[]).unwrap();
    let err = ops::softmax(&scalar).unwrap_err().to_string();
    assert!(err.contains("softmax") && err.contains("rank"), "{err}");
    let y = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let g = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let err = softmax_backward_raw(&y, &g, false, RowKernel::Auto)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
}

#[test]
fn launches_past_65535_workgroups_cover_every_row() {
    // Per-invocation rows: 65,535·64 + 7 rows need 65,536 workgroups of 64, a folded 2-D grid.
    // Per-workgroup rows: 70,001 rows are 70,001 workgroups, folded too.
    let gpu = gpu();
    for (rows, cols, variant) in [
        (65_535 * 64 + 7, 2, RowKernel::Thread),
        (70_001, 3, RowKernel::Workgroup),
    ] {
        let data: Vec<f32> = (0..rows * cols).map(|i| (i % 5) as f32).collect();
        let x = Tensor::from_slice(&gpu, &data, &[rows, cols]).unwrap();
        let y = softmax_raw(&x, false, variant).unwrap().to_vec().unwrap();
        let bad = y
            .chunks(cols)
            .filter(|row| (row.iter().sum::<f32>() - 1.0).abs() > 1e-5)
            .count();
        assert_eq!(
            bad, 0,
            "{variant:?}: {bad} of {rows} rows do not sum to 1 after a folded launch"
        );
    }
}
