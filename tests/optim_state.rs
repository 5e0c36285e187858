//! Optimizer state by parameter name: export from a running AdamW / SGD, import into one built
//! anew over fresh parameters listed in another order with other default hyper-parameters, and
//! the next steps are bit-identical. Imports that do not fit (other kind, other fixed
//! hyper-parameters, other groups, names or shapes) are typed errors that change nothing.

mod common;

use cads::optim::{AdamW, AdamWConfig, Optimizer, OptimizerState, ParamGroup, Sgd, SgdConfig};
use cads::util::Rng;
use cads::{Error, Gpu, Gradients, Tensor};
use common::*;

const SHAPES: &[(&str, &[usize])] = &[
    ("fc1.weight", &[5, 7]),
    ("fc1.bias", &[7]),
    ("fc2.weight", &[7, 3]),
    ("fc2.bias", &[3]),
    ("norm.weight", &[1]),
];

fn named_params(gpu: &Gpu, rng: &mut Rng) -> Vec<(String, Tensor)> {
    SHAPES
        .iter()
        .map(|(n, s)| {
            let data = rng.vec_uniform(s.iter().product(), -1.0, 1.0);
            (n.to_string(), Tensor::parameter(gpu, &data, s).unwrap())
        })
        .collect()
}

/// Fresh parameter tensors with the same names and values.
fn clone_params(gpu: &Gpu, params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    params
        .iter()
        .map(|(n, p)| {
            let t = Tensor::parameter(gpu, &p.to_vec().unwrap(), p.shape()).unwrap();
            (n.clone(), t)
        })
        .collect()
}

/// Host gradients per step, by name; `None` where a parameter gets no gradient that step.
type HostGrads = Vec<Vec<Option<Vec<f32>>>>;

fn host_grads(rng: &mut Rng, steps: usize) -> HostGrads {
    (0..steps)
        .map(|step| {
            SHAPES
                .iter()
                .enumerate()
                .map(|(i, (_, s))| {
                    // fc2.bias never steps before the export (no state); norm.weight skips step 1.
                    let skip = (i == 3 && step < 2) || (i == 4 && step == 1);
                    let g = rng.vec_uniform(s.iter().product(), -1.0, 1.0);
                    (!skip).then_some(g)
                })
                .collect()
        })
        .collect()
}

fn grads_for(gpu: &Gpu, params: &[(String, Tensor)], host: &[Option<Vec<f32>>]) -> Gradients {
    let mut g = Gradients::default();
    for ((_, p), h) in params.iter().zip(host) {
        if let Some(h) = h {
            g.accumulate(p.id(), Tensor::from_slice(gpu, h, p.shape()).unwrap())
                .unwrap();
        }
    }
    g
}

fn bits(params: &[(String, Tensor)]) -> Vec<Vec<u32>> {
    params
        .iter()
        .map(|(_, p)| p.to_vec().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

fn state_bits(s: &OptimizerState) -> Vec<(String, Option<u64>, Vec<Vec<u32>>)> {
    let mut v: Vec<_> = s
        .params
        .iter()
        .map(|p| {
            let slots = p
                .slots
                .iter()
                .map(|(_, t)| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect())
                .collect();
            (p.name.clone(), p.step, slots)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Same parameters, reversed within each group: the import must pair by name, not position.
fn reversed_groups(params: &[(String, Tensor)]) -> Vec<ParamGroup> {
    let mut groups = ParamGroup::split_decay_named(params);
    for g in &mut groups {
        g.params.reverse();
        g.names.as_mut().unwrap().reverse();
    }
    groups
}

/// Run `before` steps, export, build a second optimizer with `make` over cloned parameters,
/// import, then run `after` more steps on both: parameters and state stay bit-identical.
fn resume_is_bitwise<O: Optimizer>(
    make: impl Fn(Vec<ParamGroup>, bool) -> O,
    schedule: impl Fn(&mut O, usize),
) {
    let gpu = gpu();
    let mut rng = Rng::new(4242);
    let params = named_params(&gpu, &mut rng);
    let host = host_grads(&mut rng, 5);
    let mut a = make(ParamGroup::split_decay_named(&params), false);
    for (step, h) in host[..2].iter().enumerate() {
        schedule(&mut a, step);
        a.step(&grads_for(&gpu, &params, h)).unwrap();
    }
    let exported = a.export_state().unwrap();
    // The export is a snapshot: later steps of `a` do not reach it.
    let exported_bits = state_bits(&exported);
    assert!(!exported.params.iter().any(|p| p.name == "fc2.bias"));

    let params2 = clone_params(&gpu, &params);
    // Other defaults for lr / wd: the import restores the groups' current values.
    let mut b = make(reversed_groups(&params2), true);
    b.import_state(&exported).unwrap();
    for g in 0..a.num_groups() {
        assert_eq!(a.lr(g).unwrap(), b.lr(g).unwrap());
        assert_eq!(a.weight_decay(g).unwrap(), b.weight_decay(g).unwrap());
    }
    for (step, h) in host[2..].iter().enumerate() {
        schedule(&mut a, step + 2);
        schedule(&mut b, step + 2);
        a.step(&grads_for(&gpu, &params, h)).unwrap();
        b.step(&grads_for(&gpu, &params2, h)).unwrap();
        assert_eq!(
            bits(&params),
            bits(&params2),
            "parameters after step {}",
            step + 2
        );
    }
    assert_eq!(
        state_bits(&a.export_state().unwrap()),
        state_bits(&b.export_state().unwrap())
    );
    assert_eq!(exported_bits, state_bits(&exported), "export changed later");
}

fn adamw_config(other: bool) -> AdamWConfig {
    AdamWConfig {
        lr: if other { 0.5 } else { 1e-2 },
        weight_decay: if other { 0.0 } else { 0.04 },
        ..Default::default()
    }
}

#[test]
fn adamw_state_by_name_resumes_bitwise() {
    resume_is_bitwise(
        |groups, other| AdamW::new(groups, adamw_config(other)).unwrap(),
        |opt, step| {
            // A schedule moving lr (all groups) and wd (group 0), as DINO does.
            opt.set_lr_all(1e-2 / (1 + step) as f64).unwrap();
            if step < 2 {
                opt.set_weight_decay(0, 0.04 + 0.1 * step as f64).unwrap();
            }
        },
    );
}

#[test]
fn sgd_momentum_state_by_name_resumes_bitwise() {
    resume_is_bitwise(
        |groups, other| {
            let lr = if other { 1.0 } else { 0.05 };
            Sgd::new(groups, SgdConfig::nnunet(lr)).unwrap()
        },
        |opt, step| opt.set_lr_all(0.05 * (1.0 - step as f64 / 10.0)).unwrap(),
    );
}

#[test]
fn imports_that_do_not_fit_are_typed_errors_and_change_nothing() {
    let gpu = gpu();
    let mut rng = Rng::new(99);
    let params = named_params(&gpu, &mut rng);
    let host = host_grads(&mut rng, 3);
    let mut a = AdamW::new(ParamGroup::split_decay_named(&params), adamw_config(false)).unwrap();
    for h in &host {
        a.step(&grads_for(&gpu, &params, h)).unwrap();
    }
    let good = a.export_state().unwrap();
    let before = state_bits(&good);
    let lr_before = (a.lr(0).unwrap(), a.weight_decay(0).unwrap());

    let mut attempts: Vec<(&str, OptimizerState)> = Vec::new();
    let mut s = good.clone();
    s.kind = "SGD".into();
    attempts.push(("kind", s));
    let mut s = good.clone();
    s.config[0].1 = 0.8;
    attempts.push(("beta1", s));
    let mut s = good.clone();
    s.groups.pop();
    attempts.push(("group count", s));
    let mut s = good.clone();
    let moved = s.groups[0].names.pop().unwrap();
    s.groups[1].names.push(moved);
    attempts.push(("a name in another group", s));
    let mut s = good.clone();
    s.groups[0].names[0] = "fc9.weight".into();
    attempts.push(("renamed", s));
    let mut s = good.clone();
    s.params[0].slots[1].1 = Tensor::zeros(&gpu, &[2, 2]).unwrap();
    attempts.push(("slot shape", s));
    let mut s = good.clone();
    s.params[0].step = Some(0);
    attempts.push(("step 0", s));
    let mut s = good.clone();
    s.params[0].slots.pop();
    attempts.push(("slots", s));
    let mut s = good.clone();
    s.groups[1].lr = -1.0;
    s.groups[0].lr = 123.0;
    attempts.push(("negative lr", s));
    // The last group's problem comes after valid parameters: nothing may be applied before it.
    let mut s = good.clone();
    s.params.last_mut().unwrap().name = "head.weight".into();
    s.groups[0].lr = 7.0;
    attempts.push(("unknown parameter state", s));

    for (what, s) in &attempts {
        let err = a.import_state(s).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument { .. } | Error::NameMismatch { .. }
            ),
            "{what}: {err}"
        );
        assert_eq!(state_bits(&a.export_state().unwrap()), before, "{what}");
        assert_eq!(
            (a.lr(0).unwrap(), a.weight_decay(0).unwrap()),
            lr_before,
            "{what}"
        );
    }
    let err = a.import_state(&attempts[4].1).unwrap_err();
    assert!(err.to_string().contains("fc9.weight"), "{err}");

    // AdamW state into SGD: the kind is named.
    let mut sgd = Sgd::new(
        ParamGroup::split_decay_named(&params),
        SgdConfig::nnunet(0.1),
    )
    .unwrap();
    let err = sgd.import_state(&good).unwrap_err();
    assert!(err.to_string().contains("AdamW"), "{err}");
    // A prepared import only commits into an optimizer of its own kind and structure.
    let prepared = a.prepare_import(&good).unwrap();
    assert!(sgd.commit_import(prepared).is_err());
    assert!(sgd.export_state().unwrap().params.is_empty());
}

#[test]
fn names_are_checked_at_construction_and_unnamed_groups_get_positions() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    let params = named_params(&gpu, &mut rng);
    let mut group = ParamGroup::named(params.clone());
    group.names.as_mut().unwrap().pop();
    assert!(AdamW::new(vec![group], AdamWConfig::default()).is_err());
    let mut dup = params.clone();
    dup[1].0 = dup[0].0.clone();
    assert!(AdamW::new(vec![ParamGroup::named(dup)], AdamWConfig::default()).is_err());

    let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.clone()).collect();
    let opt = Sgd::new(ParamGroup::split_decay(&tensors), SgdConfig::default()).unwrap();
    let s = opt.export_state().unwrap();
    assert_eq!(s.groups[1].names[0], "param_groups.1.0");
    assert!(s.params.is_empty(), "no state before the first step");
}
