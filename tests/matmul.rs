//! Batched matmul on the GPU (every kernel: the naive oracle and each register tile) against
//! src/reference/matmul.rs, forward and backward with a random upstream gradient, on odd/prime
//! extents, all four transpose combinations, batches and a broadcast weight; the reference
//! backward against f64 finite differences; identities that share no code with the kernels;
//! typed errors.

mod common;

use cads::ops::{self, MatmulKernel};
use cads::reference::{gradcheck, matmul as refmm, Array};
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_GRAD, FD_F64};
use cads::{Error, Tensor};
use common::*;

/// Stored shape of an operand whose logical matrix is rows × cols.
fn stored(batch: &[usize], rows: usize, cols: usize, t: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if t { [cols, rows] } else { [rows, cols] });
    s
}

/// Reduction lengths here stay below ~200, so f32 dot products are well within F32_ACCUM.
fn check_case(
    kernel: MatmulKernel,
    rng: &mut Rng,
    ba: &[usize],
    bb: &[usize],
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
) {
    let gpu = gpu();
    let what = format!("{kernel:?} a{ba:?} b{bb:?} M{m} K{k} N{n} ta {ta} tb {tb}");
    let (a, ta_t) = random_param(&gpu, rng, &stored(ba, m, k, ta), -1.0, 1.0);
    let (b, tb_t) = random_param(&gpu, rng, &stored(bb, k, n, tb), -1.0, 1.0);
    let out = ops::matmul_with(&ta_t, &tb_t, ta, tb, kernel).unwrap();
    let want = refmm::matmul(&a, &b, ta, tb);
    assert_eq!(out.shape(), want.shape.as_slice(), "{what}: shape");
    assert_close(
        &format!("{what} forward"),
        &out.to_vec().unwrap(),
        &want.data,
        F32_ACCUM,
    );

    let gdata = rng.vec_uniform(out.numel(), -1.0, 1.0);
    let grads = out
        .backward_with(&Tensor::from_slice(&gpu, &gdata, out.shape()).unwrap())
        .unwrap();
    let (ga, gb) = refmm::matmul_backward(&a, &b, ta, tb, &Array::from_f32(&gdata, out.shape()));
    let got_a = grads.get(&ta_t).unwrap();
    let got_b = grads.get(&tb_t).unwrap();
    assert_eq!(got_a.shape(), ta_t.shape(), "{what}: grad a shape");
    assert_eq!(got_b.shape(), tb_t.shape(), "{what}: grad b shape");
    assert_close(
        &format!("{what} grad a"),
        &got_a.to_vec().unwrap(),
        &ga.data,
        F32_GRAD,
    );
    assert_close(
        &format!("{what} grad b"),
        &got_b.to_vec().unwrap(),
        &gb.data,
        F32_GRAD,
    );
}

/// Odd/prime extents (the vec4 kernels fall back on these), then K, N multiples of 4 with odd M
/// and N past one 256-column workgroup (the vec4 kernels run on these).
const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 13, 5),
    (13, 7, 67),
    (67, 129, 13),
    (1, 67, 129),
    (129, 1, 7),
    (1, 4, 4),
    (7, 12, 68),
    (13, 8, 300),
    (67, 132, 36),
    // M % 4 == 0 (a transposed A is read in place by the vec4 tiles' `_ta` forms), M a partial
    // tile of the 8- and 32-row tiles.
    (36, 12, 68),
    (20, 132, 264),
];

#[test]
fn every_kernel_matches_reference_on_prime_sizes_and_all_transposes() {
    let mut rng = Rng::new(21);
    for &kernel in MatmulKernel::ALL {
        for &size in SIZES {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                check_case(kernel, &mut rng, &[], &[], size, ta, tb);
            }
        }
    }
}

#[test]
fn batched_and_broadcast_batches_match_reference() {
    let mut rng = Rng::new(22);
    let batches: &[(&[usize], &[usize])] = &[
        (&[3], &[3]),       // equal batch
        (&[2, 3], &[]),     // shared weight: tokens [N, L, C] @ w [C, E]
        (&[], &[4]),        // shared left operand
        (&[2, 1], &[1, 3]), // batch broadcast both ways
        (&[1, 3], &[2, 1]), // the other way round
        (&[5], &[1]),       // explicit extent-1 batch
    ];
    for &kernel in &[
        MatmulKernel::Naive,
        MatmulKernel::chosen(&gpu()).unwrap(),
        MatmulKernel::Tile { rows: 4, cols: 4 },
    ] {
        for (ba, bb) in batches {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                check_case(kernel, &mut rng, ba, bb, (7, 13, 67), ta, tb);
                check_case(kernel, &mut rng, ba, bb, (13, 20, 132), ta, tb);
                check_case(kernel, &mut rng, ba, bb, (12, 20, 132), ta, tb);
            }
        }
    }
}

#[test]
fn tiled_kernels_agree_with_naive_past_a_workgroup_of_columns() {
    // N = 1100 spans several column workgroups and a partial one; M = 37 a partial row tile.
    // Oracle: the naive GPU kernel.
    let gpu = gpu();
    let mut rng = Rng::new(23);
    // K = 260, N = 1100 also run the vec4 kernels (K, N multiples of 4; N past 1024 columns).
    let a = Tensor::from_slice(
        &gpu,
        &rng.vec_uniform(2 * 37 * 260, -1.0, 1.0),
        &[2, 37, 260],
    )
    .unwrap();
    let b = Tensor::from_slice(
        &gpu,
        &rng.vec_uniform(2 * 260 * 1100, -1.0, 1.0),
        &[2, 260, 1100],
    )
    .unwrap();
    let want: Vec<f64> = ops::matmul_with(&a, &b, false, false, MatmulKernel::Naive)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    for &kernel in &MatmulKernel::ALL[1..] {
        let got = ops::matmul_with(&a, &b, false, false, kernel)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_close(
            &format!("{kernel:?} vs naive"),
            &got,
            &want,
            Tolerance {
                abs: 1e-4,
                rel: 1e-4,
            },
        );
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(24);
    let cases: &[(&[usize], &[usize])] = &[(&[], &[]), (&[2], &[]), (&[2, 1], &[3])];
    for (ba, bb) in cases {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (m, k, n) = (3, 4, 2);
            let sa = stored(ba, m, k, ta);
            let sb = stored(bb, k, n, tb);
            let a = Array::new(
                (0..sa.iter().product())
                    .map(|_| rng.range(-1.0, 1.0))
                    .collect(),
                &sa,
            );
            let b = Array::new(
                (0..sb.iter().product())
                    .map(|_| rng.range(-1.0, 1.0))
                    .collect(),
                &sb,
            );
            let out = refmm::matmul(&a, &b, ta, tb);
            let g: Vec<f64> = (0..out.numel()).map(|_| rng.range(-1.0, 1.0)).collect();
            let (ga, gb) =
                refmm::matmul_backward(&a, &b, ta, tb, &Array::new(g.clone(), &out.shape));
            let fa = |x: &[f64]| {
                gradcheck::dot(
                    &refmm::matmul(&Array::new(x.to_vec(), &sa), &b, ta, tb).data,
                    &g,
                )
            };
            let fb = |x: &[f64]| {
                gradcheck::dot(
                    &refmm::matmul(&a, &Array::new(x.to_vec(), &sb), ta, tb).data,
                    &g,
                )
            };
            let what = format!("a{sa:?} b{sb:?} ta {ta} tb {tb}");
            assert_close64(
                &format!("{what} fd a"),
                &ga.data,
                &gradcheck::numeric_gradient(fa, &a.data, 1e-6),
                FD_F64,
            );
            assert_close64(
                &format!("{what} fd b"),
                &gb.data,
                &gradcheck::numeric_gradient(fb, &b.data, 1e-6),
                FD_F64,
            );
        }
    }
}

#[test]
fn identity_and_adjoint_hold() {
    // A·I = A exactly (every product is x·1 or x·0), for every kernel.
    let gpu = gpu();
    let mut rng = Rng::new(25);
    let (m, k) = (67, 13);
    let adata = rng.vec_uniform(m * k, -1.0, 1.0);
    let a = Tensor::from_slice(&gpu, &adata, &[m, k]).unwrap();
    let eye: Vec<f32> = (0..k * k)
        .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
        .collect();
    let eye = Tensor::from_slice(&gpu, &eye, &[k, k]).unwrap();
    for &kernel in MatmulKernel::ALL {
        let got = ops::matmul_with(&a, &eye, false, false, kernel)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(got, adata, "{kernel:?}: A·I != A");
        let got = ops::matmul_with(&eye, &a, false, true, kernel)
            .unwrap()
            .to_vec()
            .unwrap();
        let at: Vec<f32> = (0..k * m).map(|i| adata[(i % m) * k + i / m]).collect();
        assert_eq!(got, at, "{kernel:?}: I·Aᵀ != Aᵀ");
    }
    // ⟨A x, y⟩ = ⟨x, Aᵀ y⟩ with x, y as column matrices, in f64 on the host.
    let x = rng.vec_uniform(k, -1.0, 1.0);
    let y = rng.vec_uniform(m, -1.0, 1.0);
    let ax = ops::matmul(
        &a,
        &Tensor::from_slice(&gpu, &x, &[k, 1]).unwrap(),
        false,
        false,
    )
    .unwrap()
    .to_vec()
    .unwrap();
    let aty = ops::matmul(
        &a,
        &Tensor::from_slice(&gpu, &y, &[m, 1]).unwrap(),
        true,
        false,
    )
    .unwrap()
    .to_vec()
    .unwrap();
    let lhs: f64 = ax.iter().zip(&y).map(|(&p, &q)| p as f64 * q as f64).sum();
    let rhs: f64 = x.iter().zip(&aty).map(|(&p, &q)| p as f64 * q as f64).sum();
    assert!(
        (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
        "adjoint: {lhs} vs {rhs}"
    );
}

/// `linear` with a bias on `kernel`: forward, dx, dw and db against the reference matmul plus
/// the bias row, with the kernels that ran.
fn check_linear(
    kernel: MatmulKernel,
    rng: &mut Rng,
    lead: &[usize],
    (cin, cout): (usize, usize),
    tol: Tolerance,
) -> Vec<String> {
    let gpu = gpu();
    let what = format!("linear {} {lead:?} {cin}→{cout}", kernel.name());
    let mut xs = lead.to_vec();
    xs.push(cin);
    let (x, tx) = random_param(&gpu, rng, &xs, -1.0, 1.0);
    let (w, tw) = random_param(&gpu, rng, &[cin, cout], -1.0, 1.0);
    let (bias, tbias) = random_param(&gpu, rng, &[cout], -1.0, 1.0);
    gpu.set_profiling(true);
    let y = ops::linear_with(&tx, &tw, Some(&tbias), kernel).unwrap();
    let got = y.to_vec().unwrap();
    gpu.set_profiling(false);
    let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
    let mut ys = lead.to_vec();
    ys.push(cout);
    assert_eq!(y.shape(), ys.as_slice(), "{what}");
    let mut want = refmm::matmul(&x, &w, false, false);
    for (i, v) in want.data.iter_mut().enumerate() {
        *v += bias.data[i % cout];
    }
    assert_close(&format!("{what} forward"), &got, &want.data, tol);
    let gdata = rng.vec_uniform(y.numel(), -1.0, 1.0);
    let grads = y
        .backward_with(&Tensor::from_slice(&gpu, &gdata, y.shape()).unwrap())
        .unwrap();
    let g = Array::from_f32(&gdata, y.shape());
    let (gx, gw) = refmm::matmul_backward(&x, &w, false, false, &g);
    let gbias: Vec<f64> = (0..cout)
        .map(|c| g.data.iter().skip(c).step_by(cout).sum())
        .collect();
    for (name, t, want) in [
        ("x", &tx, &gx.data),
        ("w", &tw, &gw.data),
        ("bias", &tbias, &gbias),
    ] {
        let got = grads.get(t).unwrap().to_vec().unwrap();
        assert_close(&format!("{what} grad {name}"), &got, want, tol);
    }
    ran
}

/// Every kernel, shapes that take the vec4 tiles' `_bias` forms (the bias added in the
/// product's own pass: no broadcast kernel runs) in workgroups of 64 and of 16, with several
/// column blocks and partial tiles, and shapes that fall back to the 4×4 tile (K or N not in
/// fours) with the bias in its own pass; lead dims folded into rows.
#[test]
fn linear_matches_matmul_plus_bias_and_its_gradients() {
    let mut rng = Rng::new(26);
    for &kernel in MatmulKernel::ALL {
        for (lead, dims) in [
            (vec![2, 5], (7, 3)),
            (vec![2, 9], (8, 12)),
            (vec![37], (16, 64)),
            (vec![3, 11], (12, 260)),
        ] {
            let ran = check_linear(kernel, &mut rng, &lead, dims, F32_ACCUM);
            // (`_bias_sga`: the form's subgroup-broadcast twin, src/ops/matmul_subgroup_a.rs.)
            let fused = ran
                .iter()
                .any(|k| k.ends_with("_bias") || k.ends_with("_bias_sga"));
            let broadcast = ran.iter().any(|k| k.starts_with("elementwise::"));
            let vec4_shape = dims.0 % 4 == 0 && dims.1 % 4 == 0;
            let has_form = matches!(kernel, MatmulKernel::Vec4 { staged_k: 0, .. });
            assert_eq!(
                (fused, broadcast),
                (vec4_shape && has_form, !(vec4_shape && has_form)),
                "{} {lead:?} {dims:?}: {ran:?}",
                kernel.name()
            );
        }
    }
}

/// A long K over few rows splits the product: the bias is in split 0's partial only, so the
/// sum of the splits adds it once.
#[test]
fn a_split_linear_adds_its_bias_once() {
    const LONG: Tolerance = Tolerance {
        abs: 2e-3,
        rel: 2e-4,
    };
    let mut rng = Rng::new(27);
    let gpu = gpu();
    for kernel in [MatmulKernel::vec4(8, 4), MatmulKernel::vec4(4, 4)] {
        let ran = check_linear(kernel, &mut rng, &[6], (4096, 64), LONG);
        assert!(
            ran.iter().any(|k| k.ends_with("_bias"))
                && ran.iter().any(|k| k.starts_with("reduce::")),
            "{}: no split with the bias form: {ran:?}",
            kernel.name()
        );
        // An infinite bias reaches the sum as itself: the splits past 0 start at 0, not at
        // 0·∞ (NaN), as the separate add would give.
        let x =
            Tensor::from_slice(&gpu, &rng.vec_uniform(6 * 4096, -1.0, 1.0), &[6, 4096]).unwrap();
        let w =
            Tensor::from_slice(&gpu, &rng.vec_uniform(4096 * 64, -1.0, 1.0), &[4096, 64]).unwrap();
        let mut b = vec![0.5f32; 64];
        b[3] = f32::INFINITY;
        let b = Tensor::from_slice(&gpu, &b, &[64]).unwrap();
        let y = ops::linear_with(&x, &w, Some(&b), kernel)
            .unwrap()
            .to_vec()
            .unwrap();
        for (i, v) in y.iter().enumerate() {
            match i % 64 {
                3 => assert_eq!(*v, f32::INFINITY, "{} row {}", kernel.name(), i / 64),
                _ => assert!(v.is_finite(), "{} element {i}: {v}", kernel.name()),
            }
        }
    }
}

#[test]
fn zero_inner_extent_gives_zeros() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[3, 0]).unwrap();
    let b = Tensor::zeros(&gpu, &[0, 4]).unwrap();
    let c = ops::matmul(&a, &b, false, false).unwrap();
    assert_eq!(c.shape(), [3, 4]);
    assert_eq!(c.to_vec().unwrap(), vec![0.0; 12]);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let gpu = gpu();
    let t = |s: &[usize]| Tensor::zeros(&gpu, s).unwrap();
    // Inner extents disagree.
    let err = ops::matmul(&t(&[2, 3]), &t(&[4, 5]), false, false).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "matmul", .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("[2, 3]") && err.to_string().contains("[4, 5]"),
        "{err}"
    );
    // The same shapes are fine once a transpose makes them agree: [2,3]ᵀ·[2,5] = [3,5].
    assert_eq!(
        ops::matmul(&t(&[2, 3]), &t(&[2, 5]), true, false)
            .unwrap()
            .shape(),
        [3, 5]
    );
    // Batch dims that do not broadcast.
    let err = ops::matmul(&t(&[2, 3, 4]), &t(&[3, 4, 5]), false, false).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "matmul", .. }),
        "{err}"
    );
    // Rank below 2.
    let err = ops::matmul(&t(&[4]), &t(&[4, 5]), false, false).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { op: "matmul", .. }),
        "{err}"
    );
    // Linear with the wrong input width or bias.
    let err = ops::linear(&t(&[2, 6]), &t(&[7, 3]), None).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "linear", .. }),
        "{err}"
    );
    let err = ops::linear(&t(&[2, 7]), &t(&[7, 3]), Some(&t(&[4]))).unwrap_err();
    assert!(
        matches!(err, Error::ShapeMismatch { op: "linear", .. }),
        "{err}"
    );
}

/// Few output tiles over a long K take the vec4 kernels' split-K path (src/ops/matmul_launch.rs,
/// `split_count_toward`): plain, transposed (the weight-gradient shape Aᵀ·G over many tokens),
/// batched with a broadcast weight; forward and backward against the reference. Long f32 sums: a
/// relative tolerance like the reductions'.
#[test]
fn long_k_products_split_and_match_reference() {
    const LONG: Tolerance = Tolerance {
        abs: 2e-3,
        rel: 2e-4,
    };
    let gpu = gpu();
    let mut rng = Rng::new(91);
    // The default tile, and the workgroup-of-8 tiles whose splits start and end inside a stage
    // of staged A (K/4 = 1025 and 5000 are no multiple of their 32 or 16 staged k-steps).
    let kernels: Vec<MatmulKernel> = MatmulKernel::ALL
        .iter()
        .copied()
        .filter(|k| {
            matches!(
                k,
                MatmulKernel::Vec4 {
                    lanes: 8,
                    cols: 4,
                    ..
                }
            )
        })
        .chain([MatmulKernel::vec4(4, 4)])
        .collect();
    assert!(kernels.len() >= 3, "{kernels:?}");
    for (kernel, (ba, bb, (m, k, n), ta, tb)) in kernels.iter().flat_map(|&kernel| {
        [
            (vec![], vec![], (6, 4100, 12), false, false),
            (vec![], vec![], (64, 20000, 64), true, false),
            (vec![3], vec![], (5, 2048, 8), false, true),
        ]
        .map(|case| (kernel, case))
    }) {
        let what = format!(
            "{} a{ba:?} b{bb:?} M{m} K{k} N{n} ta {ta} tb {tb}",
            kernel.name()
        );
        let (a, at) = random_param(&gpu, &mut rng, &stored(&ba, m, k, ta), -1.0, 1.0);
        let (b, bt) = random_param(&gpu, &mut rng, &stored(&bb, k, n, tb), -1.0, 1.0);
        let out = ops::matmul_with(&at, &bt, ta, tb, kernel).unwrap();
        let want = refmm::matmul(&a, &b, ta, tb);
        assert_close(
            &format!("{what} forward"),
            &out.to_vec().unwrap(),
            &want.data,
            LONG,
        );
        let gdata = rng.vec_uniform(out.numel(), -1.0, 1.0);
        let grads = out
            .backward_with(&Tensor::from_slice(&gpu, &gdata, out.shape()).unwrap())
            .unwrap();
        let (ga, gb) =
            refmm::matmul_backward(&a, &b, ta, tb, &Array::from_f32(&gdata, out.shape()));
        let got_a = grads.get(&at).unwrap().to_vec().unwrap();
        let got_b = grads.get(&bt).unwrap().to_vec().unwrap();
        assert_close(&format!("{what} grad a"), &got_a, &ga.data, LONG);
        assert_close(&format!("{what} grad b"), &got_b, &gb.data, LONG);
    }
}

/// A tall vec4 tile (more than 8 rows) runs a product of at most 8 rows as the 8 × 8 tile, in
/// each form (plain, `_bias`, `_tb`; `_w16` for few columns), with the reference's values; from
/// 9 rows on it runs as itself.
#[test]
fn products_of_few_rows_run_the_8x8_tile() {
    let gpu = common::fresh_gpu();
    let mut settings = gpu.tune_settings();
    settings
        .overrides
        .insert("subgroup_broadcast".into(), "never".into());
    settings
        .overrides
        .insert("matmul_pack_b".into(), "never".into());
    gpu.set_tune_settings(settings);
    let mut rng = Rng::new(25);
    let tall = MatmulKernel::from_name("vec4_32x4_w16").unwrap();
    let (k, n) = (24, 300);
    for (m, tb, bias, want_entry) in [
        (1, false, false, "matmul_vec4_8x8"),
        (6, false, false, "matmul_vec4_8x8"),
        (8, false, true, "matmul_vec4_8x8_bias"),
        (6, true, false, "matmul_vec4_tb_8x8"),
        (9, false, false, "matmul_vec4_32x4_w16"),
    ] {
        let (a, ta) = random_param(&gpu, &mut rng, &[m, k], -1.0, 1.0);
        let (b, tbt) = random_param(&gpu, &mut rng, &stored(&[], k, n, tb), -1.0, 1.0);
        let (c, tc) = random_param(&gpu, &mut rng, &[n], -1.0, 1.0);
        gpu.synchronize().unwrap();
        gpu.set_profiling(true);
        let out = if bias {
            ops::linear_with(&ta, &tbt, Some(&tc), tall).unwrap()
        } else {
            ops::matmul_with(&ta, &tbt, false, tb, tall).unwrap()
        };
        let got = out.to_vec().unwrap();
        gpu.set_profiling(false);
        let ran: Vec<String> = gpu.take_profile().into_iter().map(|t| t.kernel).collect();
        let what = format!("M{m} tb {tb} bias {bias}");
        assert_eq!(ran, [format!("matmul_vec4::{want_entry}")], "{what}");
        let mut want = refmm::matmul(&a, &b, false, tb);
        if bias {
            for (i, v) in want.data.iter_mut().enumerate() {
                *v += c.data[i % n];
            }
        }
        assert_close(&what, &got, &want.data, F32_ACCUM);
    }
}

/// A transposed A with M % 4 == 0 runs on the vec4 tile's `_ta` form with no copy first, a
/// transposed B on its `_tb` form; with M % 4 != 0 the transposed A is copied row-major, and of
/// two transposed operands B is copied and A read in place. A tile of 64 lanes runs as its `_w16`
/// companion when N leaves at least half of the lanes idle (N ≤ 32 · TN), as itself past that.
/// (The entries by their shaders/matmul_vec4.wgsl names: their subgroup-broadcast twins are off
/// here and tested in tests/matmul_subgroup_a.rs.)
#[test]
fn transposed_operands_are_read_in_place_by_the_vec4_tiles() {
    let gpu = common::fresh_gpu();
    let mut settings = gpu.tune_settings();
    settings
        .overrides
        .insert("subgroup_broadcast".into(), "never".into());
    gpu.set_tune_settings(settings);
    let mut rng = Rng::new(24);
    let run = |(kernel, n): (MatmulKernel, usize), m: usize, ta: bool, tb: bool, rng: &mut Rng| {
        let a = random_param(&gpu, rng, &stored(&[], m, 16, ta), -1.0, 1.0).1;
        let b = random_param(&gpu, rng, &stored(&[], 16, n, tb), -1.0, 1.0).1;
        gpu.synchronize().unwrap();
        gpu.set_profiling(true);
        ops::matmul_with(&a, &b, ta, tb, kernel).unwrap();
        gpu.synchronize().unwrap();
        gpu.set_profiling(false);
        gpu.take_profile()
            .into_iter()
            .map(|t| t.kernel)
            .collect::<Vec<_>>()
    };
    let wide = MatmulKernel::vec4(8, 4);
    let w8 = MatmulKernel::Vec4 {
        rows: 32,
        cols: 4,
        lanes: 8,
        staged_k: 0,
    };
    for (kernel, columns, name) in [
        (wide, 8, "vec4_8x4_w16".to_string()),
        (wide, 128, "vec4_8x4_w16".to_string()),
        (wide, 132, wide.name()),
        (w8, 8, w8.name()),
    ] {
        let kernel = (kernel, columns);
        let entry = |tag: &str| format!("matmul_vec4::matmul_{}", name.replacen("vec4_", tag, 1));
        let (ta_entry, tb_entry) = (entry("vec4_ta_"), entry("vec4_tb_"));
        assert_eq!(
            run(kernel, 12, true, false, &mut rng),
            std::slice::from_ref(&ta_entry)
        );
        // B transposed, whatever M.
        for m in [12, 13] {
            assert_eq!(
                run(kernel, m, false, true, &mut rng),
                std::slice::from_ref(&tb_entry)
            );
        }
        let copied = run(kernel, 13, true, false, &mut rng);
        assert!(copied.iter().any(|k| k.starts_with("copy::")), "{copied:?}");
        assert!(copied.iter().all(|k| k != &ta_entry), "{copied:?}");
        // Both transposed: B is copied and A read in place; with M % 4 != 0, A is copied and
        // B read in place.
        let both = run(kernel, 12, true, true, &mut rng);
        assert_eq!(both.iter().filter(|k| k.starts_with("copy::")).count(), 1);
        assert!(both.contains(&ta_entry), "{both:?}");
        let both = run(kernel, 13, true, true, &mut rng);
        assert_eq!(both.iter().filter(|k| k.starts_with("copy::")).count(), 1);
        assert!(both.contains(&tb_entry), "{both:?}");
    }
}
