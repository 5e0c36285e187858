//! Hostile input that needs an adapter (issue 15): NaN through training and clipping (item 9),
//! and sizes that wrap (item 1) on real tensors. Run on lavapipe in CI.

mod common;

use cads::optim::{
    clip_grad_norm, clip_grad_norm_per_tensor, AdamW, AdamWConfig, OnNonFinite, ParamGroup,
};
use cads::train::toy::{train_mlp, ToyConfig};
use cads::{ops, Error, Tensor};

#[test]
fn zeros_of_a_wrapping_shape_is_an_error_not_an_empty_tensor() {
    let gpu = common::gpu();
    // [2^32, 2^32] has 2^64 elements, which wrapped to 0 in release builds.
    assert!(Tensor::zeros(&gpu, &[1 << 32, 1 << 32]).is_err());
    assert!(Tensor::zeros(&gpu, &[usize::MAX, 2]).is_err());
    let t = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    assert!(t.reshape(&[1 << 32, 1 << 32, 0]).is_err() || t.numel() == 0);
    assert!(t.reshape(&[usize::MAX, usize::MAX]).is_err());
}

#[test]
fn adamw_refuses_eps_zero() {
    let gpu = common::gpu();
    let p = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    for eps in [0.0, -1e-8, f64::NAN] {
        let cfg = AdamWConfig {
            eps,
            ..AdamWConfig::default()
        };
        assert!(
            AdamW::new(vec![ParamGroup::new(vec![p.clone()])], cfg).is_err(),
            "eps {eps}"
        );
    }
}

#[test]
fn clipping_a_nan_gradient_is_an_error_and_leaves_the_gradients_unclipped() {
    let gpu = common::gpu();
    let p = Tensor::parameter(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let q = Tensor::parameter(&gpu, &[1.0, 1.0], &[2]).unwrap();
    // loss = Σ p·x + Σ q with one NaN in x: p's gradient holds a NaN.
    let x = Tensor::from_slice(&gpu, &[1.0, f32::NAN, 1.0], &[3]).unwrap();
    let loss = || {
        ops::add(
            &ops::sum_all(&ops::mul(&p, &x).unwrap()).unwrap(),
            &ops::sum_all(&q).unwrap(),
        )
        .unwrap()
    };
    let params = vec![p.clone(), q.clone()];
    let mut grads = loss().backward().unwrap();
    match clip_grad_norm(&params, &mut grads, 1.0) {
        Err(Error::NonFinite { op, .. }) => assert_eq!(op, "clip_grad_norm"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    // q's gradient is the unclipped one (ones), not a NaN-scaled copy.
    assert_eq!(grads.get(&q).unwrap().to_vec().unwrap(), vec![1.0, 1.0]);
    let mut grads = loss().backward().unwrap();
    assert!(matches!(
        clip_grad_norm_per_tensor(&params, &mut grads, 1.0),
        Err(Error::NonFinite { .. })
    ));
    assert_eq!(grads.get(&q).unwrap().to_vec().unwrap(), vec![1.0, 1.0]);
}

#[test]
fn a_diverging_run_stops_or_skips_by_choice_and_never_steps_on_nan() {
    let gpu = common::gpu();
    // lr 1e30 makes the logits overflow within a few steps: the loss turns non-finite.
    let cfg = ToyConfig {
        steps: 12,
        points_per_class: 8,
        hidden: 8,
        lr: 1e30,
        ..ToyConfig::default()
    };
    match train_mlp(&gpu, &cfg, |_, _| {}) {
        Err(Error::NonFinite { op, what, .. }) => assert_eq!((op, what), ("train_mlp", "loss")),
        other => panic!("expected a NonFinite stop, got {other:?}"),
    }
    let skip = ToyConfig {
        on_non_finite: OnNonFinite::Skip,
        ..cfg
    };
    let losses = train_mlp(&gpu, &skip, |_, _| {}).unwrap();
    assert!(
        losses.len() < 12 && losses.iter().all(|l| l.is_finite()),
        "{losses:?}"
    );
}
