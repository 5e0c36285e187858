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

/// Fused (K = 1024, 1172: the last column block partly filled, 1576) and composed (K = 1030, not
/// a multiple of 4; K = 60, under the wide minimum) shapes, with leading axes on x, against the
/// f64 reference; on the fused path ∂x is also skipped once (x without gradient).
#[test]
fn matches_reference_forward_and_backward() {
    // A context of its own: the launch counts must not mix with another test's.
    let gpu = fresh_gpu();
    let mut rng = Rng::new(81);
    let eps = 1e-6;
    let cases: &[(&[usize], usize, bool, bool)] = &[
        (&[6, 24], 1024, true, true),
        (&[2, 3, 24], 1172, true, true),
        (&[5, 40], 1576, true, false),
        (&[4, 24], 1030, false, true),
        (&[3, 16], 60, false, true),
    ];
    for &(x_shape, k, fused, x_grad) in cases {
        let b = *x_shape.last().unwrap();
        let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
        let x = rng.vec_uniform(rows * b, -1.0, 1.0);
        let v = weight(&mut rng, b, k);
        let g = rng.vec_uniform(rows * k, -1.0, 1.0);
        let r = run(&gpu, &x, x_shape, &v, &[b, k], &g, eps, x_grad);
        let what = format!("x {x_shape:?} v [{b}, {k}]");
        // The fused path scales the output rows and the upstream rows (two row passes when ∂x
        // is wanted), never normalises v itself and turns xᵀG into ∂v in place; the composed
        // one scales v's rows once (wide) or runs the line kernels.
        let scale_rows = r.launches_of("l2_scale_rows4");
        if fused {
            assert_eq!(scale_rows, 1 + x_grad as u64, "{what}: {:?}", r.launches);
            assert_eq!(r.launches_of("l2_column_dots4"), 1, "{what}");
            assert_eq!(r.launches_of("l2_backward_apply_in_place4"), 1, "{what}");
            assert_eq!(r.launches_of("::l2_backward_apply4"), 0, "{what}");
        } else {
            assert_eq!(scale_rows, 0, "{what}: {:?}", r.launches);
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

/// The fused path against the composed ops on the same GPU, and the power-of-4 scaling identity:
/// norms, products and scales all change by exact powers of two, so y and ∂x are unchanged bit
/// for bit and ∂v is exactly a quarter.
#[test]
fn fused_path_agrees_with_composition_and_is_scale_invariant() {
    let gpu = fresh_gpu();
    let mut rng = Rng::new(82);
    let (rows, b, k, eps) = (6, 32, 1172, 1e-6);
    let x = rng.vec_uniform(rows * b, -1.0, 1.0);
    let v = weight(&mut rng, b, k);
    let g = rng.vec_uniform(rows * k, -1.0, 1.0);
    let fused = run(&gpu, &x, &[rows, b], &v, &[b, k], &g, eps, true);

    let tx = Tensor::from_slice(&gpu, &x, &[rows, b])
        .unwrap()
        .requires_grad_(true);
    let tv = Tensor::from_slice(&gpu, &v, &[b, k])
        .unwrap()
        .requires_grad_(true);
    let y = ops::linear(&tx, &ops::l2_normalize(&tv, 0, eps).unwrap(), None).unwrap();
    let grads = y
        .backward_with(&Tensor::from_slice(&gpu, &g, &[rows, k]).unwrap())
        .unwrap();
    let f64s =
        |t: &Tensor| -> Vec<f64> { t.to_vec().unwrap().into_iter().map(|e| e as f64).collect() };
    assert_close("y vs composed", &fused.y, &f64s(&y), F32_ACCUM);
    let gx = fused.gx.as_deref().unwrap();
    assert_close("∂x vs composed", gx, &f64s(grads.get(&tx).unwrap()), GRAD);
    assert_close(
        "∂v vs composed",
        &fused.gv,
        &f64s(grads.get(&tv).unwrap()),
        GRAD,
    );

    // The identity holds outside the clamp: a zero column (5) stays zero, but its ∂v is
    // (xᵀG)/eps whatever the scale, so it is left out of the ∂v comparison.
    let mut v = rng.vec_uniform(b * k, -1.0, 1.0);
    v.iter_mut().skip(5).step_by(k).for_each(|e| *e = 0.0);
    let v4: Vec<f32> = v.iter().map(|e| e * 4.0).collect();
    let plain = run(&gpu, &x, &[rows, b], &v, &[b, k], &g, eps, true);
    let scaled = run(&gpu, &x, &[rows, b], &v4, &[b, k], &g, eps, true);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&scaled.y), bits(&plain.y), "y");
    assert_eq!(
        bits(scaled.gx.as_deref().unwrap()),
        bits(plain.gx.as_deref().unwrap()),
        "∂x"
    );
    let off_column_5 = |v: &[f32]| -> Vec<u32> {
        v.iter()
            .enumerate()
            .filter(|(i, _)| i % k != 5)
            .map(|(_, e)| e.to_bits())
            .collect()
    };
    let quarter: Vec<f32> = plain.gv.iter().map(|e| e / 4.0).collect();
    assert_eq!(off_column_5(&scaled.gv), off_column_5(&quarter), "∂v");
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
