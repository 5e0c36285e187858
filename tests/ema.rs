//! EMA and copy between tensors and modules: the fused in-place kernel against the f64
//! reference of src/reference/ema.rs (odd sizes, a launch past 65,535 workgroups, several steps),
//! the m = 1 and m = 0 identities bit for bit, name matching between modules, and typed errors
//! that leave every target untouched.

mod common;

use cads::nn::ema::{copy_named, ema_update_named};
use cads::nn::{copy_state, ema_update, Linear, LinearInit, Module, StateEntry};
use cads::ops::ema::{copy_, ema_update_};
use cads::reference::ema as refema;
use cads::util::{Rng, F32_POINTWISE};
use cads::{Error, Gpu, Tensor};
use common::*;

/// Above 65,535 workgroups of 64: the launch folds into a 2-D grid.
const BIG: usize = 65_535 * 64 + 77;
const SHAPES: &[&[usize]] = &[&[1], &[7], &[3, 5, 7], &[2, 1, 13, 3], &[BIG]];

fn tensor(gpu: &Gpu, rng: &mut Rng, shape: &[usize]) -> (Vec<f64>, Tensor) {
    let data = rng.vec_uniform(shape.iter().product(), -2.0, 2.0);
    let t = Tensor::parameter(gpu, &data, shape).unwrap();
    (data.iter().map(|&v| v as f64).collect(), t)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn ema_matches_reference_over_steps() {
    let gpu = gpu();
    let mut rng = Rng::new(2024);
    let (mut want, targets): (Vec<Vec<f64>>, Vec<Tensor>) =
        SHAPES.iter().map(|s| tensor(&gpu, &mut rng, s)).unzip();
    for (step, m) in [0.996, 0.5, 0.9].into_iter().enumerate() {
        // A fresh student every step, as after each optimizer step.
        let (src, sources): (Vec<Vec<f64>>, Vec<Tensor>) =
            SHAPES.iter().map(|s| tensor(&gpu, &mut rng, s)).unzip();
        ema_update_(&targets, &sources, m).unwrap();
        for (i, t) in targets.iter().enumerate() {
            refema::ema_update(&mut want[i], &src[i], m);
            assert_close(
                &format!("ema step {step} tensor {i} {:?}", t.shape()),
                &t.to_vec().unwrap(),
                &want[i],
                F32_POINTWISE,
            );
        }
    }
}

/// A tensor whose size 4 divides runs the four-per-invocation entry, others the scalar one,
/// with the same bits: the first 4096 values of a [4099] pair (scalar) against a [4096] pair
/// of the same values (vec4).
#[test]
fn the_vec4_entry_gives_the_scalar_entrys_bits() {
    let gpu = gpu();
    let mut rng = Rng::new(2025);
    let (t, s) = (
        rng.vec_uniform(4099, -2.0, 2.0),
        rng.vec_uniform(4099, -2.0, 2.0),
    );
    let run = |n: usize| {
        let target = Tensor::parameter(&gpu, &t[..n], &[n]).unwrap();
        let source = Tensor::from_slice(&gpu, &s[..n], &[n]).unwrap();
        gpu.set_profiling(true);
        ema_update_(
            std::slice::from_ref(&target),
            std::slice::from_ref(&source),
            0.996,
        )
        .unwrap();
        let out = bits(&target);
        gpu.set_profiling(false);
        let ran: Vec<String> = gpu.take_profile().into_iter().map(|k| k.kernel).collect();
        (out, ran)
    };
    let (scalar, ran_scalar) = run(4099);
    let (vec4, ran_vec4) = run(4096);
    assert_eq!(ran_scalar, ["ema::ema_update"]);
    assert_eq!(ran_vec4, ["ema::ema_update_4"]);
    assert_eq!(vec4, scalar[..4096], "bit for bit");
}

#[test]
fn reference_ema_is_the_textbook_formula() {
    // m·t + (1 − m)·s on a hand-computed case.
    let mut t = vec![1.0, -2.0, 4.0];
    refema::ema_update(&mut t, &[3.0, 2.0, 0.0], 0.75);
    assert_eq!(t, vec![1.5, -1.0, 3.0]);
}

#[test]
fn momentum_one_keeps_and_zero_copies_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    for shape in SHAPES {
        let (_, t) = tensor(&gpu, &mut rng, shape);
        let (_, s) = tensor(&gpu, &mut rng, shape);
        let before = bits(&t);
        ema_update_(std::slice::from_ref(&t), std::slice::from_ref(&s), 1.0).unwrap();
        assert!(bits(&t) == before, "m = 1 changed {shape:?}");
        ema_update_(std::slice::from_ref(&t), std::slice::from_ref(&s), 0.0).unwrap();
        assert!(bits(&t) == bits(&s), "m = 0 is not a copy for {shape:?}");
        let (_, u) = tensor(&gpu, &mut rng, shape);
        copy_(std::slice::from_ref(&u), std::slice::from_ref(&t)).unwrap();
        assert!(bits(&u) == bits(&t), "copy_ differs for {shape:?}");
    }
}

/// Two linears under `fc1.` and `fc2.`, the smallest module with dotted names.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(gpu: &Gpu, hidden: usize, bias2: bool, seed: u64) -> Mlp {
        let mut rng = Rng::new(seed);
        Mlp {
            fc1: Linear::new(gpu, 5, hidden, true, LinearInit::Torch, &mut rng).unwrap(),
            fc2: Linear::new(gpu, hidden, 3, bias2, LinearInit::Torch, &mut rng).unwrap(),
        }
    }
}

impl Module for Mlp {
    fn state(&self, prefix: &str, out: &mut Vec<StateEntry>) {
        self.fc1.state(&format!("{prefix}fc1."), out);
        self.fc2.state(&format!("{prefix}fc2."), out);
    }
}

fn named_state(m: &Mlp) -> Vec<(String, Tensor)> {
    m.named_parameters()
}

fn all_bits(m: &Mlp) -> Vec<Vec<u32>> {
    named_state(m).iter().map(|(_, t)| bits(t)).collect()
}

#[test]
fn modules_copy_then_follow_by_ema_matched_by_name() {
    let gpu = gpu();
    let student = Mlp::new(&gpu, 9, true, 1);
    let teacher = Mlp::new(&gpu, 9, true, 2);
    copy_state(&teacher, &student).unwrap();
    assert_eq!(all_bits(&teacher), all_bits(&student));

    // Move the student, then EMA: every teacher tensor follows its namesake.
    let mut rng = Rng::new(3);
    let mut want = Vec::new();
    for (_, p) in named_state(&student) {
        let old: Vec<f64> = p.to_vec().unwrap().iter().map(|&v| v as f64).collect();
        let new = rng.vec_uniform(p.numel(), -1.0, 1.0);
        p.write(&new).unwrap();
        let mut w = old;
        let new64: Vec<f64> = new.iter().map(|&v| v as f64).collect();
        refema::ema_update(&mut w, &new64, 0.996);
        want.push(w);
    }
    ema_update(&teacher, &student, 0.996).unwrap();
    for ((name, t), w) in named_state(&teacher).iter().zip(&want) {
        assert_close(name, &t.to_vec().unwrap(), w, F32_POINTWISE);
    }

    // Lists given in different orders still pair by name.
    let mut reversed = named_state(&student);
    reversed.reverse();
    copy_named(&named_state(&teacher), &reversed).unwrap();
    assert_eq!(all_bits(&teacher), all_bits(&student));
}

#[test]
fn mismatched_modules_name_the_tensors_and_write_nothing() {
    let gpu = gpu();
    let teacher = Mlp::new(&gpu, 9, true, 1);
    let before = all_bits(&teacher);

    // fc2.bias missing from the student.
    let no_bias = Mlp::new(&gpu, 9, false, 2);
    match ema_update(&teacher, &no_bias, 0.5) {
        Err(Error::NameMismatch {
            missing,
            unexpected,
            shapes,
            ..
        }) => {
            assert_eq!(missing, vec!["fc2.bias".to_string()]);
            assert!(unexpected.is_empty() && shapes.is_empty());
        }
        other => panic!("expected NameMismatch, got {other:?}"),
    }
    // Hidden width 8 instead of 9: three shapes differ, named with both shapes.
    let narrow = Mlp::new(&gpu, 8, true, 3);
    let err = copy_state(&teacher, &narrow).unwrap_err();
    match &err {
        Error::NameMismatch { shapes, .. } => {
            let names: Vec<&str> = shapes.iter().map(|(n, _, _)| n.as_str()).collect();
            assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight"]);
        }
        other => panic!("expected NameMismatch, got {other:?}"),
    }
    assert!(err
        .to_string()
        .contains("fc1.weight: expected [5, 9], got [5, 8]"));
    // An extra name in the source.
    let src = Mlp::new(&gpu, 9, true, 4);
    let mut src_extra = named_state(&src);
    src_extra.push(("head.weight".into(), Tensor::zeros(&gpu, &[2]).unwrap()));
    match ema_update_named(&named_state(&teacher), &src_extra, 0.5) {
        Err(Error::NameMismatch { unexpected, .. }) => {
            assert_eq!(unexpected, vec!["head.weight".to_string()])
        }
        other => panic!("expected NameMismatch, got {other:?}"),
    }
    // A name listed twice.
    let mut dup = named_state(&src);
    dup.push(dup[0].clone());
    assert!(matches!(
        copy_named(&named_state(&teacher), &dup),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(
        all_bits(&teacher),
        before,
        "a failed update wrote something"
    );
}

#[test]
fn position_pairs_are_checked_before_any_launch() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    let (_, a) = tensor(&gpu, &mut rng, &[4]);
    let (_, b) = tensor(&gpu, &mut rng, &[4]);
    let (_, c) = tensor(&gpu, &mut rng, &[5]);
    let before = bits(&a);
    // The first pair is fine, the second has a shape mismatch: the first must stay unwritten.
    let err = ema_update_(&[a.clone(), b.clone()], &[b.clone(), c.clone()], 0.5).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    assert_eq!(bits(&a), before);
    // Count, momentum range, aliasing and a target listed twice.
    assert!(ema_update_(std::slice::from_ref(&a), &[], 0.5).is_err());
    for m in [-0.1, 1.5, f64::NAN] {
        assert!(
            ema_update_(std::slice::from_ref(&a), std::slice::from_ref(&b), m).is_err(),
            "m {m}"
        );
    }
    assert!(ema_update_(std::slice::from_ref(&a), std::slice::from_ref(&a), 0.5).is_err());
    let (_, d) = tensor(&gpu, &mut rng, &[4]);
    assert!(copy_(&[a.clone(), a.clone()], &[b.clone(), d]).is_err());
    assert_eq!(bits(&a), before);
}
