//! Optimizers and gradient clipping against the f64 reference of src/reference/optim.rs: GPU
//! steps over several steps (odd sizes, per-group settings, skipped parameters, a scheduled lr and
//! weight decay, a launch past 65,535 workgroups); per-tensor (also on the GPU, holding the
//! gradients once) and global clipping. Checks that do not use the reference (closed forms,
//! convergence, resuming, typed errors) are in tests/optim_properties.rs.

mod common;
#[path = "common/optim_params.rs"]
mod optim_params;

use cads::optim::{
    clip_grad_norm, clip_grad_norm_per_tensor, clip_norms_per_tensor_on_gpu, grad_norms, AdamW,
    AdamWConfig, Optimizer, ParamGroup, Sgd, SgdConfig, WarmupCosine,
};
use cads::reference::optim as refopt;
use cads::util::{Rng, Tolerance, F32_ACCUM};
use cads::{Gpu, Gradients, Tensor};
use common::*;
use optim_params::{param, random_grads, to64};

/// Several f32 steps whose rounding compounds: relative 1e-4 of the value plus 1e-5 absolute.
const STEPS_TOL: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-4,
};

/// Two groups: group 0 with the config's lr / weight decay, group 1 with its own. Sizes that
/// 4 divides (24, 8, 4100) run the four-per-invocation entries, the others the scalar ones.
const SHAPES_0: &[&[usize]] = &[&[1], &[7], &[3, 5, 7], &[4, 6]];
const SHAPES_1: &[&[usize]] = &[&[13], &[2, 1, 9], &[8], &[4100]];

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
        assert_eq!(groups[0].params.len(), 3);
        assert_eq!(groups[1].params.len(), 5);
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
/// around the 4096-element chunk of the scalar norm reduction and the 16384-element chunk of the
/// vec4 one (sizes 4 divides: a lane tail in the chunk, two chunks the second partial).
fn clip_case(gpu: &Gpu, seed: u64) -> (Vec<Tensor>, Gradients, Vec<Vec<f64>>) {
    let mut rng = Rng::new(seed);
    let shapes: &[&[usize]] = &[
        &[1],
        &[7],
        &[13, 17],
        &[4096],
        &[4097],
        &[3, 3001],
        &[0],
        &[4, 1001],
        &[20000],
    ];
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

/// Two parameter sets with the same values (clip_case's shapes) and their own gradients of the
/// same values, for comparing two ways of stepping.
fn twin_sets(gpu: &Gpu, seed: u64) -> [(Vec<Tensor>, Gradients); 2] {
    let (params, grads, _) = clip_case(gpu, seed);
    let copy = |p: &Tensor| Tensor::parameter(gpu, &p.to_vec().unwrap(), p.shape()).unwrap();
    let twin: Vec<Tensor> = params.iter().map(copy).collect();
    let mut twin_grads = Gradients::default();
    for (p, q) in params.iter().zip(&twin) {
        let g = grads.get(p).unwrap();
        let g = Tensor::from_slice(gpu, &g.to_vec().unwrap(), g.shape()).unwrap();
        twin_grads.accumulate(q.id(), g).unwrap();
    }
    [(params, grads), (twin, twin_grads)]
}

fn all_bits(ts: &[Tensor]) -> Vec<Vec<u32>> {
    ts.iter()
        .map(|t| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// `step_clipped` (AdamW: the clip coefficient applied inside the update kernel; SGD: the
/// trait's default, clipped copies) gives bit for bit the parameters of
/// `clip_grad_norm_per_tensor_on_gpu` followed by `step`, over two steps (fresh, then stored
/// moments and momentum, which the second step's parameters depend on), with gradients on both
/// sides of max_norm, odd sizes and an empty one. A gradient the clip did not measure is an
/// error before anything changes.
#[test]
fn clipping_inside_the_step_is_bit_for_bit_the_clipped_copies_step() {
    let gpu = gpu();
    for adamw in [true, false] {
        let [(pa, mut ga), (pb, gb)] = twin_sets(&gpu, 403);
        let make = |ps: &[Tensor]| -> Box<dyn Optimizer> {
            let groups = vec![ParamGroup::new(ps.to_vec())];
            if adamw {
                let config = AdamWConfig {
                    lr: 0.01,
                    weight_decay: 0.04,
                    ..Default::default()
                };
                Box::new(AdamW::new(groups, config).unwrap())
            } else {
                let config = SgdConfig {
                    lr: 0.05,
                    momentum: 0.9,
                    ..Default::default()
                };
                Box::new(Sgd::new(groups, config).unwrap())
            }
        };
        let (mut oa, mut ob) = (make(&pa), make(&pb));
        let what = if adamw { "AdamW" } else { "SGD" };
        let mut step = |ga: &mut Gradients, gb: &Gradients| {
            cads::optim::clip_grad_norm_per_tensor_on_gpu(&pa, ga, 0.3).unwrap();
            oa.step(ga).unwrap();
            let clip = clip_norms_per_tensor_on_gpu(&pb, gb, 0.3).unwrap().unwrap();
            ob.step_clipped(gb, None, &clip).unwrap();
            assert_eq!(all_bits(&pa), all_bits(&pb), "{what}: parameters");
        };
        step(&mut ga, &gb);
        // A second step (stored moments) on new gradients of equal values for both sets.
        let (fresh, fresh_grads, _) = clip_case(&gpu, 405);
        let mut ga = Gradients::default();
        let mut gb = Gradients::default();
        for ((f, a), b) in fresh.iter().zip(&pa).zip(&pb) {
            let g = fresh_grads.get(f).unwrap();
            let v = g.to_vec().unwrap();
            for (set, p) in [(&mut ga, a), (&mut gb, b)] {
                let t = Tensor::from_slice(&gpu, &v, g.shape()).unwrap();
                set.accumulate(p.id(), t).unwrap();
            }
        }
        step(&mut ga, &gb);

        // A gradient added after the norms were measured: refused, nothing stepped.
        let clip = clip_norms_per_tensor_on_gpu(&pb[..3], &gb, 0.3)
            .unwrap()
            .unwrap();
        let before = all_bits(&pb);
        let err = ob.step_clipped(&gb, None, &clip).unwrap_err().to_string();
        assert!(err.contains("clip measured"), "{what}: {err}");
        assert_eq!(all_bits(&pb), before, "{what}: nothing stepped");
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
