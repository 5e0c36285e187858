//! Autograd tape semantics: fan-out accumulation, no_grad, detach, graph consumption, buffer
//! release, and the gradients of the data-movement ops.

mod common;

use cads::ops;
use cads::util::{Rng, F32_GRAD, F32_POINTWISE};
use cads::Tensor;
use common::*;

#[test]
fn fan_out_accumulates_in_one_place() {
    // y = Σ (x·x + x + x)  ⇒  dy/dx = 2x + 2, x used four times.
    let gpu = gpu();
    let data = [0.5f32, -1.0, 2.0, 3.5];
    let x = Tensor::parameter(&gpu, &data, &[4]).unwrap();
    let y = ops::add(&ops::add(&ops::mul(&x, &x).unwrap(), &x).unwrap(), &x).unwrap();
    let loss = ops::sum_all(&y).unwrap();
    let grads = loss.backward().unwrap();
    let want: Vec<f64> = data.iter().map(|&v| 2.0 * v as f64 + 2.0).collect();
    assert_close(
        "fan-out grad",
        &grads.get(&x).unwrap().to_vec().unwrap(),
        &want,
        F32_POINTWISE,
    );
}

#[test]
fn no_grad_and_detach_stop_recording() {
    let gpu = gpu();
    let x = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let y = gpu.no_grad(|| ops::mul(&x, &x).unwrap());
    assert!(!y.requires_grad(), "op under no_grad must not record");
    assert!(y.backward().is_err());
    // z = x·detach(x): gradient is detach(x) only, not 2x.
    let z = ops::sum_all(&ops::mul(&x, &x.detach()).unwrap()).unwrap();
    let g = z.backward().unwrap();
    assert_close(
        "detach grad",
        &g.get(&x).unwrap().to_vec().unwrap(),
        &[1.0, 2.0],
        F32_POINTWISE,
    );
}

#[test]
fn graph_is_consumed_by_backward() {
    let gpu = gpu();
    let x = Tensor::parameter(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let loss = ops::sum_all(&ops::exp(&x).unwrap()).unwrap();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("already consumed"), "{err}");
}

#[test]
fn non_scalar_backward_needs_an_upstream_gradient() {
    let gpu = gpu();
    let x = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let y = ops::exp(&x).unwrap();
    assert!(y
        .backward()
        .unwrap_err()
        .to_string()
        .contains("backward_with"));
    let bad = Tensor::zeros(&gpu, &[3]).unwrap();
    assert!(y.backward_with(&bad).is_err());
}

#[test]
fn intermediate_buffers_return_to_the_pool_after_backward() {
    let gpu = fresh_gpu(); // own pool: other tests' tensors must not count
    let mut rng = Rng::new(3);
    let x = Tensor::parameter(&gpu, &rng.vec_uniform(4096, -1.0, 1.0), &[64, 64]).unwrap();
    let before = gpu.pool_stats().live_bytes;
    let grads = {
        let mut h = x.clone();
        for _ in 0..8 {
            h = ops::gelu(&ops::scale(&h, 0.9).unwrap()).unwrap();
        }
        let loss = ops::sum_all(&h).unwrap();
        let during = gpu.pool_stats().live_bytes;
        // The 8 GELU inputs (the scales' backward keeps nothing).
        assert!(
            during >= before + 8 * 4096 * 4,
            "activations should be live before backward"
        );
        loss.backward().unwrap()
    };
    // Only the gradient of x (one 64×64 buffer) may remain beyond what was live before.
    let after = gpu.pool_stats().live_bytes;
    assert!(
        after <= before + 4096 * 4,
        "live bytes {before} -> {after}: intermediates leaked"
    );
    assert_eq!(grads.len(), 1);
    let stats = gpu.pool_stats();
    assert!(stats.reuses > 0 && stats.peak_bytes >= stats.live_bytes);
}

#[test]
fn permute_slice_concat_forward_and_backward() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    let shape = [2, 3, 5, 7];
    let (xa, x) = random_param(&gpu, &mut rng, &shape, -1.0, 1.0);
    // permute [3, 0, 2, 1]
    let p = x.permute(&[3, 0, 2, 1]).unwrap();
    assert_eq!(p.shape(), &[7, 2, 5, 3]);
    let pv = p.to_vec().unwrap();
    let mut want = vec![0.0f64; pv.len()];
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..5 {
                for d in 0..7 {
                    want[((d * 2 + a) * 5 + c) * 3 + b] = xa.data[((a * 3 + b) * 5 + c) * 7 + d];
                }
            }
        }
    }
    assert_close("permute", &pv, &want, F32_POINTWISE);
    // slice axis 2, 1..4, then concat with itself along axis 0; gradient of a weighted sum.
    let s = x.slice(2, 1, 3).unwrap();
    let c = Tensor::concat(&[&s, &s, &p.permute(&[1, 3, 2, 0]).unwrap()], 2).unwrap();
    assert_eq!(c.shape(), &[2, 3, 11, 7]);
    let g = rng.vec_uniform(c.numel(), -1.0, 1.0);
    let grads = c
        .backward_with(&Tensor::from_slice(&gpu, &g, c.shape()).unwrap())
        .unwrap();
    // d/dx: for each x[a,b,k,d]: (k in 1..4 → g at slot k-1 and slot 3+k-1) + g at slot 6+k.
    let mut gx = vec![0.0f64; xa.numel()];
    for a in 0..2 {
        for b in 0..3 {
            for k in 0..5 {
                for d in 0..7 {
                    let gi = |slot: usize| g[((a * 3 + b) * 11 + slot) * 7 + d] as f64;
                    let mut v = gi(6 + k);
                    if (1..4).contains(&k) {
                        v += gi(k - 1) + gi(3 + k - 1);
                    }
                    gx[((a * 3 + b) * 5 + k) * 7 + d] = v;
                }
            }
        }
    }
    assert_close(
        "slice/concat/permute grad",
        &grads.get(&x).unwrap().to_vec().unwrap(),
        &gx,
        F32_GRAD,
    );
}

/// Regions whose last axis has 32 or more elements take the row form of the copy (lanes along
/// the last axis, src/tensor/layout.rs): a rank-6 permute whose output's last axis (70) is the
/// input's strided first axis, with a partial second block of lanes; a slice along the last
/// axis; and a transpose to 70 000 rows of 32 (rows folded over two grid axes).
#[test]
fn row_form_copies_match_the_index_arithmetic() {
    let gpu = gpu();
    let mut rng = Rng::new(6);
    let shape = [70, 2, 3, 4, 5, 3];
    let x = rng.vec_uniform(shape.iter().product(), -1.0, 1.0);
    let t = Tensor::from_slice(&gpu, &x, &shape).unwrap();
    let p = t.permute(&[1, 2, 3, 4, 5, 0]).unwrap();
    assert_eq!(p.shape(), &[2, 3, 4, 5, 3, 70]);
    let inner: usize = shape[1..].iter().product();
    let want: Vec<f32> = (0..x.len()).map(|i| x[(i % 70) * inner + i / 70]).collect();
    let pv = p.to_vec().unwrap();
    assert_eq!(pv, want, "rank-6 permute");
    let s = p.slice(5, 10, 40).unwrap();
    let want: Vec<f32> = (0..s.numel())
        .map(|i| pv[(i / 40) * 70 + 10 + i % 40])
        .collect();
    assert_eq!(s.to_vec().unwrap(), want, "slice of the last axis");
    let (rows, cols) = (32, 70_000);
    let m = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let tt = Tensor::from_slice(&gpu, &m, &[rows, cols])
        .unwrap()
        .permute(&[1, 0])
        .unwrap()
        .to_vec()
        .unwrap();
    for (i, v) in tt.iter().enumerate().step_by(997) {
        assert_eq!(*v, m[(i % rows) * cols + i / rows], "transpose at {i}");
    }
}

/// Row copies whose rows are whole, aligned vec4s on both sides move a vec4 per lane
/// (`copy_region_rows4`); a row of a length or at an offset that is no multiple of 4 keeps the
/// scalar row form. Values against the index arithmetic, forward and the slice's backward.
#[test]
fn aligned_row_copies_move_vec4s() {
    let gpu = common::fresh_gpu();
    let mut rng = Rng::new(7);
    let run = |f: &dyn Fn() -> Vec<f32>| {
        gpu.synchronize().unwrap();
        gpu.set_profiling(true);
        let v = f();
        gpu.set_profiling(false);
        // (kernel, launches), one entry per kernel.
        let ran: Vec<(String, u64)> = gpu
            .take_profile()
            .into_iter()
            .map(|t| (t.kernel, t.launches))
            .collect();
        (v, ran)
    };
    let rows4 = |launches| ("copy::copy_region_rows4".to_string(), launches);
    let rows = ("copy::copy_region_rows".to_string(), 1);
    // Slice rows 4..8 of [5, 12, 300] (offset 1200, rows of 300 = 1.2 workgroups of vec4s).
    let x = rng.vec_uniform(5 * 12 * 300, -1.0, 1.0);
    let t = Tensor::from_slice(&gpu, &x, &[5, 12, 300]).unwrap();
    let (got, ran) = run(&|| t.slice(1, 4, 4).unwrap().to_vec().unwrap());
    let want: Vec<f32> = (0..5 * 4 * 300)
        .map(|i| x[(i / 1200) * 3600 + (4 + (i / 300) % 4) * 300 + i % 300])
        .collect();
    assert_eq!(got, want, "aligned slice");
    assert_eq!(ran, [rows4(1)]);
    // Concat along the last axis: [6, 36] then [6, 40] at column 36 of rows of 76.
    let (a, b) = (
        rng.vec_uniform(6 * 36, -1.0, 1.0),
        rng.vec_uniform(6 * 40, -1.0, 1.0),
    );
    let ta = Tensor::from_slice(&gpu, &a, &[6, 36]).unwrap();
    let tb = Tensor::from_slice(&gpu, &b, &[6, 40]).unwrap();
    let (got, ran) = run(&|| Tensor::concat(&[&ta, &tb], 1).unwrap().to_vec().unwrap());
    let want: Vec<f32> = (0..6 * 76)
        .map(|i| match i % 76 {
            c if c < 36 => a[(i / 76) * 36 + c],
            c => b[(i / 76) * 40 + c - 36],
        })
        .collect();
    assert_eq!(got, want, "aligned concat");
    assert_eq!(ran, [rows4(2)]);
    // Misaligned: a slice starting at column 10, and rows of 33.
    let (_, ran) = run(&|| t.slice(2, 10, 40).unwrap().to_vec().unwrap());
    assert_eq!(ran, std::slice::from_ref(&rows));
    let u = Tensor::from_slice(&gpu, &x[..5 * 12 * 33], &[5, 12, 33]).unwrap();
    let (_, ran) = run(&|| u.slice(1, 4, 4).unwrap().to_vec().unwrap());
    assert_eq!(ran, std::slice::from_ref(&rows));
    // The slice's backward writes the gradient into a zeroed tensor at the aligned offset.
    let p = Tensor::from_slice(&gpu, &x, &[5, 12, 300])
        .unwrap()
        .requires_grad_(true);
    let s = p.slice(1, 4, 4).unwrap();
    let g = rng.vec_uniform(s.numel(), -1.0, 1.0);
    let grads = s
        .backward_with(&Tensor::from_slice(&gpu, &g, s.shape()).unwrap())
        .unwrap();
    let gx = grads.get(&p).unwrap().to_vec().unwrap();
    for (i, v) in gx.iter().enumerate() {
        let (n, r, c) = (i / 3600, (i / 300) % 12, i % 300);
        let want = if (4..8).contains(&r) {
            g[(n * 4 + r - 4) * 300 + c]
        } else {
            0.0
        };
        assert_eq!(*v, want, "slice gradient at {i}");
    }
}

#[test]
fn bad_layout_arguments_are_typed_errors() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    assert!(x.permute(&[0, 0]).is_err());
    assert!(x.slice(1, 2, 2).is_err());
    assert!(x.reshape(&[7]).is_err());
    let y = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    assert!(Tensor::concat(&[&x, &y], 0).is_err());
    assert!(Tensor::from_slice(&gpu, &[1.0, 2.0], &[3]).is_err());
}

/// `backward_observed`: every watched leaf is reported exactly once, as soon as its last consumer
/// has run (a leaf used twice only after its EARLIER use in the forward, i.e. its later node in
/// the sweep), an unused one before the first node with no gradient; the gradient it is handed is
/// the final one, and the returned gradients are bit for bit those of `backward`.
#[test]
fn observed_backward_reports_each_leaf_once_when_its_gradient_is_final() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    let values: Vec<Vec<f32>> = (0..5).map(|_| rng.vec_uniform(6, -1.0, 1.0)).collect();
    // Watched: a, b, c, d (unused), e (used first and last).
    let build = || {
        let p: Vec<Tensor> = values
            .iter()
            .map(|v| Tensor::parameter(&gpu, v, &[6]).unwrap())
            .collect();
        let (a, b, c, e) = (&p[0], &p[1], &p[2], &p[4]);
        let y1 = ops::mul(a, e).unwrap();
        let y2 = ops::mul(&y1, b).unwrap();
        let y3 = ops::mul(&y2, c).unwrap();
        let y4 = ops::add(&y3, e).unwrap();
        (p, ops::sum_all(&ops::mul(&y4, &y4).unwrap()).unwrap())
    };
    let (plain_params, plain_loss) = build();
    let plain = plain_loss.backward().unwrap();

    let (params, loss) = build();
    assert_eq!(loss.consumes(&params), vec![true, true, true, false, true]);
    let mut reports: Vec<(usize, Option<Vec<f32>>)> = Vec::new();
    let grads = loss
        .backward_observed(&params, |i, g| {
            reports.push((i, g.map(|g| g.to_vec().unwrap())));
            Ok(())
        })
        .unwrap();
    // The sweep: sum, mul(y4, y4), add (e's late use: not final yet), mul(·, c) → c,
    // mul(·, b) → b, mul(a, e) → a then e (input order). d before everything.
    let order: Vec<usize> = reports.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, vec![3, 2, 1, 0, 4]);
    assert!(reports[0].1.is_none(), "the unused leaf has no gradient");
    for (i, g) in &reports[1..] {
        let returned = grads.get(&params[*i]).unwrap().to_vec().unwrap();
        let reference = plain.get(&plain_params[*i]).unwrap().to_vec().unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // Final when reported, and equal to the unobserved backward's, bit for bit.
        assert_eq!(bits(g.as_ref().unwrap()), bits(&returned), "leaf {i}");
        assert_eq!(bits(&returned), bits(&reference), "leaf {i}");
    }
    assert!(grads.get(&params[3]).is_none());
    assert_eq!(grads.len(), plain.len());
}

#[test]
fn observed_backward_checks_what_it_watches_and_stops_on_a_hook_error() {
    let gpu = gpu();
    let x = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let y = ops::exp(&x).unwrap();
    let loss = || ops::sum_all(&ops::mul(&x, &y).unwrap()).unwrap();

    let err = loss()
        .backward_observed(std::slice::from_ref(&y), |_, _| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("leaves"), "{err}");
    let err = loss()
        .backward_observed(&[x.clone(), x.clone()], |_, _| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("once"), "{err}");
    let err = loss()
        .backward_observed(std::slice::from_ref(&x), |_, _| {
            Err(cads::Error::invalid("hook", "nothing", "a refusal"))
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("a refusal"), "{err}");
    let non_scalar = ops::mul(&x, &x).unwrap();
    assert!(non_scalar
        .backward_observed(std::slice::from_ref(&x), |_, _| Ok(()))
        .is_err());
}
