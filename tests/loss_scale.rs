//! Dynamic loss scaling (src/optim/loss_scale.rs): the scale sequence against torch's GradScaler
//! (golden from torch, tests/data/loss_scale_golden.json, made by
//! scripts/make_loss_scale_golden.py) and against the CPU model of src/reference/loss_scale.rs;
//! the unscale pass bit for bit against both; a step with an injected inf or NaN leaves
//! parameters, moments, momentum buffers and step counts bit-unchanged (AdamW, SGD with and
//! without momentum, first steps included); protocol errors. Training with the scaler (scaled
//! against unscaled training, clipping, checkpoints) is in tests/loss_scale_training.rs.

mod common;
#[path = "common/loss_scale.rs"]
mod loss_scale_common;

use cads::optim::{
    AdamW, AdamWConfig, LossScaler, LossScalerConfig, LossScalerState, Optimizer, ParamGroup, Sgd,
    SgdConfig,
};
use cads::reference::loss_scale::{self as refls, GradScalerModel};
use cads::util::{Rng, Tolerance};
use cads::{ops, Error, Gpu, Gradients, Tensor};
use common::*;
use loss_scale_common::{bits, Opt};

fn golden() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/loss_scale_golden.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f64_of(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap()
}

fn u32_of(v: &serde_json::Value) -> u32 {
    v.as_u64().unwrap() as u32
}

fn config_of(seq: &serde_json::Value) -> LossScalerConfig {
    LossScalerConfig {
        init_scale: f64_of(&seq["init_scale"]),
        growth_factor: f64_of(&seq["growth_factor"]),
        backoff_factor: f64_of(&seq["backoff_factor"]),
        growth_interval: u32_of(&seq["growth_interval"]),
    }
}

#[test]
fn cpu_model_and_host_update_match_torch_scale_sequences() {
    let g = golden();
    for (si, seq) in g["sequences"].as_array().unwrap().iter().enumerate() {
        let c = config_of(seq);
        let mut model = GradScalerModel::new(
            c.init_scale,
            c.growth_factor,
            c.backoff_factor,
            c.growth_interval as i32,
        );
        let mut host = LossScalerState {
            scale: c.init_scale as f32,
            growth_tracker: 0,
            growth_factor: c.growth_factor,
            backoff_factor: c.backoff_factor,
            growth_interval: c.growth_interval,
        };
        for (k, step) in seq["steps"].as_array().unwrap().iter().enumerate() {
            let found_inf = step["found_inf"].as_bool().unwrap();
            model.update(found_inf);
            host = host.after_step(found_inf);
            let want = (u32_of(&step["scale_bits"]), u32_of(&step["growth_tracker"]));
            assert_eq!(
                (model.scale.to_bits(), model.growth_tracker as u32),
                want,
                "CPU model, sequence {si} step {k}"
            );
            assert_eq!(
                (host.scale.to_bits(), host.growth_tracker),
                want,
                "LossScalerState::after_step, sequence {si} step {k}"
            );
        }
    }
}

/// torch's run of each golden sequence on the GPU: backward of S·Σ p·w, unscale, AdamW step
/// skipped on overflow, update. The overflow flags, the scale and tracker after every step,
/// AdamW's step count and the parameter follow torch's.
#[test]
fn gpu_scaler_reproduces_torch_runs() {
    let gpu = gpu();
    let g = golden();
    let tol = Tolerance {
        abs: 1e-6,
        rel: 1e-5,
    };
    for (si, seq) in g["sequences"].as_array().unwrap().iter().enumerate() {
        let mut scaler = LossScaler::new(&gpu, config_of(seq)).unwrap();
        let p = Tensor::parameter(&gpu, &[0.5, -1.0, 2.0], &[3]).unwrap();
        let mut opt = AdamW::new(
            vec![ParamGroup::new(vec![p.clone()])],
            AdamWConfig {
                lr: 1e-3,
                ..Default::default()
            },
        )
        .unwrap();
        let w_factor = f64_of(&seq["w_factor"]) as f32;
        for (k, step) in seq["steps"].as_array().unwrap().iter().enumerate() {
            let mut w = [0.25 + k as f32, -0.5, 1.0].map(|v| v * w_factor);
            match step["injected"].as_str().unwrap() {
                "i" => w[1] = f32::INFINITY,
                "n" => w[2] = f32::NAN,
                _ => {}
            }
            let w = Tensor::from_slice(&gpu, &w, &[3]).unwrap();
            let loss = ops::sum_all(&ops::mul(&p, &w).unwrap()).unwrap();
            let mut grads = scaler.scale(&loss).unwrap().backward().unwrap();
            let check = scaler
                .unscale_and_check(std::slice::from_ref(&p), &mut grads)
                .unwrap();
            opt.step_unless_overflow(&grads, &check).unwrap();
            scaler.update().unwrap();
            let what = format!("sequence {si} step {k}");
            assert_eq!(
                check.found_inf().unwrap(),
                step["found_inf"].as_bool().unwrap(),
                "{what}: found_inf"
            );
            let s = scaler.state().unwrap();
            assert_eq!(
                (s.scale.to_bits(), s.growth_tracker),
                (u32_of(&step["scale_bits"]), u32_of(&step["growth_tracker"])),
                "{what}: scale, tracker"
            );
            let t = opt.state(0, 0).unwrap().map_or(0, |s| s.step);
            assert_eq!(
                t,
                step["adamw_step"].as_u64().unwrap(),
                "{what}: AdamW step"
            );
            let want: Vec<f64> = step["param"]
                .as_array()
                .unwrap()
                .iter()
                .map(f64_of)
                .collect();
            assert_close(&what, &p.to_vec().unwrap(), &want, tol);
        }
        let skipped = seq["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["found_inf"].as_bool().unwrap())
            .count() as u64;
        assert_eq!(scaler.skipped_steps().unwrap(), skipped, "sequence {si}");
    }
}

/// One gradient per parameter, unscaled on the GPU.
fn unscale_on_gpu(gpu: &Gpu, values: &[Vec<f32>], scale: f32) -> (Vec<Vec<u32>>, bool) {
    let mut scaler = LossScaler::new(
        gpu,
        LossScalerConfig {
            init_scale: scale as f64,
            ..Default::default()
        },
    )
    .unwrap();
    let params: Vec<Tensor> = values
        .iter()
        .map(|v| Tensor::parameter(gpu, &vec![0.0; v.len()], &[v.len()]).unwrap())
        .collect();
    let mut grads = Gradients::default();
    for (p, v) in params.iter().zip(values) {
        grads
            .accumulate(p.id(), Tensor::from_slice(gpu, v, &[v.len()]).unwrap())
            .unwrap();
    }
    let check = scaler.unscale_and_check(&params, &mut grads).unwrap();
    let out = params.iter().map(|p| bits(grads.get(p).unwrap())).collect();
    (out, check.found_inf().unwrap())
}

#[test]
fn unscale_matches_torch_bits_and_the_reference() {
    let gpu = gpu();
    let g = golden();
    for case in g["unscale"].as_array().unwrap() {
        let scale = f64_of(&case["scale"]) as f32;
        let input: Vec<f32> = case["in_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| f32::from_bits(u32_of(b)))
            .collect();
        let want: Vec<u32> = case["out_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(u32_of)
            .collect();
        let (got, found_inf) = unscale_on_gpu(&gpu, std::slice::from_ref(&input), scale);
        assert_eq!(got[0], want, "GPU unscale at scale {scale}");
        assert_eq!(found_inf, case["found_inf"].as_bool().unwrap());
        let mut host = input.clone();
        let host_inf = refls::unscale_and_check(&mut host, scale);
        let host: Vec<u32> = host.iter().map(|v| v.to_bits()).collect();
        assert_eq!(host, want, "reference unscale at scale {scale}");
        assert_eq!(host_inf, found_inf);
    }
    // Non-finite values, in one of several gradients (odd sizes, one past a workgroup), and a
    // product that overflows (scale < 1): flagged by the GPU and the reference alike.
    let mut rng = Rng::new(5);
    for (scale, bad, at) in [
        (65536.0, f32::INFINITY, 3),
        (1000.0, f32::NEG_INFINITY, 300),
        (3.0, f32::NAN, 0),
        (0.5, 3.0e38, 256),
        (65536.0, 1.0, 0),
    ] {
        let mut values = vec![
            rng.vec_uniform(7, -1e3, 1e3),
            rng.vec_uniform(301, -1e3, 1e3),
            rng.vec_uniform(1, -1e3, 1e3),
        ];
        let which = if at >= 7 { 1 } else { 0 };
        values[which][at] = bad;
        let (got, found_inf) = unscale_on_gpu(&gpu, &values, scale);
        let mut want_inf = false;
        for (v, g) in values.iter().zip(&got) {
            let mut host = v.clone();
            want_inf |= refls::unscale_and_check(&mut host, scale);
            // NaN payloads may differ; compare NaN as NaN.
            for (h, d) in host.iter().zip(g) {
                let d = f32::from_bits(*d);
                assert!(
                    h.to_bits() == d.to_bits() || (h.is_nan() && d.is_nan()),
                    "scale {scale}: {h} vs {d}"
                );
            }
        }
        assert_eq!(found_inf, want_inf, "scale {scale}, value {bad}");
        assert_eq!(found_inf, !(bad == 1.0), "scale {scale}, value {bad}");
    }
}

#[test]
fn a_gradient_shared_by_two_parameters_is_unscaled_once() {
    let gpu = gpu();
    let a = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let b = Tensor::parameter(&gpu, &[3.0, 4.0], &[2]).unwrap();
    let mut scaler = LossScaler::new(&gpu, LossScalerConfig::default()).unwrap();
    // d(S·Σ(a + b))/da = d/db = the same upstream gradient tensor.
    let loss = ops::sum_all(&ops::add(&a, &b).unwrap()).unwrap();
    let mut grads = scaler.scale(&loss).unwrap().backward().unwrap();
    let check = scaler
        .unscale_and_check(&[a.clone(), b.clone()], &mut grads)
        .unwrap();
    assert!(!check.found_inf().unwrap());
    for p in [&a, &b] {
        assert_eq!(grads.get(p).unwrap().to_vec().unwrap(), vec![1.0, 1.0]);
    }
}

/// Parameters for the skip tests: three in group 0, one (the last) getting its first gradient
/// only in the skipped step, so its first step is the skipped one.
fn skip_params(gpu: &Gpu, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    [&[5usize][..], &[3, 4], &[1], &[2, 3]]
        .iter()
        .map(|s| {
            let n = s.iter().product();
            Tensor::parameter(gpu, &rng.vec_uniform(n, -1.0, 1.0), s).unwrap()
        })
        .collect()
}

/// Gradients `factor · g` for the parameters selected by `present`, from `rng`.
fn grads_for(
    gpu: &Gpu,
    params: &[Tensor],
    present: &[bool],
    rng: &mut Rng,
    factor: f32,
) -> Gradients {
    let mut grads = Gradients::default();
    for (p, &on) in params.iter().zip(present) {
        let g = rng.vec_uniform(p.numel(), -1.0, 1.0);
        if on {
            let g: Vec<f32> = g.iter().map(|v| v * factor).collect();
            grads
                .accumulate(p.id(), Tensor::from_slice(gpu, &g, p.shape()).unwrap())
                .unwrap();
        }
    }
    grads
}

fn build(kind: Opt, params: &[Tensor]) -> Box<dyn Optimizer> {
    let groups = vec![
        ParamGroup::new(params[..3].to_vec()),
        ParamGroup::new(params[3..].to_vec()).with_lr(0.02),
    ];
    match kind {
        Opt::AdamW => Box::new(
            AdamW::new(
                groups,
                AdamWConfig {
                    lr: 1e-2,
                    weight_decay: 0.05,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
        Opt::SgdMomentum => Box::new(
            Sgd::new(
                groups,
                SgdConfig {
                    lr: 0.05,
                    momentum: 0.9,
                    dampening: 0.3,
                    weight_decay: 0.01,
                    nesterov: false,
                },
            )
            .unwrap(),
        ),
        Opt::SgdPlain => Box::new(
            Sgd::new(
                groups,
                SgdConfig {
                    lr: 0.05,
                    weight_decay: 0.01,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
    }
}

/// Every parameter and optimizer number as bits (slots by name, AdamW step counts).
fn snapshot(params: &[Tensor], opt: &dyn Optimizer) -> Vec<(String, Vec<u32>)> {
    let mut v: Vec<(String, Vec<u32>)> = params
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("param {i}"), bits(p)))
        .collect();
    for ps in opt.export_state().unwrap().params {
        for (slot, t) in &ps.slots {
            v.push((format!("{}.{slot} step {:?}", ps.name, ps.step), bits(t)));
        }
    }
    v
}

/// A run with one loss-scaled step that overflows (an inf, or a NaN, in one gradient) against a
/// twin that never saw that step: right after the skipped step everything is bit-unchanged
/// (the parameter whose first step it was has no state), and after more steps both runs are
/// bitwise equal.
#[test]
fn an_overflowing_step_changes_nothing() {
    let gpu = gpu();
    const S: f32 = 65536.0;
    for kind in [Opt::AdamW, Opt::SgdMomentum, Opt::SgdPlain] {
        for bad in [f32::INFINITY, f32::NAN] {
            let (pa, pb) = (skip_params(&gpu, 1), skip_params(&gpu, 1));
            let (mut a, mut b) = (build(kind, &pa), build(kind, &pb));
            let mut scaler = LossScaler::new(&gpu, LossScalerConfig::default()).unwrap();
            let (mut ra, mut rb) = (Rng::new(9), Rng::new(9));
            let early = [true, true, true, false];
            for step in 0..6 {
                let present = if step < 3 { early } else { [true; 4] };
                // Scaled run: gradients S·g (S halves after the skip), exact in f32, unscaled
                // back to g by the scaler.
                let s = scaler.current_scale().unwrap();
                let mut ga = grads_for(&gpu, &pa, &present, &mut ra, s);
                if step == 3 {
                    // The skipped step (the twin skips its gradients to stay in step).
                    let _ = grads_for(&gpu, &pb, &present, &mut rb, 1.0);
                    let victim = pa[1].clone();
                    let mut g = ga.remove(&victim).unwrap().to_vec().unwrap();
                    g[7] = bad;
                    ga.accumulate(
                        victim.id(),
                        Tensor::from_slice(&gpu, &g, victim.shape()).unwrap(),
                    )
                    .unwrap();
                    let before = snapshot(&pa, a.as_ref());
                    let check = scaler.unscale_and_check(&pa, &mut ga).unwrap();
                    a.step_unless_overflow(&ga, &check).unwrap();
                    scaler.update().unwrap();
                    assert!(check.found_inf().unwrap());
                    assert_eq!(
                        snapshot(&pa, a.as_ref()),
                        before,
                        "{kind:?} {bad}: the skipped step changed something"
                    );
                    if !matches!(kind, Opt::SgdPlain) {
                        let names: Vec<String> = a
                            .export_state()
                            .unwrap()
                            .params
                            .into_iter()
                            .map(|p| p.name)
                            .collect();
                        assert!(
                            !names.contains(&"param_groups.1.0".to_string()),
                            "{kind:?}: a skipped first step left state: {names:?}"
                        );
                    }
                    continue;
                }
                let check = scaler.unscale_and_check(&pa, &mut ga).unwrap();
                a.step_unless_overflow(&ga, &check).unwrap();
                scaler.update().unwrap();
                let gb = grads_for(&gpu, &pb, &present, &mut rb, 1.0);
                b.step(&gb).unwrap();
            }
            assert_eq!(
                snapshot(&pa, a.as_ref()),
                snapshot(&pb, b.as_ref()),
                "{kind:?} {bad}: the run with a skipped step differs from the run without it"
            );
            // One skip: the scale backed off once (interval 2000: no growth since).
            assert_eq!(scaler.current_scale().unwrap(), S / 2.0);
            assert_eq!(scaler.skipped_steps().unwrap(), 1);
        }
    }
}

fn is_invalid<T: std::fmt::Debug>(r: cads::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidArgument { .. }))
}

#[test]
fn protocol_and_config_errors_are_typed() {
    let gpu = gpu();
    for bad in [
        LossScalerConfig {
            init_scale: 0.0,
            ..Default::default()
        },
        LossScalerConfig {
            init_scale: 1e39,
            ..Default::default()
        },
        LossScalerConfig {
            growth_factor: 1.0,
            ..Default::default()
        },
        LossScalerConfig {
            backoff_factor: 1.0,
            ..Default::default()
        },
        LossScalerConfig {
            backoff_factor: f64::NAN,
            ..Default::default()
        },
        LossScalerConfig {
            growth_interval: 0,
            ..Default::default()
        },
    ] {
        assert!(is_invalid(LossScaler::new(&gpu, bad)), "{bad:?}");
    }
    let p = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let params = [p.clone()];
    let mut opt = Sgd::new(vec![ParamGroup::new(vec![p.clone()])], SgdConfig::default()).unwrap();
    let mut scaler = LossScaler::new(&gpu, LossScalerConfig::default()).unwrap();
    assert!(is_invalid(scaler.update()), "update before any check");
    let mut grads = Gradients::default();
    grads
        .accumulate(p.id(), Tensor::from_slice(&gpu, &[1.0, 1.0], &[2]).unwrap())
        .unwrap();
    scaler.unscale_and_check(&params, &mut grads).unwrap();
    assert!(
        is_invalid(scaler.unscale_and_check(&params, &mut grads)),
        "unscale twice"
    );
    let mid = scaler.state().unwrap();
    assert!(is_invalid(scaler.load_state(&mid)), "load mid-step");
    scaler.step(&mut opt, &mut grads).unwrap();
    assert!(is_invalid(scaler.step(&mut opt, &mut grads)), "step twice");
    assert!(
        is_invalid(scaler.unscale_and_check(&params, &mut grads)),
        "unscale after step"
    );
    scaler.update().unwrap();
    // A gradient of the wrong shape is refused before anything launches.
    let mut wrong = Gradients::default();
    wrong
        .accumulate(p.id(), Tensor::from_slice(&gpu, &[1.0], &[1]).unwrap())
        .unwrap();
    assert!(matches!(
        scaler.unscale_and_check(&params, &mut wrong),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut s = scaler.state().unwrap();
    s.growth_tracker = s.growth_interval;
    assert!(
        is_invalid(scaler.load_state(&s)),
        "tracker past the interval"
    );
    // The gradients were unscaled once by 2^16 (the refused calls changed nothing).
    assert_eq!(
        grads.get(&p).unwrap().to_vec().unwrap(),
        vec![1.0 / 65536.0; 2]
    );
}
