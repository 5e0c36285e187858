//! Sum and mean over axes on the GPU against src/reference/reduce.rs, forward and backward
//! (random upstream gradient), on awkward shapes and axis sets; the split (two-pass) path for
//! few outputs over long reductions; the reference backward against f64 finite differences;
//! typed errors.

mod common;

use cads::ops;
use cads::reference::{gradcheck, reduce as refred, Array};
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_GRAD, FD_F64};
use cads::{Error, Tensor};
use common::*;

/// (shape, axes) pairs: odd and prime extents, leading/trailing/middle/all axes, size-1 axes,
/// column sums of more than one lane block.
const CASES: &[(&[usize], &[isize])] = &[
    (&[7], &[0]),
    (&[3, 5], &[1]),
    (&[3, 5], &[0]),
    (&[3, 5, 7], &[0, 2]),
    (&[3, 5, 7], &[1]),
    (&[3, 5, 7], &[-1]),
    (&[2, 1, 13, 3], &[1, 2]),
    (&[2, 3, 4, 5, 6], &[0, 1, 2, 3, 4]),
    (&[4, 97, 3], &[1]),
    // leading axes only (column sums, src/ops/reduce.rs sum_rows): a partial second lane block,
    // and 4 200 rows in 5 ordered chunks summed in a second pass
    (&[300, 70], &[0]),
    (&[2100, 2, 65], &[0, 1]),
    // the same on vec4s of columns (a column count that is a multiple of 4): one partial lane
    // block, then 75 vec4s (a partial second block) in a second pass
    (&[300, 72], &[0]),
    (&[2100, 2, 300], &[0, 1]),
];

fn positive_axes(axes: &[isize], rank: usize) -> Vec<usize> {
    axes.iter()
        .map(|&a| {
            if a < 0 {
                (rank as isize + a) as usize
            } else {
                a as usize
            }
        })
        .collect()
}

fn check(shape: &[usize], axes: &[isize], mean: bool, keepdim: bool, tol: Tolerance) {
    let gpu = gpu();
    let mut rng = Rng::new(0x5eed ^ shape.iter().sum::<usize>() as u64);
    let (xa, x) = random_param(&gpu, &mut rng, shape, -1.0, 1.0);
    let pos = positive_axes(axes, shape.len());
    let r: usize = pos.iter().map(|&a| shape[a]).product();
    let scale = if mean { 1.0 / r as f64 } else { 1.0 };
    let want = refred::sum_keepdim(&xa, &pos, scale);
    let y = if mean {
        ops::mean(&x, axes, keepdim)
    } else {
        ops::sum(&x, axes, keepdim)
    }
    .unwrap();
    let what = format!(
        "{} {shape:?} axes {axes:?} keepdim {keepdim}",
        if mean { "mean" } else { "sum" }
    );
    if keepdim {
        assert_eq!(y.shape(), want.shape.as_slice(), "{what}: shape");
    } else {
        let dropped: Vec<usize> = (0..shape.len())
            .filter(|d| !pos.contains(d))
            .map(|d| shape[d])
            .collect();
        assert_eq!(y.shape(), dropped.as_slice(), "{what}: shape");
    }
    assert_close(&what, &y.to_vec().unwrap(), &want.data, tol);

    let g_data = rng.vec_uniform(y.numel(), -1.0, 1.0);
    let g = Tensor::from_slice(&gpu, &g_data, y.shape()).unwrap();
    let grads = y.backward_with(&g).unwrap();
    let gx = grads.get(&x).expect("x gets a gradient");
    let want_gx =
        refred::sum_keepdim_backward(shape, &pos, scale, &Array::from_f32(&g_data, &want.shape));
    assert_close(
        &format!("{what}: dx"),
        &gx.to_vec().unwrap(),
        &want_gx.data,
        F32_GRAD,
    );
}

#[test]
fn sum_and_mean_match_reference_forward_and_backward() {
    for &(shape, axes) in CASES {
        for mean in [false, true] {
            for keepdim in [false, true] {
                check(shape, axes, mean, keepdim, F32_ACCUM);
            }
        }
    }
}

/// Few outputs over long reductions take the two-pass split path (src/ops/reduce.rs
/// `split_count`); a sum of ~10⁶ terms in f32 needs a relative tolerance to match.
#[test]
fn long_reductions_into_few_outputs_match_reference() {
    const LONG: Tolerance = Tolerance {
        abs: 1e-3,
        rel: 1e-4,
    };
    check(&[1_048_583], &[0], false, false, LONG);
    check(&[1_048_583], &[0], true, true, LONG);
    check(&[3, 70_001], &[1], false, false, LONG);
    check(&[2, 9_001, 7], &[0, 1], true, false, LONG);
}

#[test]
fn split_reductions_are_deterministic() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    let data = rng.vec_uniform(2_000_003, -1.0, 1.0);
    let x = Tensor::from_slice(&gpu, &data, &[data.len()]).unwrap();
    let a = ops::sum_all(&x).unwrap().to_scalar().unwrap();
    let b = ops::sum_all(&x).unwrap().to_scalar().unwrap();
    assert_eq!(a.to_bits(), b.to_bits(), "two sums of the same data differ");
    let want: f64 = data.iter().map(|&v| v as f64).sum();
    assert!((a as f64 - want).abs() < 1e-2, "sum_all {a} vs {want}");
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(11);
    let shape = [3, 4, 5];
    let x = Array::from_f32(&rng.vec_uniform(60, -1.0, 1.0), &shape);
    for axes in [vec![0usize], vec![1, 2], vec![0, 1, 2]] {
        let out_shape = refred::sum_keepdim(&x, &axes, 0.5).shape;
        let n_out: usize = out_shape.iter().product();
        let w = Array::from_f32(&rng.vec_uniform(n_out, -1.0, 1.0), &out_shape);
        // L(x) = Σ w · (0.5 · sum over axes)
        let loss = |v: &[f64]| -> f64 {
            let y = refred::sum_keepdim(&Array::new(v.to_vec(), &shape), &axes, 0.5);
            gradcheck::dot(&y.data, &w.data)
        };
        let numeric = gradcheck::numeric_gradient(loss, &x.data, 1e-6);
        let analytic = refred::sum_keepdim_backward(&shape, &axes, 0.5, &w);
        assert_close64(&format!("axes {axes:?}"), &analytic.data, &numeric, FD_F64);
    }
}

#[test]
fn bad_axes_and_empty_means_are_typed_errors() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let err = ops::sum(&x, &[2], false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument { .. } | Error::ShapeMismatch { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sum"), "{err}");
    let empty = Tensor::zeros(&gpu, &[0, 3]).unwrap();
    let err = ops::mean(&empty, &[0], false).unwrap_err();
    assert!(err.to_string().contains("mean"), "{err}");
    // An empty sum is 0, not an error.
    let s = ops::sum(&empty, &[0], false).unwrap();
    assert_eq!(s.to_vec().unwrap(), vec![0.0; 3]);
}
