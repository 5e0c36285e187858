//! Optimizers and schedules checked without the f64 reference: closed-form SGD on ½‖x‖²,
//! convergence on a quadratic, a restored state resuming the same trajectory, and typed errors
//! for bad hyper-parameters, gradients and schedules. The steps and clipping against the
//! reference are in tests/optim.rs.

mod common;
#[path = "common/optim_params.rs"]
mod optim_params;

use cads::optim::{
    clip_grad_norm, clip_grad_norm_per_tensor, AdamW, AdamWConfig, LinearRamp, Optimizer,
    ParamGroup, PolyDecay, Sgd, SgdConfig, WarmupCosine,
};
use cads::util::{Rng, Tolerance, F32_POINTWISE};
use cads::{ops, Error, Gradients, Tensor};
use common::*;
use optim_params::{param, random_grads, to64};

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
