//! `ops::normalized_linear` (x · v with v's columns scaled to unit length, the DINO head's last
//! layer) against src/reference/normalized_linear.rs, forward and both gradients, on the fused
//! path (K ≥ 1024, a multiple of 4) and the composed one; the reference against f64 finite
//! differences; identities: the fused path agrees with `linear(x, l2_normalize(v))` on the GPU,
//! and scaling v by 4 leaves y and ∂x unchanged bit for bit and divides ∂v by 4 exactly.

mod common;

use cads::ops;
use cads::reference::{gradcheck, normalized_linear as refn, Array};
use cads::util::{Rng, Tolerance, F32_ACCUM, FD_F64};
use cads::Tensor;
use common::*;

/// Gradients accumulate sums of up to ~1000 f32 terms and divide by column norms.
const GRAD: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 1e-4,
};

struct Run {
    y: Vec<f32>,
    gx: Option<Vec<f32>>,
    gv: Vec<f32>,
    /// Launches per kernel entry (`shader::entry` → count).
    launches: Vec<(String, u64)>,
}

impl Run {
    fn launches_of(&self, entry: &str) -> u64 {
        self.launches
            .iter()
            .filter(|(k, _)| k.ends_with(entry))
            .map(|(_, n)| n)
            .sum()
    }
}

/// y, ∂x (when `x_grad`) and ∂v of `normalized_linear` with upstream `g`.
#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &cads::Gpu,
    x: &[f32],
    x_shape: &[usize],
    v: &[f32],
    v_shape: &[usize],
    g: &[f32],
    eps: f32,
    x_grad: bool,
) -> Run {
    let tx = Tensor::from_slice(gpu, x, x_shape)
        .unwrap()
        .requires_grad_(x_grad);
    let tv = Tensor::from_slice(gpu, v, v_shape)
        .unwrap()
        .requires_grad_(true);
    gpu.set_profiling(true);
    let y = ops::normalized_linear(&tx, &tv, eps).unwrap();
    let mut y_shape = x_shape.to_vec();
    *y_shape.last_mut().unwrap() = v_shape[1];
    assert_eq!(y.shape(), &y_shape[..]);
    let grads = y
        .backward_with(&Tensor::from_slice(gpu, g, &y_shape).unwrap())
        .unwrap();
    let out = Run {
        y: y.to_vec().unwrap(),
        gx: grads.get(&tx).map(|t| t.to_vec().unwrap()),
        gv: grads.get(&tv).unwrap().to_vec().unwrap(),
        launches: Vec::new(),
    };
    gpu.set_profiling(false);
    let launches = gpu
        .take_profile()
        .into_iter()
        .map(|t| (t.kernel, t.launches))
        .collect();
    Run { launches, ..out }
}

/// A weight with a zero column (5), a tiny one (6, inside eps) and one of ordinary size.
fn weight(rng: &mut Rng, b: usize, k: usize) -> Vec<f32> {
    let mut v = rng.vec_uniform(b * k, -1.0, 1.0);
    for (i, e) in v.iter_mut().enumerate() {
        match i % k {
            5 => *e = 0.0,
            6 => *e *= 1e-9,
            _ => {}
        }
    }
    v
}

/// Which kernels run a case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// At most 8 rows: the one-pass forward and weight-gradient kernels.
    Few,
    /// More rows: the products on v, the output rows scaled, ∂v rewritten in place.
    Wide,
    /// K under 1024 or not a multiple of 4: `linear(x, l2_normalize(v))`.
    Composed,
}

/// Each path with leading axes on x, against the f64 reference: few rows (1, 5, 6, 8; K = 1024,
/// 1172 and 1576, whose last column blocks are partly filled), more rows (9, 12), and the
/// composed path (K = 1030, not a multiple of 4; K = 60, under the wide minimum); ∂x is skipped
/// once on each fused path (x without gradient).
#[test]
fn matches_reference_forward_and_backward() {
    // A context of its own: the launch counts must not mix with another test's.
    let gpu = fresh_gpu();
    let mut rng = Rng::new(81);
    let eps = 1e-6;
    let cases: &[(&[usize], usize, Path, bool)] = &[
        (&[6, 24], 1024, Path::Few, true),
        (&[2, 3, 24], 1172, Path::Few, true),
        (&[5, 40], 1576, Path::Few, false),
        (&[1, 24], 1028, Path::Few, true),
        (&[8, 24], 1024, Path::Few, true),
        (&[9, 24], 1024, Path::Wide, true),
        (&[3, 4, 40], 1172, Path::Wide, false),
        (&[4, 24], 1030, Path::Composed, true),
        (&[3, 16], 60, Path::Composed, true),
    ];
    for &(x_shape, k, path, x_grad) in cases {
        let b = *x_shape.last().unwrap();
        let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
        let x = rng.vec_uniform(rows * b, -1.0, 1.0);
        let v = weight(&mut rng, b, k);
        let g = rng.vec_uniform(rows * k, -1.0, 1.0);
        let r = run(&gpu, &x, x_shape, &v, &[b, k], &g, eps, x_grad);
        let what = format!("x {x_shape:?} v [{b}, {k}] ({path:?})");
        let count = |entry: &str| r.launches_of(entry);
        let fused = [
            count("nl_forward_few"),
            count("nl_weight_grad_few"),
            count("l2_backward_apply_in_place4"),
        ];
        // ∂x scales the upstream rows; the wide forward also scales the output rows. No path
        // but the composed one normalises v itself.
        match path {
            Path::Few => {
                assert_eq!(fused, [1, 1, 0], "{what}: {:?}", r.launches);
                assert_eq!(count("l2_scale_rows4"), x_grad as u64, "{what}");
            }
            Path::Wide => {
                assert_eq!(fused, [0, 0, 1], "{what}: {:?}", r.launches);
                assert_eq!(count("l2_scale_rows4"), 1 + x_grad as u64, "{what}");
            }
            Path::Composed => {
                assert_eq!(fused, [0, 0, 0], "{what}: {:?}", r.launches);
                assert_eq!(count("l2_scale_rows4"), 0, "{what}");
            }
        }
        if path != Path::Composed {
            assert_eq!(count("l2_column_dots4"), 1, "{what}");
            assert_eq!(count("::l2_backward_apply4"), 0, "{what}");
        }

        let xa = Array::from_f32(&x, &[rows, b]);
        let va = Array::from_f32(&v, &[b, k]);
        let ga = Array::from_f32(&g, &[rows, k]);
        let want_y = refn::normalized_linear(&xa, &va, eps as f64);
        assert_close(&format!("{what} y"), &r.y, &want_y.data, F32_ACCUM);
        let (want_gx, want_gv) = refn::normalized_linear_backward(&xa, &va, eps as f64, &ga);
        match &r.gx {
            Some(gx) => assert_close(&format!("{what} ∂x"), gx, &want_gx.data, GRAD),
            None => assert!(!x_grad, "{what}: ∂x missing"),
        }
        assert_close(&format!("{what} ∂v"), &r.gv, &want_gv.data, GRAD);
    }
}

/// Both fused paths against the composed ops on the same GPU, and the power-of-4 scaling identity:
/// norms, products and scales all change by exact powers of two, so y and ∂x are unchanged bit
/// for bit and ∂v is exactly a quarter.
#[test]
fn fused_paths_agree_with_composition_and_are_scale_invariant() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(82);
    // 6 rows: the few-row kernels; 12: the products on v.
    for rows in [6, 12] {
        fused_case(&gpu, &mut rng, rows);
    }
}

fn fused_case(gpu: &cads::Gpu, rng: &mut Rng, rows: usize) {
    let (b, k, eps) = (32, 1172, 1e-6);
    let x = rng.vec_uniform(rows * b, -1.0, 1.0);
    let v = weight(rng, b, k);
    let g = rng.vec_uniform(rows * k, -1.0, 1.0);
    let fused = run(gpu, &x, &[rows, b], &v, &[b, k], &g, eps, true);

    let tx = Tensor::from_slice(gpu, &x, &[rows, b])
        .unwrap()
        .requires_grad_(true);
    let tv = Tensor::from_slice(gpu, &v, &[b, k])
        .unwrap()
        .requires_grad_(true);
    let y = ops::linear(&tx, &ops::l2_normalize(&tv, 0, eps).unwrap(), None).unwrap();
    let grads = y
        .backward_with(&Tensor::from_slice(gpu, &g, &[rows, k]).unwrap())
        .unwrap();
    let f64s =
        |t: &Tensor| -> Vec<f64> { t.to_vec().unwrap().into_iter().map(|e| e as f64).collect() };
    assert_close(
        &format!("{rows} rows: y vs composed"),
        &fused.y,
        &f64s(&y),
        F32_ACCUM,
    );
    let gx = fused.gx.as_deref().unwrap();
    assert_close(
        &format!("{rows} rows: ∂x vs composed"),
        gx,
        &f64s(grads.get(&tx).unwrap()),
        GRAD,
    );
    assert_close(
        &format!("{rows} rows: ∂v vs composed"),
        &fused.gv,
        &f64s(grads.get(&tv).unwrap()),
        GRAD,
    );

    // The identity holds outside the clamp: a zero column (5) stays zero, but its ∂v is
    // (xᵀG)/eps whatever the scale, so it is left out of the ∂v comparison.
    let mut v = rng.vec_uniform(b * k, -1.0, 1.0);
    v.iter_mut().skip(5).step_by(k).for_each(|e| *e = 0.0);
    let v4: Vec<f32> = v.iter().map(|e| e * 4.0).collect();
    let plain = run(gpu, &x, &[rows, b], &v, &[b, k], &g, eps, true);
    let scaled = run(gpu, &x, &[rows, b], &v4, &[b, k], &g, eps, true);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&scaled.y), bits(&plain.y), "{rows} rows: y");
    assert_eq!(
        bits(scaled.gx.as_deref().unwrap()),
        bits(plain.gx.as_deref().unwrap()),
        "{rows} rows: ∂x"
    );
    let off_column_5 = |v: &[f32]| -> Vec<u32> {
        v.iter()
            .enumerate()
            .filter(|(i, _)| i % k != 5)
            .map(|(_, e)| e.to_bits())
            .collect()
    };
    let quarter: Vec<f32> = plain.gv.iter().map(|e| e / 4.0).collect();
    assert_eq!(
        off_column_5(&scaled.gv),
        off_column_5(&quarter),
        "{rows} rows: ∂v"
    );
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(83);
    let (m, b, k) = (3, 4, 5);
    let x = Array::new((0..m * b).map(|_| rng.range(-1.0, 1.0)).collect(), &[m, b]);
    let mut vd: Vec<f64> = (0..b * k).map(|_| rng.range(-1.0, 1.0)).collect();
    // Column 2 inside the clamp (eps 1e-3): the map is v/eps there.
    for row in vd.chunks_mut(k) {
        row[2] *= 1e-5;
    }
    let v = Array::new(vd, &[b, k]);
    let g: Vec<f64> = (0..m * k).map(|_| rng.range(-1.0, 1.0)).collect();
    let eps = 1e-3;
    let (gx, gv) = refn::normalized_linear_backward(&x, &v, eps, &Array::new(g.clone(), &[m, k]));
    let fx = |d: &[f64]| {
        gradcheck::dot(
            &refn::normalized_linear(&Array::new(d.to_vec(), &[m, b]), &v, eps).data,
            &g,
        )
    };
    let fv = |d: &[f64]| {
        gradcheck::dot(
            &refn::normalized_linear(&x, &Array::new(d.to_vec(), &[b, k]), eps).data,
            &g,
        )
    };
    let h = 1e-7;
    assert_close64(
        "fd ∂x",
        &gx.data,
        &gradcheck::numeric_gradient(fx, &x.data, h),
        FD_F64,
    );
    assert_close64(
        "fd ∂v",
        &gv.data,
        &gradcheck::numeric_gradient(fv, &v.data, h),
        FD_F64,
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 8]).unwrap();
    let v = Tensor::zeros(&gpu, &[8, 1024]).unwrap();
    let wrong = Tensor::zeros(&gpu, &[7, 1024]).unwrap();
    let flat = Tensor::zeros(&gpu, &[8]).unwrap();
    for (what, r) in [
        ("inner extents", ops::normalized_linear(&x, &wrong, 1e-12)),
        ("rank-1 v", ops::normalized_linear(&x, &flat, 1e-12)),
        ("zero eps", ops::normalized_linear(&x, &v, 0.0)),
        ("nan eps", ops::normalized_linear(&x, &v, f32::NAN)),
    ] {
        let err = r.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(
            err.to_string().contains("normalized_linear"),
            "{what}: {err}"
        );
    }
}
