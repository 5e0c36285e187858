//! Soft cross-entropy, label cross-entropy, MSE and L2 normalisation on the GPU against
//! src/reference/loss.rs, forward and backward (random upstream gradient), rows up to the DINO
//! head's K = 60000; reference backward against f64 finite differences; identities
//! (H(p, p) = entropy of p; label CE = −log_softmax at the label; mse(a, a + c) = c²;
//! normalised lines have norm 1); soft Dice against its closed-form value and gradient.

mod common;

use cads::ops::{self, loss::soft_cross_entropy_raw, RowKernel};
use cads::reference::{gradcheck, loss as refl, softmax as refsm, Array};
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_GRAD, F32_POINTWISE, FD_F64};
use cads::Tensor;
use common::*;

/// Soft targets: a random distribution per row (or un-normalised when `normalised` is false).
fn targets(rng: &mut Rng, shape: &[usize], normalised: bool) -> Vec<f32> {
    let k = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    let mut v = rng.vec_uniform(n, 0.0, 1.0);
    if normalised {
        for row in v.chunks_mut(k) {
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= s);
        }
    }
    v
}

#[test]
fn soft_cross_entropy_matches_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    let shapes: &[&[usize]] = &[
        &[1, 1],
        &[3, 7],
        &[2, 49],
        &[4, 1000],
        &[2, 60000],
        &[5, 3, 11],
        &[70, 129],
        &[9],
    ];
    for &shape in shapes {
        for normalised in [true, false] {
            let pdata = targets(&mut rng, shape, normalised);
            let p = Array::from_f32(&pdata, shape);
            let tp = Tensor::from_slice(&gpu, &pdata, shape)
                .unwrap()
                .requires_grad_(true);
            let (s, ts) = random_param(&gpu, &mut rng, shape, -6.0, 6.0);
            let what = format!("{shape:?} normalised={normalised}");
            let rows = ops::soft_cross_entropy_rows(&tp, &ts).unwrap();
            let want = refl::soft_cross_entropy_rows(&p, &s);
            assert_eq!(rows.numel(), want.len(), "{what}");
            assert_close(
                &format!("{what} rows"),
                &rows.to_vec().unwrap(),
                &want,
                F32_ACCUM,
            );
            let g = rng.vec_uniform(want.len(), -1.0, 1.0);
            let grads = rows
                .backward_with(&Tensor::from_slice(&gpu, &g, rows.shape()).unwrap())
                .unwrap();
            let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
            let (gp, gs) = refl::soft_cross_entropy_rows_backward(&p, &s, &g64);
            assert_close(
                &format!("{what} grad logits"),
                &grads.get(&ts).unwrap().to_vec().unwrap(),
                &gs.data,
                F32_GRAD,
            );
            assert_close(
                &format!("{what} grad targets"),
                &grads.get(&tp).unwrap().to_vec().unwrap(),
                &gp.data,
                F32_GRAD,
            );
            // The batch mean and its plain backward(): gradient = per-row gradient with g = 1/B.
            let loss = ops::soft_cross_entropy(&tp, &ts).unwrap();
            assert_eq!(loss.shape(), [1]);
            let mean = refl::soft_cross_entropy(&p, &s);
            assert_close(
                &format!("{what} mean"),
                &loss.to_vec().unwrap(),
                &[mean],
                F32_ACCUM,
            );
            let grads = loss.backward().unwrap();
            let b = want.len();
            let (_, gs) = refl::soft_cross_entropy_rows_backward(&p, &s, &vec![1.0 / b as f64; b]);
            assert_close(
                &format!("{what} mean grad logits"),
                &grads.get(&ts).unwrap().to_vec().unwrap(),
                &gs.data,
                F32_GRAD,
            );
        }
    }
}

#[test]
fn both_row_kernel_variants_agree_with_reference() {
    // The adapter picks one variant (per-invocation rows on lavapipe); force each here.
    let gpu = gpu();
    let mut rng = Rng::new(46);
    for variant in [RowKernel::Workgroup, RowKernel::Thread] {
        for shape in [&[1usize, 1][..], &[65, 7], &[3, 49], &[2, 3000]] {
            let pdata = targets(&mut rng, shape, false);
            let p = Array::from_f32(&pdata, shape);
            let tp = Tensor::from_slice(&gpu, &pdata, shape).unwrap();
            let (s, ts) = random_pair(&gpu, &mut rng, shape, -6.0, 6.0);
            let (rows, _) = soft_cross_entropy_raw(&tp, &ts, variant).unwrap();
            let want = refl::soft_cross_entropy_rows(&p, &s);
            assert_close(
                &format!("{variant:?} {shape:?} rows"),
                &rows.to_vec().unwrap(),
                &want,
                F32_ACCUM,
            );
        }
    }
}

#[test]
fn cross_entropy_of_p_with_itself_is_its_entropy_and_labels_pick_one_class() {
    let gpu = gpu();
    let mut rng = Rng::new(42);
    let shape = [4, 60000];
    let pdata = targets(&mut rng, &shape, true);
    // Logits ln p: log_softmax(ln p) = ln p, so H(p, p) = −Σ p ln p, computed here directly.
    let logits: Vec<f32> = pdata.iter().map(|v| v.ln()).collect();
    let entropy: f64 = pdata
        .iter()
        .map(|&v| -(v as f64) * (v as f64).ln())
        .sum::<f64>()
        / 4.0;
    let tp = Tensor::from_slice(&gpu, &pdata, &shape).unwrap();
    let ts = Tensor::from_slice(&gpu, &logits, &shape).unwrap();
    let h = ops::soft_cross_entropy(&tp, &ts).unwrap().to_vec().unwrap();
    assert_close(
        "H(p, p) = entropy",
        &h,
        &[entropy],
        Tolerance {
            abs: 1e-4,
            rel: 1e-5,
        },
    );

    let (s, ts) = random_param(&gpu, &mut rng, &[3, 2, 5], -3.0, 3.0);
    let labels = [4usize, 0, 2, 2, 1, 3];
    let ce = ops::cross_entropy_labels(&ts, &labels)
        .unwrap()
        .to_vec()
        .unwrap();
    let ls = refsm::softmax(&s, true);
    let want = -labels
        .iter()
        .enumerate()
        .map(|(r, &l)| ls.data[r * 5 + l])
        .sum::<f64>()
        / 6.0;
    assert_close("label cross-entropy", &ce, &[want], F32_ACCUM);
}

#[test]
fn mse_matches_reference_and_identities() {
    let gpu = gpu();
    let mut rng = Rng::new(43);
    for shape in [&[1usize][..], &[7, 3], &[2, 5, 7, 3]] {
        let (a, ta) = random_param(&gpu, &mut rng, shape, -2.0, 2.0);
        let (b, tb) = random_param(&gpu, &mut rng, shape, -2.0, 2.0);
        let loss = ops::mse(&ta, &tb).unwrap();
        assert_close(
            &format!("mse {shape:?}"),
            &loss.to_vec().unwrap(),
            &[refl::mse(&a, &b)],
            F32_ACCUM,
        );
        let gv = 0.7f32;
        let grads = loss
            .backward_with(&Tensor::from_slice(&gpu, &[gv], &[1]).unwrap())
            .unwrap();
        let ga = refl::mse_backward(&a, &b, gv as f64);
        let gb: Vec<f64> = ga.data.iter().map(|v| -v).collect();
        assert_close(
            &format!("mse {shape:?} grad a"),
            &grads.get(&ta).unwrap().to_vec().unwrap(),
            &ga.data,
            F32_GRAD,
        );
        assert_close(
            &format!("mse {shape:?} grad b"),
            &grads.get(&tb).unwrap().to_vec().unwrap(),
            &gb,
            F32_GRAD,
        );
    }
    let (_, a) = random_pair(&gpu, &mut rng, &[5, 11], -2.0, 2.0);
    assert_eq!(ops::mse(&a, &a).unwrap().to_vec().unwrap(), vec![0.0]);
    let shifted = ops::add_scalar(&a, 0.5).unwrap();
    assert_close(
        "mse(a, a + 0.5)",
        &ops::mse(&a, &shifted).unwrap().to_vec().unwrap(),
        &[0.25],
        F32_POINTWISE,
    );
}

#[test]
fn l2_normalize_matches_reference_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(44);
    let cases: &[(&[usize], isize)] = &[
        (&[4, 256], -1),
        (&[3, 5, 7], 1),
        (&[256, 13], 0),
        (&[1], 0),
        (&[2, 3, 4, 5], 2),
        // Inner extents 4 divides: four lines per invocation, a zero and a tiny line among them.
        (&[32, 8], 0),
        (&[3, 5, 12], 1),
    ];
    for &(shape, axis) in cases {
        let n: usize = shape.iter().product();
        let mut data = rng.vec_uniform(n, -2.0, 2.0);
        if shape == [4, 256] {
            // A zero line and a tiny one exercise the eps clamp (gradient g/eps there).
            data[256..512].iter_mut().for_each(|v| *v = 0.0);
            data[512..768].iter_mut().for_each(|v| *v *= 1e-9);
        }
        if shape == [32, 8] {
            // Lines (columns) 1 and 2 zero and tiny, beside ordinary ones in the same vec4.
            data.iter_mut().skip(1).step_by(8).for_each(|v| *v = 0.0);
            data.iter_mut().skip(2).step_by(8).for_each(|v| *v *= 1e-9);
        }
        let x = Array::from_f32(&data, shape);
        let tx = Tensor::from_slice(&gpu, &data, shape)
            .unwrap()
            .requires_grad_(true);
        let eps = if shape == [4, 256] || shape == [32, 8] {
            1e-6
        } else {
            1e-12
        };
        let y = ops::l2_normalize(&tx, axis, eps).unwrap();
        let a = if axis < 0 {
            (shape.len() as isize + axis) as usize
        } else {
            axis as usize
        };
        let what = format!("{shape:?} axis {axis}");
        assert_close(
            &format!("{what} forward"),
            &y.to_vec().unwrap(),
            &refl::l2_normalize(&x, a, eps as f64).data,
            F32_POINTWISE,
        );
        let gdata = rng.vec_uniform(n, -1.0, 1.0);
        let grads = y
            .backward_with(&Tensor::from_slice(&gpu, &gdata, shape).unwrap())
            .unwrap();
        let want = refl::l2_normalize_backward(&x, a, eps as f64, &Array::from_f32(&gdata, shape));
        // Near-zero lines have gradients of order 1/eps: compare relatively.
        assert_close(
            &format!("{what} backward"),
            &grads.get(&tx).unwrap().to_vec().unwrap(),
            &want.data,
            Tolerance {
                abs: 1e-3,
                rel: 1e-4,
            },
        );
    }
    // Independent: every normalised line of a DINO-head-shaped output has unit norm.
    let (_, x) = random_pair(&gpu, &mut rng, &[6, 256], -3.0, 3.0);
    let y = ops::l2_normalize(&x, -1, 1e-12).unwrap().to_vec().unwrap();
    for (r, row) in y.chunks(256).enumerate() {
        let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {r} norm {norm}");
    }
}

/// y and gx of `l2_normalize(x, axis, eps)` with upstream `g`, and the kernels that ran.
fn l2_run(
    gpu: &cads::Gpu,
    x: &[f32],
    g: &[f32],
    shape: &[usize],
    axis: isize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<String>) {
    let tx = Tensor::from_slice(gpu, x, shape)
        .unwrap()
        .requires_grad_(true);
    gpu.set_profiling(true);
    let y = ops::l2_normalize(&tx, axis, eps).unwrap();
    let grads = y
        .backward_with(&Tensor::from_slice(gpu, g, shape).unwrap())
        .unwrap();
    let (yv, gxv) = (
        y.to_vec().unwrap(),
        grads.get(&tx).unwrap().to_vec().unwrap(),
    );
    gpu.set_profiling(false);
    let ran = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
    (yv, gxv, ran)
}

/// Lines of 1024 and more adjacent columns (a weight-normalised head) take the wide kernels:
/// against the f64 reference, and bit for bit against the line kernels on the first 1020
/// columns of the same data (each column's sums in the same order). Column blocks of 256 vec4
/// end partway through (1172 columns: the last block's lanes hold one vec4 or none; 1576: two
/// or three), an outer axis, and zero and tiny columns (the eps branch) are covered.
#[test]
fn wide_l2_normalize_matches_reference_and_the_line_kernels_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(46);
    let cases: &[(&[usize], isize)] = &[(&[24, 1172], 0), (&[3, 20, 1576], 1), (&[7, 1024], 0)];
    for &(shape, axis) in cases {
        let inner = *shape.last().unwrap();
        let n: usize = shape.iter().product();
        let mut x = rng.vec_uniform(n, -2.0, 2.0);
        // Column 5 zero, column 6 tiny, column 1100 (where it exists) zero.
        for (i, v) in x.iter_mut().enumerate() {
            match i % inner {
                5 | 1100 => *v = 0.0,
                6 => *v *= 1e-9,
                _ => {}
            }
        }
        let g = rng.vec_uniform(n, -1.0, 1.0);
        let eps = 1e-6;
        let (y, gx, ran) = l2_run(&gpu, &x, &g, shape, axis, eps);
        let what = format!("{shape:?} axis {axis}");
        for k in [
            "l2_column_norms4",
            "l2_scale_rows4",
            "l2_column_dots4",
            "l2_backward_apply4",
        ] {
            assert!(ran.iter().any(|r| r.ends_with(k)), "{what}: {k} in {ran:?}");
        }
        let a = (shape.len() as isize + axis) as usize % shape.len();
        let xa = Array::from_f32(&x, shape);
        let want_y = refl::l2_normalize(&xa, a, eps as f64);
        assert_close(&format!("{what} forward"), &y, &want_y.data, F32_POINTWISE);
        let want_gx = refl::l2_normalize_backward(&xa, a, eps as f64, &Array::from_f32(&g, shape));
        let relative = Tolerance {
            abs: 1e-3,
            rel: 1e-4,
        };
        assert_close(&format!("{what} backward"), &gx, &want_gx.data, relative);

        // The first 1020 columns alone take the line kernels (`_4`, 1020 < 1024).
        let cols = 1020;
        let take = |v: &[f32]| -> Vec<f32> {
            v.chunks(inner)
                .flat_map(|row| row[..cols].to_vec())
                .collect()
        };
        let mut narrow = shape.to_vec();
        *narrow.last_mut().unwrap() = cols;
        let (y_line, gx_line, ran_line) = l2_run(&gpu, &take(&x), &take(&g), &narrow, axis, eps);
        assert!(
            ran_line
                .iter()
                .any(|r| r.ends_with("l2_normalize_forward4")),
            "{ran_line:?}"
        );
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&take(&y)), bits(&y_line), "{what}: y bit for bit");
        assert_eq!(bits(&take(&gx)), bits(&gx_line), "{what}: gx bit for bit");
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(45);
    let shape = [3, 5];
    let p = Array::new((0..15).map(|_| rng.range(0.0, 1.0)).collect(), &shape);
    let s = Array::new((0..15).map(|_| rng.range(-2.0, 2.0)).collect(), &shape);
    let g: Vec<f64> = (0..3).map(|_| rng.range(-1.0, 1.0)).collect();
    let (gp, gs) = refl::soft_cross_entropy_rows_backward(&p, &s, &g);
    let fs = |v: &[f64]| {
        gradcheck::dot(
            &refl::soft_cross_entropy_rows(&p, &Array::new(v.to_vec(), &shape)),
            &g,
        )
    };
    let fp = |v: &[f64]| {
        gradcheck::dot(
            &refl::soft_cross_entropy_rows(&Array::new(v.to_vec(), &shape), &s),
            &g,
        )
    };
    assert_close64(
        "ce fd logits",
        &gs.data,
        &gradcheck::numeric_gradient(fs, &s.data, 1e-6),
        FD_F64,
    );
    assert_close64(
        "ce fd targets",
        &gp.data,
        &gradcheck::numeric_gradient(fp, &p.data, 1e-6),
        FD_F64,
    );

    let b = Array::new((0..15).map(|_| rng.range(-2.0, 2.0)).collect(), &shape);
    let ga = refl::mse_backward(&s, &b, 0.3);
    let fm = |v: &[f64]| 0.3 * refl::mse(&Array::new(v.to_vec(), &shape), &b);
    assert_close64(
        "mse fd",
        &ga.data,
        &gradcheck::numeric_gradient(fm, &s.data, 1e-6),
        FD_F64,
    );

    for axis in [0, 1] {
        let gl: Vec<f64> = (0..15).map(|_| rng.range(-1.0, 1.0)).collect();
        let want = refl::l2_normalize_backward(&s, axis, 1e-12, &Array::new(gl.clone(), &shape));
        let f = |v: &[f64]| {
            gradcheck::dot(
                &refl::l2_normalize(&Array::new(v.to_vec(), &shape), axis, 1e-12).data,
                &gl,
            )
        };
        assert_close64(
            &format!("l2 fd axis {axis}"),
            &want.data,
            &gradcheck::numeric_gradient(f, &s.data, 1e-6),
            FD_F64,
        );
    }
    // Inside the clamp (‖x‖ < eps) the map is x/eps, a linear map.
    let tiny = Array::new((0..5).map(|_| rng.range(-1e-3, 1e-3)).collect(), &[5]);
    let gl: Vec<f64> = (0..5).map(|_| rng.range(-1.0, 1.0)).collect();
    let want = refl::l2_normalize_backward(&tiny, 0, 0.1, &Array::new(gl.clone(), &[5]));
    let f = |v: &[f64]| {
        gradcheck::dot(
            &refl::l2_normalize(&Array::new(v.to_vec(), &[5]), 0, 0.1).data,
            &gl,
        )
    };
    assert_close64(
        "l2 fd clamped",
        &want.data,
        &gradcheck::numeric_gradient(f, &tiny.data, 1e-7),
        Tolerance {
            abs: 1e-5,
            rel: 1e-5,
        },
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[2, 5]).unwrap();
    let b = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let err = ops::soft_cross_entropy(&a, &b).unwrap_err().to_string();
    assert!(
        err.contains("soft_cross_entropy") && err.contains("[2, 5]") && err.contains("[2, 4]"),
        "{err}"
    );
    let err = ops::mse(&a, &b).unwrap_err().to_string();
    assert!(err.contains("mse"), "{err}");
    let err = ops::cross_entropy_labels(&a, &[0, 5])
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 5"), "{err}");
    let err = ops::cross_entropy_labels(&a, &[0]).unwrap_err().to_string();
    assert!(
        err.contains("2 labels") && err.contains("1 labels"),
        "{err}"
    );
    let err = ops::l2_normalize(&a, 2, 1e-12).unwrap_err().to_string();
    assert!(err.contains("l2_normalize"), "{err}");
    let err = ops::l2_normalize(&a, 1, 0.0).unwrap_err().to_string();
    assert!(err.contains("eps"), "{err}");
}

#[test]
fn soft_dice_loss_matches_its_formula_and_gradient() {
    // L = 1 − (2·Σpt + s)/(Σp + Σt + s); ∂L/∂p_i = −(2·t_i·U − (2·I + s))/U², U = Σp + Σt + s.
    let gpu = gpu();
    let mut rng = Rng::new(41);
    let shape = [3, 7, 1];
    let pv = rng.vec_uniform(21, 0.0, 1.0);
    let tv: Vec<f32> = (0..21).map(|i| ((i * 5) % 3 == 0) as u8 as f32).collect();
    let s = 1e-5f64;
    let p = Tensor::from_slice(&gpu, &pv, &shape)
        .unwrap()
        .requires_grad_(true);
    let t = Tensor::from_slice(&gpu, &tv, &shape).unwrap();
    let loss = ops::soft_dice_loss(&p, &t, s as f32).unwrap();
    assert_eq!(loss.shape(), [1]);
    let inter: f64 = pv.iter().zip(&tv).map(|(a, b)| *a as f64 * *b as f64).sum();
    let union: f64 = pv.iter().chain(&tv).map(|&v| v as f64).sum::<f64>() + s;
    let want = 1.0 - (2.0 * inter + s) / union;
    assert_close("soft dice", &loss.to_vec().unwrap(), &[want], F32_ACCUM);
    let grads = loss.backward().unwrap();
    let want_g: Vec<f64> = tv
        .iter()
        .map(|&ti| -(2.0 * ti as f64 * union - (2.0 * inter + s)) / (union * union))
        .collect();
    assert_close(
        "soft dice grad",
        &grads.get(&p).unwrap().to_vec().unwrap(),
        &want_g,
        F32_GRAD,
    );
    // Identity: p = t (binary) gives loss 0; disjoint sets give loss ≈ 1.
    let same = ops::soft_dice_loss(&t, &t, 0.0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(same.abs() < 1e-6, "{same}");
    let complement: Vec<f32> = tv.iter().map(|v| 1.0 - v).collect();
    let c = Tensor::from_slice(&gpu, &complement, &shape).unwrap();
    let disjoint = ops::soft_dice_loss(&c, &t, 0.0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!((disjoint - 1.0).abs() < 1e-6, "{disjoint}");
    // Bad input.
    let err = ops::soft_dice_loss(&p, &Tensor::zeros(&gpu, &[21]).unwrap(), s as f32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("soft_dice_loss") && err.contains("[21]"),
        "{err}"
    );
    assert!(ops::soft_dice_loss(&p, &t, -1.0).is_err());
}
