//! Optimizers, schedules and gradient clipping: GPU steps against the f64 reference of
//! src/reference/optim.rs over several steps (odd sizes, per-group settings, skipped parameters,
//! a launch past 65,535 workgroups), schedules against hand-computed values, independent checks
//! (closed-form SGD on ½‖x‖², convergence on a quadratic), and typed errors.

mod common;

use cads::optim::{
    clip_grad_norm, clip_grad_norm_per_tensor, grad_norms, AdamW, AdamWConfig, LinearRamp,
    Optimizer, ParamGroup, PolyDecay, Sgd, SgdConfig, WarmupCosine,
};
use cads::reference::optim as refopt;
use cads::util::{Rng, Tolerance, F32_ACCUM, F32_POINTWISE};
use cads::{ops, Error, Gpu, Gradients, Tensor};
use common::*;

/// Several f32 steps whose rounding compounds: relative 1e-4 of the value plus 1e-5 absolute.
const STEPS_TOL: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-4,
};

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A parameter on the GPU and its f64 twin, filled uniform in [-1, 1).
fn param(gpu: &Gpu, rng: &mut Rng, shape: &[usize]) -> (Vec<f64>, Tensor) {
    let n = shape.iter().product();
    let data = rng.vec_uniform(n, -1.0, 1.0);
    (to64(&data), Tensor::parameter(gpu, &data, shape).unwrap())
}

/// Random gradients for the parameters selected by `present`, as `Gradients` and f64 twins.
fn random_grads(
    gpu: &Gpu,
    rng: &mut Rng,
    params: &[Tensor],
    present: &[bool],
    scale: f32,
) -> (Gradients, Vec<Option<Vec<f64>>>) {
    let mut grads = Gradients::default();
    let mut twins = Vec::new();
    for (p, &on) in params.iter().zip(present) {
        if !on {
            twins.push(None);
            continue;
        }
        let g = rng.vec_uniform(p.numel(), -scale, scale);
        grads
            .accumulate(p.id(), Tensor::from_slice(gpu, &g, p.shape()).unwrap())
            .unwrap();
        twins.push(Some(to64(&g)));
    }
    (grads, twins)
}

/// Two groups: group 0 with the config's lr / weight decay, group 1 with its own.
const SHAPES_0: &[&[usize]] = &[&[1], &[7], &[3, 5, 7]];
const SHAPES_1: &[&[usize]] = &[&[13], &[2, 1, 9]];

#[test]
fn sgd_matches_reference_over_steps() {
    let gpu = gpu();
    let configs = [
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
        SgdConfig {
            lr: 0.1,
            weight_decay: 0.05,
            ..Default::default()
        },
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            ..Default::default()
        },
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.3,
            weight_decay: 0.01,
            ..Default::default()
        },
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: true,
            ..Default::default()
        },
        SgdConfig::nnunet(0.01),
    ];
    for (ci, config) in configs.iter().enumerate() {
        let mut rng = Rng::new(100 + ci as u64);
        let shapes: Vec<&[usize]> = SHAPES_0.iter().chain(SHAPES_1).copied().collect();
        let (mut want, params): (Vec<Vec<f64>>, Vec<Tensor>) =
            shapes.iter().map(|s| param(&gpu, &mut rng, s)).unzip();
        let (lr1, wd1) = (0.02, 0.1);
        let groups = vec![
            ParamGroup::new(params[..3].to_vec()),
            ParamGroup::new(params[3..].to_vec())
                .with_lr(lr1)
                .with_weight_decay(wd1),
        ];
        let mut opt = Sgd::new(groups, *config).unwrap();
        let mut bufs: Vec<refopt::MomentumBuffer> = vec![None; params.len()];
        for step in 0..4 {
            // Parameter 1 gets no gradient on step 1, parameter 4 none on step 0.
            let present: Vec<bool> = (0..params.len())
                .map(|i| !(i == 1 && step == 1 || i == 4 && step == 0))
                .collect();
            let (grads, twins) = random_grads(&gpu, &mut rng, &params, &present, 1.0);
            opt.step(&grads).unwrap();
            for (i, g) in twins.iter().enumerate() {
                let Some(g) = g else { continue };
                let (lr, wd) = if i < 3 {
                    (config.lr, config.weight_decay)
                } else {
                    (lr1, wd1)
                };
                refopt::sgd_step(
                    &mut want[i],
                    g,
                    &mut bufs[i],
                    lr,
                    config.momentum,
                    config.dampening,
                    wd,
                    config.nesterov,
                );
            }
        }
        for (i, p) in params.iter().enumerate() {
            assert_close(
                &format!("sgd config {ci} param {i}"),
                &p.to_vec().unwrap(),
                &want[i],
                STEPS_TOL,
            );
            let gi = (i >= 3) as usize;
            let buf = opt.momentum_buffer(gi, i - 3 * gi).unwrap();
            match &bufs[i] {
                Some(b) => assert_close(
                    &format!("sgd config {ci} buffer {i}"),
                    &buf.unwrap().to_vec().unwrap(),
                    b,
                    STEPS_TOL,
                ),
                None => assert!(buf.is_none(), "config {ci}: no momentum buffer expected"),
            }
        }
    }
}

#[test]
fn adamw_matches_reference_with_scheduled_lr_and_weight_decay() {
    let gpu = gpu();
    let configs = [
        AdamWConfig {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
        AdamWConfig {
            lr: 1e-2,
            weight_decay: 0.04,
            ..Default::default()
        },
        AdamWConfig {
            lr: 5e-3,
            betas: (0.5, 0.9),
            eps: 1e-6,
            weight_decay: 0.3,
        },
    ];
    for (ci, config) in configs.iter().enumerate() {
        let mut rng = Rng::new(200 + ci as u64);
        let shapes: Vec<&[usize]> = SHAPES_0.iter().chain(SHAPES_1).copied().collect();
        let (mut want, params): (Vec<Vec<f64>>, Vec<Tensor>) =
            shapes.iter().map(|s| param(&gpu, &mut rng, s)).unzip();
        // DINO grouping: rank ≥ 2 decays, 1-D does not.
        let groups = ParamGroup::split_decay(&params);
        assert_eq!(groups[0].params.len(), 2);
        assert_eq!(groups[1].params.len(), 3);
        let decayed: Vec<bool> = params.iter().map(|p| p.rank() >= 2).collect();
        let index_in_group: Vec<(usize, usize)> = {
            let (mut a, mut b) = (0, 0);
            decayed
                .iter()
                .map(|&d| {
                    if d {
                        a += 1;
                        (0, a - 1)
                    } else {
                        b += 1;
                        (1, b - 1)
                    }
                })
                .collect()
        };
        let mut opt = AdamW::new(groups, *config).unwrap();
        let lr_schedule = WarmupCosine::new(config.lr, 1e-4, 5, 2, 0.0).unwrap();
        let wd_schedule =
            WarmupCosine::new(config.weight_decay, 10.0 * config.weight_decay, 5, 0, 0.0).unwrap();
        let mut states = vec![refopt::AdamWState::default(); params.len()];
        for step in 0..5u64 {
            let (lr, wd) = (lr_schedule.at(step).max(1e-4), wd_schedule.at(step));
            opt.set_lr_all(lr).unwrap();
            opt.set_weight_decay(0, wd).unwrap();
            assert_eq!(opt.weight_decay(1).unwrap(), 0.0);
            let present: Vec<bool> = (0..params.len())
                .map(|i| !(i == 2 && step == 0 || i == 3 && step == 3))
                .collect();
            let (grads, twins) = random_grads(&gpu, &mut rng, &params, &present, 1.0);
            opt.step(&grads).unwrap();
            for (i, g) in twins.iter().enumerate() {
                let Some(g) = g else { continue };
                let wd_i = if decayed[i] { wd } else { 0.0 };
                let (b1, b2) = config.betas;
                refopt::adamw_step(
                    &mut want[i],
                    g,
                    &mut states[i],
                    lr,
                    b1,
                    b2,
                    config.eps,
                    wd_i,
                );
            }
        }
        for (i, p) in params.iter().enumerate() {
            let what = format!("adamw config {ci} param {i}");
            assert_close(&what, &p.to_vec().unwrap(), &want[i], STEPS_TOL);
            let (g, k) = index_in_group[i];
            let s = opt.state(g, k).unwrap().unwrap();
            // Skipped steps do not count: bias correction uses the parameter's own step.
            assert_eq!(s.step, states[i].step, "{what}: step count");
            assert_close(
                &format!("{what} m"),
                &s.exp_avg.to_vec().unwrap(),
                &states[i].m,
                STEPS_TOL,
            );
            assert_close(
                &format!("{what} v"),
                &s.exp_avg_sq.to_vec().unwrap(),
                &states[i].v,
                STEPS_TOL,
            );
        }
    }
}

#[test]
fn large_parameters_and_launches_past_65535_workgroups() {
    let gpu = gpu();
    let mut rng = Rng::new(300);
    // 1,000,003 elements: AdamW and Nesterov SGD over several steps.
    let (mut want_a, pa) = param(&gpu, &mut rng, &[1_000_003]);
    let (mut want_s, ps) = param(&gpu, &mut rng, &[1_000_003]);
    let config = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.05,
        ..Default::default()
    };
    let mut adamw = AdamW::new(vec![ParamGroup::new(vec![pa.clone()])], config).unwrap();
    let mut sgd = Sgd::new(
        vec![ParamGroup::new(vec![ps.clone()])],
        SgdConfig::nnunet(0.01),
    )
    .unwrap();
    let mut state = refopt::AdamWState::default();
    let mut buf = None;
    for _ in 0..3 {
        let (grads, twins) = random_grads(
            &gpu,
            &mut rng,
            &[pa.clone(), ps.clone()],
            &[true, true],
            1.0,
        );
        adamw.step(&grads).unwrap();
        sgd.step(&grads).unwrap();
        refopt::adamw_step(
            &mut want_a,
            twins[0].as_ref().unwrap(),
            &mut state,
            1e-2,
            0.9,
            0.999,
            1e-8,
            0.05,
        );
        refopt::sgd_step(
            &mut want_s,
            twins[1].as_ref().unwrap(),
            &mut buf,
            0.01,
            0.99,
            0.0,
            3e-5,
            true,
        );
    }
    assert_close("adamw 1000003", &pa.to_vec().unwrap(), &want_a, STEPS_TOL);
    assert_close(
        "sgd nesterov 1000003",
        &ps.to_vec().unwrap(),
        &want_s,
        STEPS_TOL,
    );

    // 65,535·256 + 7 elements: 65,536 workgroups of 256, so the grid folds to 2-D.
    let n = 65_535 * 256 + 7;
    let (mut want, p) = param(&gpu, &mut rng, &[n]);
    let (mut grads, twins) = random_grads(&gpu, &mut rng, std::slice::from_ref(&p), &[true], 1.0);
    let mut g = twins[0].clone().unwrap();
    let norms = clip_grad_norm_per_tensor(std::slice::from_ref(&p), &mut grads, 100.0).unwrap();
    let want_norm = refopt::clip_per_tensor(std::slice::from_mut(&mut g), 100.0)[0];
    assert_close(
        "norm of 16.8M elements",
        &[norms[0].unwrap()],
        &[want_norm],
        F32_ACCUM,
    );
    let mut opt = Sgd::new(
        vec![ParamGroup::new(vec![p.clone()])],
        SgdConfig {
            lr: 0.5,
            weight_decay: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&grads).unwrap();
    refopt::sgd_step(&mut want, &g, &mut None, 0.5, 0.0, 0.0, 0.1, false);
    assert_close("sgd folded grid", &p.to_vec().unwrap(), &want, F32_ACCUM);
}

/// Gradients with norms on both sides of `max_norm` (scale 1e-3 → small, 3 → large), of sizes
/// around the 4096-element chunk of the norm reduction.
fn clip_case(gpu: &Gpu, seed: u64) -> (Vec<Tensor>, Gradients, Vec<Vec<f64>>) {
    let mut rng = Rng::new(seed);
    let shapes: &[&[usize]] = &[&[1], &[7], &[13, 17], &[4096], &[4097], &[3, 3001], &[0]];
    let params: Vec<Tensor> = shapes.iter().map(|s| param(gpu, &mut rng, s).1).collect();
    let mut grads = Gradients::default();
    let mut twins = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let scale = if i % 2 == 0 { 1e-3 } else { 3.0 };
        let g = rng.vec_uniform(p.numel(), -scale, scale);
        grads
            .accumulate(p.id(), Tensor::from_slice(gpu, &g, p.shape()).unwrap())
            .unwrap();
        twins.push(to64(&g));
    }
    (params, grads, twins)
}

#[test]
fn per_tensor_clipping_matches_reference() {
    let gpu = gpu();
    let (params, mut grads, mut want) = clip_case(&gpu, 400);
    let measured = grad_norms(&params, &grads).unwrap();
    let norms = clip_grad_norm_per_tensor(&params, &mut grads, 0.3).unwrap();
    assert_eq!(
        measured, norms,
        "grad_norms and the clip report the same norms"
    );
    let want_norms = refopt::clip_per_tensor(&mut want, 0.3);
    let got: Vec<f32> = norms.iter().map(|n| n.unwrap()).collect();
    assert_close("per-tensor norms", &got, &want_norms, F32_ACCUM);
    for (i, p) in params.iter().enumerate() {
        let clipped = grads.get(p).unwrap().to_vec().unwrap();
        assert_close(&format!("clipped grad {i}"), &clipped, &want[i], F32_ACCUM);
        // Independent: the norm after clipping is min(norm, max_norm) (up to the 1e-6 of ε).
        let after = refopt::norm(&to64(&clipped));
        let expect = want_norms[i].min(0.3);
        assert!(
            (after - expect).abs() <= 1e-5 + 1e-4 * expect,
            "grad {i}: norm after clip {after}, expected {expect}"
        );
    }
    assert!(want_norms.iter().any(|&n| n > 0.3) && want_norms.iter().any(|&n| n > 0.0 && n < 0.3));
}

#[test]
fn per_tensor_clipping_on_gpu_matches_reference_and_holds_the_gradients_once() {
    // Its own context, so the pool's peak is this test's alone.
    let gpu = fresh_gpu();
    let (params, mut grads, mut want) = clip_case(&gpu, 401);
    let want_norms = refopt::clip_per_tensor(&mut want, 0.3);
    // Eight more gradients of 64 Ki elements (256 KiB each) dominate the memory.
    let mut rng = Rng::new(402);
    let mut params = params;
    for _ in 0..8 {
        let p = param(&gpu, &mut rng, &[65536]).1;
        let g = rng.vec_uniform(65536, -1.0, 1.0);
        grads
            .accumulate(p.id(), Tensor::from_slice(&gpu, &g, &[65536]).unwrap())
            .unwrap();
        let mut twin = vec![to64(&g)];
        refopt::clip_per_tensor(&mut twin, 0.3);
        want.push(twin.remove(0));
        params.push(p);
    }
    gpu.synchronize().unwrap();
    let before = gpu.pool_stats().live_bytes;
    gpu.reset_peak_memory();
    let norms = cads::optim::clip_grad_norm_per_tensor_on_gpu(&params, &mut grads, 0.3)
        .unwrap()
        .expect("norms of the present gradients");
    gpu.synchronize().unwrap();
    let extra = gpu.pool_stats().peak_bytes - before;
    // The clipped copy of one gradient at a time, plus the small norms and per-chunk partial
    // sums: well under two of the 256 KiB gradients (holding every unclipped gradient until the
    // end, as before, took 8 × 256 KiB more).
    assert!(
        extra < 2 * 262_144,
        "clipping held {extra} bytes beyond the gradients"
    );
    let got = norms.to_vec().unwrap();
    assert_close("on-gpu norms", &got[..6], &want_norms[..6], F32_ACCUM);
    for (i, p) in params.iter().enumerate() {
        let Some(g) = grads.get(p) else {
            assert_eq!(p.numel(), 0);
            continue;
        };
        let clipped = g.to_vec().unwrap();
        assert_close(&format!("clipped grad {i}"), &clipped, &want[i], F32_ACCUM);
    }
}

#[test]
fn global_clipping_matches_reference() {
    let gpu = gpu();
    for max_norm in [0.5, 1e6] {
        let (params, mut grads, mut want) = clip_case(&gpu, 500);
        // A parameter without a gradient is ignored and reported as such.
        let extra = Tensor::parameter(&gpu, &[1.0; 5], &[5]).unwrap();
        let mut all = params.clone();
        all.push(extra.clone());
        let total = clip_grad_norm(&all, &mut grads, max_norm).unwrap();
        assert!(grads.get(&extra).is_none());
        let want_total = refopt::clip_global(&mut want, max_norm);
        assert_close("total norm", &[total], &[want_total], F32_ACCUM);
        let mut after = 0.0;
        for (i, p) in params.iter().enumerate() {
            let clipped = grads.get(p).unwrap().to_vec().unwrap();
            assert_close(
                &format!("globally clipped grad {i} (max {max_norm})"),
                &clipped,
                &want[i],
                F32_ACCUM,
            );
            after += refopt::norm(&to64(&clipped)).powi(2);
        }
        let expect = want_total.min(max_norm);
        assert!(
            (after.sqrt() - expect).abs() <= 1e-4 * expect,
            "total after clip {} vs {expect}",
            after.sqrt()
        );
    }
}

#[test]
fn sgd_on_half_squared_norm_is_geometric() {
    // f(x) = ½‖x‖², ∇f = x, so plain SGD gives x_k = x_0·(1 − lr)^k; gradients come from autograd.
    let gpu = gpu();
    let mut rng = Rng::new(600);
    let (x0, x) = param(&gpu, &mut rng, &[3, 37]);
    let lr = 0.2;
    let mut opt = Sgd::new(
        vec![ParamGroup::new(vec![x.clone()])],
        SgdConfig {
            lr,
            ..Default::default()
        },
    )
    .unwrap();
    let k = 6;
    for _ in 0..k {
        let loss = ops::scale(&ops::sum_all(&ops::mul(&x, &x).unwrap()).unwrap(), 0.5).unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads).unwrap();
    }
    let factor = (1.0f64 - lr).powi(k);
    let want: Vec<f64> = x0.iter().map(|v| v * factor).collect();
    assert_close("x·(1−lr)^k", &x.to_vec().unwrap(), &want, F32_POINTWISE);
}

#[test]
fn optimizers_converge_on_a_quadratic() {
    // f(x) = ½‖x − c‖²: AdamW (no weight decay) and Nesterov SGD both reach c.
    let gpu = gpu();
    let mut rng = Rng::new(700);
    let c_data = rng.vec_uniform(50, -2.0, 2.0);
    let c = Tensor::from_slice(&gpu, &c_data, &[50]).unwrap();
    let x_a = Tensor::parameter(&gpu, &[0.0; 50], &[50]).unwrap();
    let x_s = Tensor::parameter(&gpu, &[0.0; 50], &[50]).unwrap();
    let mut adamw = AdamW::new(
        vec![ParamGroup::new(vec![x_a.clone()])],
        AdamWConfig {
            lr: 0.05,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let sgd_config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        ..Default::default()
    };
    let mut sgd = Sgd::new(vec![ParamGroup::new(vec![x_s.clone()])], sgd_config).unwrap();
    let loss_of = |x: &Tensor| {
        let d = ops::sub(x, &c).unwrap();
        ops::scale(&ops::sum_all(&ops::mul(&d, &d).unwrap()).unwrap(), 0.5).unwrap()
    };
    let initial = loss_of(&x_a).to_scalar().unwrap();
    for _ in 0..300 {
        adamw.step(&loss_of(&x_a).backward().unwrap()).unwrap();
        sgd.step(&loss_of(&x_s).backward().unwrap()).unwrap();
    }
    let want = to64(&c_data);
    let tol = Tolerance {
        abs: 2e-3,
        rel: 0.0,
    };
    assert_close("AdamW minimiser", &x_a.to_vec().unwrap(), &want, tol);
    assert_close("Nesterov SGD minimiser", &x_s.to_vec().unwrap(), &want, tol);
    assert!(loss_of(&x_a).to_scalar().unwrap() < initial * 1e-5);
}

fn is_invalid<T>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::InvalidArgument { .. }))
}

#[test]
fn bad_input_gives_typed_errors() {
    let gpu = gpu();
    let p = Tensor::parameter(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let group = || vec![ParamGroup::new(vec![p.clone()])];
    // Hyper-parameters.
    assert!(is_invalid(Sgd::new(
        group(),
        SgdConfig {
            lr: -0.1,
            ..Default::default()
        }
    )));
    assert!(is_invalid(Sgd::new(
        group(),
        SgdConfig {
            nesterov: true,
            ..Default::default()
        }
    )));
    assert!(is_invalid(Sgd::new(
        group(),
        SgdConfig {
            momentum: 0.9,
            dampening: 0.1,
            nesterov: true,
            ..Default::default()
        }
    )));
    assert!(is_invalid(AdamW::new(
        group(),
        AdamWConfig {
            betas: (1.0, 0.999),
            ..Default::default()
        }
    )));
    assert!(is_invalid(AdamW::new(
        group(),
        AdamWConfig {
            eps: -1.0,
            ..Default::default()
        }
    )));
    assert!(is_invalid(AdamW::new(
        group(),
        AdamWConfig {
            weight_decay: f64::NAN,
            ..Default::default()
        }
    )));
    assert!(is_invalid(AdamW::new(
        vec![ParamGroup::new(vec![p.clone()]).with_lr(-1.0)],
        AdamWConfig::default()
    )));
    assert!(is_invalid(AdamW::new(vec![], AdamWConfig::default())));
    // The same tensor in two groups.
    assert!(is_invalid(AdamW::new(
        vec![
            ParamGroup::new(vec![p.clone()]),
            ParamGroup::new(vec![p.clone()])
        ],
        AdamWConfig::default()
    )));
    let mut opt = AdamW::new(group(), AdamWConfig::default()).unwrap();
    assert!(is_invalid(opt.set_lr(0, -1e-3)));
    assert!(is_invalid(opt.set_lr(1, 1e-3)));
    assert!(is_invalid(opt.set_weight_decay(0, f64::INFINITY)));
    // A gradient of the wrong shape fails before anything is written.
    let mut grads = Gradients::default();
    grads
        .accumulate(p.id(), Tensor::zeros(&gpu, &[4]).unwrap())
        .unwrap();
    assert!(matches!(opt.step(&grads), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(
        clip_grad_norm(std::slice::from_ref(&p), &mut grads, 1.0),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(
        opt.state(0, 0).unwrap().is_none(),
        "a failed step leaves no state"
    );
    assert_eq!(p.to_vec().unwrap(), vec![1.0, 2.0, 3.0]);
    // A gradient aliasing its parameter's buffer.
    let mut aliased = Gradients::default();
    aliased.accumulate(p.id(), p.detach()).unwrap();
    assert!(is_invalid(opt.step(&aliased)));
    // Clipping arguments.
    let mut ok = Gradients::default();
    ok.accumulate(p.id(), Tensor::zeros(&gpu, &[3]).unwrap())
        .unwrap();
    assert!(is_invalid(clip_grad_norm(
        std::slice::from_ref(&p),
        &mut ok,
        -1.0
    )));
    assert!(is_invalid(clip_grad_norm_per_tensor(
        &[p.clone(), p.clone()],
        &mut ok,
        1.0
    )));
    assert_eq!(
        clip_grad_norm(std::slice::from_ref(&p), &mut ok, 1.0).unwrap(),
        0.0
    );
    // Schedules.
    assert!(is_invalid(WarmupCosine::new(1.0, 0.0, 10, 11, 0.0)));
    assert!(is_invalid(WarmupCosine::new(1.0, 0.0, 0, 0, 0.0)));
    assert!(is_invalid(PolyDecay::new(1.0, 0, 0.9)));
    assert!(is_invalid(PolyDecay::new(1.0, 10, -1.0)));
    assert!(is_invalid(LinearRamp::new(f64::NAN, 0.07, 50)));
}

#[test]
fn restored_state_resumes_the_same_trajectory() {
    // Run 2 steps, copy parameters and optimizer state into fresh optimizers (a checkpoint
    // resume), then take the same 2 further steps on both: the results must be identical.
    let gpu = gpu();
    let mut rng = Rng::new(800);
    let (_, pa) = param(&gpu, &mut rng, &[5, 3]);
    let (_, ps) = param(&gpu, &mut rng, &[11]);
    let mut adamw = AdamW::new(
        vec![ParamGroup::new(vec![pa.clone()])],
        AdamWConfig::default(),
    )
    .unwrap();
    let mut sgd = Sgd::new(
        vec![ParamGroup::new(vec![ps.clone()])],
        SgdConfig::nnunet(0.05),
    )
    .unwrap();
    let all = [pa.clone(), ps.clone()];
    let grads: Vec<Gradients> = (0..4)
        .map(|_| random_grads(&gpu, &mut rng, &all, &[true, true], 1.0).0)
        .collect();
    for g in &grads[..2] {
        adamw.step(g).unwrap();
        sgd.step(g).unwrap();
    }
    let copy = |p: &Tensor| Tensor::parameter(&gpu, &p.to_vec().unwrap(), p.shape()).unwrap();
    let (qa, qs) = (copy(&pa), copy(&ps));
    let mut adamw2 = AdamW::new(
        vec![ParamGroup::new(vec![qa.clone()])],
        AdamWConfig::default(),
    )
    .unwrap();
    let mut sgd2 = Sgd::new(
        vec![ParamGroup::new(vec![qs.clone()])],
        SgdConfig::nnunet(0.05),
    )
    .unwrap();
    adamw2
        .set_state(0, 0, adamw.state(0, 0).unwrap().unwrap())
        .unwrap();
    sgd2.set_momentum_buffer(0, 0, sgd.momentum_buffer(0, 0).unwrap().unwrap())
        .unwrap();
    assert!(is_invalid(sgd2.set_momentum_buffer(0, 1, &qs)));
    for g in &grads[2..] {
        adamw.step(g).unwrap();
        sgd.step(g).unwrap();
        let mut g2 = Gradients::default();
        g2.accumulate(qa.id(), g.get(&pa).unwrap().clone()).unwrap();
        g2.accumulate(qs.id(), g.get(&ps).unwrap().clone()).unwrap();
        adamw2.step(&g2).unwrap();
        sgd2.step(&g2).unwrap();
    }
    assert_eq!(adamw2.state(0, 0).unwrap().unwrap().step, 4);
    assert_eq!(qa.to_vec().unwrap(), pa.to_vec().unwrap(), "AdamW resumed");
    assert_eq!(qs.to_vec().unwrap(), ps.to_vec().unwrap(), "SGD resumed");
}
